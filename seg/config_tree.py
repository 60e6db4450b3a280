"""The composed config as a tree: printed when a run starts, saved beside its outputs; and as
dotted leaves (``data.batch_size``), which debug reports, resume checks and the docs compare."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from seg.artifacts import atomic_path


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``dotted.key -> value`` for every leaf of a plain config container (an empty mapping is a
    leaf); interpolations stay as written unless the container was resolved."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in leaves(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def scalar(value: Any) -> str:
    """A value as YAML writes it: ``null``, ``true``, ``3e-3``..."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _label(key: Any, value: str | None = None) -> Text:
    """``key: value``, the key in bold; built as text, so brackets in values are never markup."""
    return Text.assemble((str(key), "bold"), *((": ", value) if value is not None else ()))


def _add(branch: Tree, node: DictConfig | ListConfig) -> None:
    items = node.items() if isinstance(node, DictConfig) else enumerate(node)
    for key, value in items:
        nested = isinstance(value, DictConfig) or (
            isinstance(value, ListConfig) and any(isinstance(v, (DictConfig, ListConfig)) for v in value)
        )  # a config group, or a list of configs (transforms): a branch
        if nested and value:
            _add(branch.add(_label(key)), value)
        elif isinstance(value, ListConfig):
            branch.add(_label(key, f"[{', '.join(scalar(v) for v in value)}]"))
        else:
            branch.add(_label(key, scalar(value)))


def config_tree(cfg: DictConfig) -> Tree:
    """One branch per config group (data, model, trainer, ...) in composition order, values as leaves."""
    tree = Tree(Text("config", "bold"), guide_style="dim")
    _add(tree, cfg)
    return tree


def print_config_tree(cfg: DictConfig, path: str | Path) -> None:
    """Print ``cfg`` as a tree (in colour on a terminal) and save it, plain, at ``path``: on
    rank 0 only. Lightning, which knows the rank, is imported here, by the training that calls
    this, so that the command layer (help, config errors) starts without it."""
    from pytorch_lightning.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    tree = config_tree(cfg)
    Console().print(tree)
    text = io.StringIO()
    Console(file=text, width=120, color_system=None, soft_wrap=True).print(tree)
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
