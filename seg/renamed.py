"""Config keys renamed in this release. A command line that still spells the old key works, with
one notice line naming the new one; the old spellings go in the next release."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seg.errors import ConfigError
from seg.overrides import Override

#: Old key -> new key, per command (``conf/<command>.yaml``); a key's sub-keys are renamed with it.
#: ``run=`` names the trained run a command reads: a run directory or a model file.
#: ``data/mask_format`` says how mask files store classes (it was ``data/decoder``).
_MASK_FORMAT = {"data/decoder": "data/mask_format", "data.decoder": "data.mask_format"}
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "evaluate": {"run_dir": "run", "model_path": "run", **_MASK_FORMAT},
    "predict": {"model_path": "run"},
    "export": {"model_path": "run"},
    **{command: _MASK_FORMAT for command in ("train", "search", "check_data", "shard", "bench")},
}
#: New keys that hold a path: two spellings of one of them agree when one path lies inside the
#: other (a run and its ``export/model.onnx``), and the inner one is kept.
PATH_KEYS = {"run"}


def rename_overrides(command: str, overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``overrides`` with ``command``'s old keys spelled the new way, and one notice per old key.

    A key given in two spellings is one value: for a key of ``PATH_KEYS`` (``run_dir=<run>
    model_path=<run>/export/model.onnx``, or ``run=<run> model_path=<file>``) the path inside the
    other; two paths apart, or any other key twice, is a ``ConfigError``. One spelling given twice
    is Hydra's to judge.
    """
    renames = RENAMED_KEYS.get(command, {})
    new_keys = set(renames.values())
    result: list[Override | str] = []
    notices: dict[str, None] = {}
    set_by: dict[str, tuple[str, int]] = {}  # new key -> (the key as spelled, its place in result)
    for text in overrides:
        parsed = Override.parse(text)
        old = next((o for o in renames if parsed.key == o or parsed.key.startswith(f"{o}.")), None)
        if old is None and parsed.key not in new_keys:
            result.append(text)
            continue
        spelled, new = parsed.key, parsed
        if old is not None:
            notices[f"note: {old}= is now {renames[old]}= ({old}= keeps working for this release)"] = None
            spelled, new = old, parsed._replace(key=renames[old] + parsed.key[len(old) :])
        assignment = not new.prefix and new.value is not None
        if assignment and new.key in set_by and set_by[new.key][0] != spelled:
            earlier_key, place = set_by[new.key]
            earlier = result[place]
            assert isinstance(earlier, Override) and new.value is not None
            value = _one_value(new.key, earlier_key, earlier.value or "", spelled, new.value)
            result[place] = new._replace(value=value)
            continue
        if assignment:
            set_by[new.key] = (spelled, len(result))
        result.append(new)
    return [str(o) for o in result], list(notices)


def _one_value(key: str, first_key: str, first: str, second_key: str, second: str) -> str:
    """The value of ``key`` given as ``first_key=first`` and ``second_key=second``: for a path key
    (``PATH_KEYS``), the one of two paths that lies inside the other; else an error."""
    if key in PATH_KEYS:
        a, b = Path(first).resolve(), Path(second).resolve()
        if b.is_relative_to(a):
            return second
        if a.is_relative_to(b):
            return first
        raise ConfigError(
            f"{first_key}={first} and {second_key}={second} both set run= and disagree: pass run=<model "
            "file> alone (its training run is found from it), or run=<model> data=<dataset> data.root=<dir>"
        )
    raise ConfigError(
        f"{first_key}={first} and {second_key}={second} both set {key}=: give it once, as {key}="
    )


#: What the config a run saved (``RunDir.saved_config``) before this release spells differently:
#: keys (``(parent, old name, new name)``), and the classes ``_target_`` names.
RENAMED_SAVED_KEYS = [("data", "decoder", "mask_format")]
RENAMED_TARGETS = {
    "seg.module.SegmentationModule": "seg.lightning_module.SegmentationModule",
    "seg.data.masks.MaskDecoder": "seg.data.masks.MaskFormat",
}


def upgrade_saved_config(cfg: DictConfig) -> tuple[DictConfig, list[str]]:
    """A saved run config with its renamed keys and ``_target_`` classes spelled today's way
    (interpolations left as they are), and what changed, as notices."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    notices = []
    for parent, old, new in RENAMED_SAVED_KEYS:
        node = tree.get(parent) if isinstance(tree, dict) else None
        if isinstance(node, dict) and old in node and new not in node:
            node[new] = node.pop(old)
            notices.append(f"{parent}.{old} is now {parent}.{new}")
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("_target_") in RENAMED_TARGETS:
                notices.append(f"{node['_target_']} is now {RENAMED_TARGETS[node['_target_']]}")
                node["_target_"] = RENAMED_TARGETS[node["_target_"]]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    upgraded = OmegaConf.create(tree)
    assert isinstance(upgraded, DictConfig)
    return upgraded, notices
