"""The ``debug=`` configs (``conf/debug/``): what one changed, said at the start of the run.

The change list is the difference between the run's config and the same command line without
``debug=``, so it is always what the YAML files really did, never a description kept by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seg.config_tree import leaves, scalar
from seg.overrides import override_key

log = logging.getLogger(__name__)

_MISSING = object()


def _shown(value: Any) -> str:
    return "unset" if value is _MISSING else scalar(value)


def changes(debugged: DictConfig, plain: DictConfig) -> list[str]:
    """``key: before -> after`` for every value ``debugged`` sets differently from ``plain``."""
    after = leaves(OmegaConf.to_container(debugged, resolve=False))
    before = leaves(OmegaConf.to_container(plain, resolve=False))
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
    rest = [o for o in overrides if override_key(o) != "debug"]
    return changes(debugged, compose(config_name=config_name, overrides=rest))


def report_debug_changes(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Log what this run's ``debug=`` option changed (nothing when there is none)."""
    hydra_cfg = HydraConfig.get()
    debug = hydra_cfg.runtime.choices.get("debug")
    if debug:
        changed = debug_changes(hydra_cfg.job.config_name, overrides, cfg)
        log.info("debug=%s changes %d values:%s", debug, len(changed), "".join(f"\n  {c}" for c in changed))
