"""Callbacks that record what happens during a run."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl


class MetricsHistory(pl.Callback):
    """Keeps every validation epoch's logged ``val/*`` values, for ``metrics.json``."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                row[key] = float(value)
        self.epochs.append(row)

    def best(self, monitor: str, mode: str = "max") -> dict[str, Any] | None:
        """The first epoch with the best ``monitor`` value (NaN never wins)."""
        scored = [row for row in self.epochs if not math.isnan(row.get(monitor, math.nan))]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda row: row[monitor])
