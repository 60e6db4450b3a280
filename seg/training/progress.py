"""Progress as plain lines, for log files: ``nohup``, batch jobs, CI, and ``train.log``.

A progress bar redraws one line in a terminal; in a file it is noise or nothing. This callback
writes a line at a fixed interval during training and one per validation. The lines always go
to the run's ``train.log``; they go to the console too when stdout is not a terminal (where the
bar is off). In a terminal the bar stays and the console gets no extra lines.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl

from seg.metrics import DEFAULT_MONITOR
from seg.training.budget import TrainingBudget

log = logging.getLogger(__name__)


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (not a file, pipe or batch job's log)."""
    return sys.stdout.isatty()


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class ProgressLog(pl.Callback):
    """Writes ``epoch, step, loss, images/s, elapsed, budget left or ETA`` every ``every_s`` seconds,
    and the monitored metric with the best so far after every validation (rank 0 only).

    Args:
        every_s: seconds between training lines (at the end of the batch that crosses it).
        console: also print to the console; None means when stdout is not a terminal.
    """

    def __init__(self, every_s: float = 30.0, console: bool | None = None) -> None:
        if every_s <= 0:
            raise ValueError(f"callbacks.progress_log.every_s={every_s!r}: expected seconds > 0")
        self.every_s = float(every_s)
        self.console = console
        self._started = 0.0
        self._last_line = 0.0
        self._images = 0
        self._steps_at_last_line = 0

    def _emit(self, message: str) -> None:
        console = self.console if self.console is not None else not stdout_is_terminal()
        if console:
            log.info(message)
            return
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self._last_line = time.monotonic()
        self._images = 0
        self._steps_at_last_line = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[0]) * trainer.world_size
        now = time.monotonic()
        if now - self._last_line < self.every_s or not trainer.is_global_zero:
            return
        rate = self._images / (now - self._last_line)
        seconds_per_step = (now - self._last_line) / max(trainer.global_step - self._steps_at_last_line, 1)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        parts = [
            f"epoch {trainer.current_epoch}" + (f"/{trainer.max_epochs}" if trainer.max_epochs else ""),
            f"step {trainer.global_step}",
            f"loss {float(loss):.4f}" if loss is not None else "loss -",
            f"{rate:.1f} img/s",
            f"elapsed {_clock(now - self._started)}",
            self._remaining(trainer, seconds_per_step),
        ]
        self._emit(" | ".join(part for part in parts if part))
        self._last_line, self._images, self._steps_at_last_line = now, 0, trainer.global_step

    @staticmethod
    def _remaining(trainer: pl.Trainer, seconds_per_step: float) -> str:
        budget = next((c for c in trainer.callbacks if isinstance(c, TrainingBudget)), None)
        left = budget.time_left() if budget is not None else None
        if left is not None:
            return f"budget left {_clock(left)}"
        total = trainer.estimated_stepping_batches
        if math.isfinite(total):
            return f"ETA {_clock(max(0.0, total - trainer.global_step) * seconds_per_step)}"
        return ""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None) or DEFAULT_MONITOR
        value = trainer.callback_metrics.get(monitor)
        if value is None:
            return
        best = getattr(checkpoint, "best_model_score", None)
        mode = getattr(checkpoint, "mode", "max")
        value = float(value)
        best_value = value if best is None else (max if mode == "max" else min)(value, float(best))
        self._emit(
            f"validation epoch {trainer.current_epoch} step {trainer.global_step}: "
            f"{monitor} {value:.4f} (best {best_value:.4f})"
        )
