"""Time to quality: ``seg.train`` for a fixed wall-clock budget, the default fast path against the
plain fp32 path, one after the other in one process.

Images per second say how fast a step is; what a user waits for is a good model. Each path runs
``seg.training.pipeline.train`` (what ``python -m seg.train`` does) on the composed training config
at its own sizes (the bench's ``base_channels``, ``image_size`` and ``batch_size`` shape the
per-step variants only; ``train_overrides`` apply), from the same seed, with ``scheduler=budget``
and ``trainer.max_time`` set to ``quality_budget_s``: the budget covers the whole run (reading the
data, validations, the final validation and export), and the learning rate anneals to zero when it
ends, on a fast path or a slow one (docs/budget.md). The score is the best val Dice reached.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from seg.benchmark import variants as v
from seg.errors import ConfigError
from seg.training.budget import duration_text
from seg.training.pipeline import train
from seg.training.stopping import BUDGET_STOP

#: The paths compared, as named in ``variants.TRAINING_VARIANTS``: the composed config as it is,
#: and the reference loop's settings (fp32, NCHW, no cuDNN autotuning).
PATHS = ("seg-default", "lightning-same")

#: An epoch count no budget reaches here: the clock, not the epoch count, ends training.
UNBOUNDED_EPOCHS = 100_000


def budget_overrides(seconds: Any) -> list[str]:
    """``seg.train`` overrides that train for ``seconds`` of wall time, annealing to zero at the end,
    with the whole budget for training and validation (no test split after it)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ConfigError(f"quality_budget_s={seconds!r} is not valid: expected whole seconds >= 1, e.g. 60")
    return [
        "scheduler=budget",
        f"trainer.max_time={duration_text(seconds)}",
        f"trainer.max_epochs={UNBOUNDED_EPOCHS}",
        "test_after_training=false",
    ]


def quality_config(bench: DictConfig, name: str) -> DictConfig:
    """The training config path ``name`` trains to the bench's budget."""
    extra = [*v.TRAINING_VARIANTS[name], *budget_overrides(bench.quality_budget_s)]
    return v.train_config(bench, f"time-to-quality {name}", *extra, sized=False)


def time_to_quality(bench: DictConfig, name: str) -> dict[str, Any]:
    """Train path ``name`` for ``bench.quality_budget_s`` seconds; its row of the time-to-quality
    table: best val Dice, epochs reached, training images per second, why it stopped."""
    cfg = quality_config(bench, name)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # data generated on first use is not part of either path's budget
    train_size = datamodule.split_sizes()["train"]
    started = time.perf_counter()
    metrics = train(cfg)
    wall = time.perf_counter() - started
    epochs = metrics.get("epochs") or []
    steps = int(epochs[-1]["step"]) if epochs else 0
    images = steps * int(cfg.data.batch_size)
    dices = [row["val/dice"] for row in epochs if not math.isnan(row.get("val/dice", math.nan))]
    best = max(dices, default=math.nan)
    best_epoch = next((row["epoch"] for row in epochs if row.get("val/dice") == best), None)
    precision = str(cfg.trainer.precision)
    layout = "channels_last" if cfg.model.channels_last else "NCHW"
    stop = str(metrics["stop_reason"])
    by_budget = stop.startswith(BUDGET_STOP)
    return {
        "name": name,
        "precision": precision,
        "layout": layout,
        "base_channels": int(cfg.model.net.base_channels) if "base_channels" in cfg.model.net else None,
        "image_size": int(cfg.data.image_size),
        "batch_size": int(cfg.data.batch_size),
        "budget_s": int(bench.quality_budget_s),
        "wall_s": wall,
        "train_s": float(metrics["train_seconds"]),
        "steps": steps,
        "images_per_s": images / float(metrics["train_seconds"]) if metrics["train_seconds"] else math.nan,
        "epochs": images / train_size if train_size else math.nan,
        "dice": best,
        "best_epoch": best_epoch,
        "stop_reason": stop,
        "stopped_by_budget": by_budget,
        "note": f"{precision}, {layout}; best at epoch {best_epoch}; "
        + ("stopped by the budget" if by_budget else f"stopped: {stop}"),
    }
