"""Checks of a training config run before any work starts: types and ranges of the keys a
user sets most, each failure one line naming the key."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from seg.data.stats import MEDIAN_FREQUENCY_POWERS
from seg.errors import ConfigError, building
from seg.training.budget import DURATION


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object) -> bool:
    return _is_int(value) and value >= 1  # type: ignore[operator]


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _duration(value: object) -> bool:
    """``trainer.max_time`` as Lightning's Timer takes it from a string: null or DD:HH:MM:SS."""
    return value is None or (isinstance(value, str) and bool(DURATION.fullmatch(value)))


_ABSENT = object()

#: (key, test, what a valid value is) for single values of conf/train.yaml, where present.
_CHECKS: list[tuple[str, Callable[[object], bool], str]] = [
    ("data.batch_size", _positive_int, "an integer >= 1"),
    ("data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),  # type: ignore[operator]
    ("data.num_classes", _positive_int, "an integer >= 1"),
    (
        "data.image_size",
        lambda v: v is None or _positive_int(v),
        "an integer >= 1 (any size: the U-Net pads)",
    ),
    ("model.optimizer.lr", _positive_number, "a positive number"),
    ("trainer.max_epochs", lambda v: v is None or v == -1 or _positive_int(v), "an integer >= 1"),
    ("model.compile", lambda v: isinstance(v, bool), "true or false"),
    ("trainer.max_time", _duration, 'null or a duration "DD:HH:MM:SS", e.g. "00:01:30:00"'),
]


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is the mandatory marker ``???``, without resolving anything
    (``OmegaConf.missing_keys`` resolves, and fails on a key that interpolates a missing one)."""
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _missing_keys(value, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [k for i, value in enumerate(node) for k in _missing_keys(value, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if node == "???" else []


def validate_train_config(cfg: DictConfig) -> None:
    """Reject config values that cannot work, naming the key, before data or model are built."""
    missing = _missing_keys(OmegaConf.to_container(cfg, resolve=False))
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} is required: add {key}=<value> to the command line")
    for key, ok, expected in _CHECKS:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not ok(value):  # absent: another option (model=smp has no base_channels)
            raise ConfigError(f"{key}={value!r} is not valid: expected {expected}")
    num_classes = cfg.data.num_classes
    names = cfg.data.get("class_names")
    if names is not None and len(names) != num_classes:
        raise ConfigError(
            f"data.class_names has {len(names)} names but data.num_classes is {num_classes}; "
            "give one name per class"
        )
    weights = cfg.loss.get("class_weights")
    if isinstance(weights, str) and weights not in MEDIAN_FREQUENCY_POWERS:
        rules = ", ".join(MEDIAN_FREQUENCY_POWERS)
        raise ConfigError(
            f"loss.class_weights={weights!r} is not valid: expected null, {rules}, or a list with one "
            "weight per class"
        )
    if weights is not None and not isinstance(weights, str) and len(weights) != num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} values but data.num_classes is {num_classes}; "
            "give one weight per class, or use loss.class_weights=median_frequency"
        )
    _check_network(cfg.model.net)
    if cfg.model.net.num_classes != num_classes:
        raise ConfigError(
            f"model.net.num_classes={cfg.model.net.num_classes} disagrees with "
            f"data.num_classes={num_classes}; leave model.net.num_classes at ${{data.num_classes}}"
        )
    _check_fused_optimizer(cfg)


def _check_network(net: DictConfig) -> None:
    """The network's own check of its options (its class's ``check_options``, where it has one),
    run on the config so that a mistake stops the run before any data is read."""
    try:
        check = getattr(get_class(net._target_), "check_options", None)
    except Exception:  # not importable: instantiating reports it
        return
    if check is not None:
        with building("model.net"):
            check(**{key: net[key] for key in net if not str(key).startswith("_")})


def _check_fused_optimizer(cfg: DictConfig) -> None:
    """``model.optimizer.fused`` only where the optimizer takes it, and never with gradient clipping
    under fp16 loss scaling (Lightning cannot unscale a fused optimizer's gradients before clipping)."""
    optimizer = cfg.model.optimizer
    if not optimizer.get("fused"):
        return
    try:
        takes_fused = "fused" in inspect.signature(get_class(optimizer._target_)).parameters
    except Exception:  # not importable: instantiating reports it
        return
    if not takes_fused:
        raise ConfigError(
            f"model.optimizer.fused: {optimizer._target_} has no fused step; "
            "remove it with ~model.optimizer.fused"
        )
    if cfg.trainer.get("gradient_clip_val") and cfg.trainer.get("precision") in ("16-mixed", 16, "16"):
        raise ConfigError(
            "trainer.gradient_clip_val cannot clip a fused optimizer's gradients under "
            "trainer.precision=16-mixed; add model.optimizer.fused=false"
        )
