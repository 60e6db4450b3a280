"""The ``debug=`` configs (``conf/debug/``): what one changed, said at the start of the run.

The change list is the difference between the run's config and the same command line without
``debug=``, so it is always what the YAML files really did, never a description kept by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra import compose
from omegaconf import DictConfig, OmegaConf

_MISSING = object()


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values, interpolations as written (``${paths.output_dir}``)."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "unset"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def changes(debugged: DictConfig, plain: DictConfig) -> list[str]:
    """``key: before -> after`` for every value ``debugged`` sets differently from ``plain``."""
    after = _flat(OmegaConf.to_container(debugged, resolve=False))
    before = _flat(OmegaConf.to_container(plain, resolve=False))
    changed = [key for key in after if before.get(key, _MISSING) != after[key]]
    removed = [key for key in before if key not in after and not any(k.startswith(f"{key}.") for k in after)]
    return [
        f"{key}: {_shown(before.get(key, _MISSING))} -> {_shown(after.get(key, _MISSING))}"
        for key in changed + removed
    ]


def debug_changes(config_name: str, overrides: Sequence[str], debugged: DictConfig) -> list[str]:
    """What the ``debug=`` option among ``overrides`` changed in ``debugged`` (composed from them).

    Composes ``config_name`` again without it, so Hydra must be initialised (inside
    ``@hydra.main``, or ``initialize_config_dir`` in tests).
    """
    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "debug"]
    return changes(debugged, compose(config_name=config_name, overrides=rest))
