"""Training to a budget: a clock that ends training in time for the final evaluation, and a
learning-rate schedule driven by the fraction of the budget used (Li, Yumer and Ramanan,
"Budgeted Training", ICLR 2020: anneal to zero exactly when the budget ends).

The budget is ``trainer.max_time`` (wall time), ``trainer.max_steps`` / ``trainer.max_epochs``
(steps), or both: progress is the larger of the two fractions. The time budget covers the whole
run: training, the validations during it, and the final validation, test and export. The clock
keeps back a reserve for the final part, measured from the validations so far, so the schedule
reaches zero when training must stop, on a fast machine or a slow one.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LRScheduler

from seg.errors import OptionError

#: ``trainer.max_time`` as Lightning's Timer reads it from a string.
DURATION = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")

#: Kept back beyond the measured final evaluation, for writing the model and the reports:
#: this many seconds plus this fraction of the budget.
EXPORT_SECONDS, EXPORT_FRACTION = 2.0, 0.01


def duration_seconds(value: str | None) -> float | None:
    """``"DD:HH:MM:SS"`` in seconds; None for no time budget."""
    if value is None:
        return None
    match = DURATION.fullmatch(str(value))
    if match is None:
        raise ValueError(f'expected a duration "DD:HH:MM:SS", got {value!r}')
    days, hours, minutes, seconds = (int(part) for part in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def duration_text(seconds: int) -> str:
    """Whole ``seconds`` as the ``"DD:HH:MM:SS"`` string ``trainer.max_time`` takes."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


class TrainingBudget(pl.Callback):
    """Measures the run against its budget and stops training when the budget is used up.

    The clock counts wall time from ``start`` (``seg.training.pipeline.train`` sets it when the run begins, so
    reading the data and the sanity check count too; validations count as well), continues
    from a resumed checkpoint's value, and under DDP every rank reads rank 0's clock, so all
    ranks see the same progress and stop at the same step. Training stops once
    ``elapsed + reserve >= max_time``, where the reserve is the last validation's duration
    (until the next training batch: checkpoints and pictures included),
    the same again scaled to the test split when one will be tested, plus time for the export.
    A validation always runs at that stop, so the final weights are scored.

    Args:
        max_time: the whole run's wall-time budget, ``"DD:HH:MM:SS"``, or None.
        test_after_training: whether the test split is evaluated after training (time reserved).
        clock: seconds from a monotonic clock (tests inject a slower or faster one).
    """

    def __init__(
        self,
        max_time: str | None = None,
        test_after_training: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_seconds = duration_seconds(max_time)
        self.test_after_training = test_after_training
        self.clock = clock
        self.elapsed_before = 0.0  # seconds used by earlier runs of a resumed run
        self.start: float | None = None  # when this process's run began (default: training start)
        self.validation_seconds = 0.0
        self._started: float | None = None
        self._validation_started: float | None = None
        self._sanity = False
        self._elapsed = 0.0  # rank 0's clock, as of the latest training batch
        self._test_share = 0.0
        self._schedules: list[BudgetSchedule] = []
        self.step_budget: float = math.inf

    # --- the clock ---------------------------------------------------------------------------
    def _local_elapsed(self) -> float:
        running = self.clock() - self._started if self._started is not None else 0.0
        return self.elapsed_before + running

    def elapsed(self) -> float:
        """Seconds of the budget used so far (rank 0's value after the latest batch)."""
        return self._elapsed

    def reserve(self) -> float:
        """Seconds kept for the final validation, test and export."""
        if self.max_seconds is None:
            return 0.0
        export = EXPORT_SECONDS + EXPORT_FRACTION * self.max_seconds
        return self.validation_seconds * (1.0 + self._test_share) + export

    def time_left(self) -> float | None:
        """Training seconds left before the stop, or None without a time budget."""
        if self.max_seconds is None:
            return None
        return max(0.0, self.max_seconds - self.reserve() - self._elapsed)

    def progress(self, step: int) -> float:
        """Fraction of the budget used at optimizer step ``step``, in [0, 1]."""
        by_steps = step / self.step_budget if self.step_budget > 0 else 0.0
        by_time = 0.0
        if self.max_seconds is not None:
            training_seconds = max(self.max_seconds - self.reserve(), 1e-9)
            by_time = self._elapsed / training_seconds
        return min(1.0, max(by_steps, by_time))

    # --- Lightning hooks ---------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self.start if self.start is not None else self.clock()
        self._elapsed = self._local_elapsed()
        self.step_budget = float(trainer.estimated_stepping_batches)
        self._test_share = self._test_fraction(trainer) if self.test_after_training else 0.0
        self._schedules = [
            c.scheduler for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, BudgetSchedule)
        ]
        for schedule in self._schedules:
            schedule.attach(self, trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._validation_started is not None:  # the validation before this batch, all included
            self._measure_validation(trainer)
        clock = (self._local_elapsed(), self.validation_seconds)
        if trainer.world_size > 1:  # every rank takes rank 0's clock and reserve
            clock = trainer.strategy.broadcast(clock, src=0)
        self._elapsed, self.validation_seconds = clock
        for schedule in self._schedules:  # this batch's rate from the clock as of now
            schedule.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.progress(trainer.global_step) < 1.0 or trainer.should_stop:
            return
        trainer.should_stop = True
        # Score the final weights even between the epochs validation is due on.
        trainer.check_val_every_n_epoch = 1

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = self.clock()
        self._sanity = trainer.sanity_checking

    def _measure_validation(self, trainer: pl.Trainer) -> None:
        """A validation's cost, up to the next training batch: checkpoints and pictures included."""
        assert self._validation_started is not None
        seconds = self.clock() - self._validation_started
        self._validation_started = None
        if self._sanity:  # a few batches: scale up to the whole validation split
            seconds *= sum(trainer.num_val_batches) / max(sum(trainer.num_sanity_val_batches), 1)
        self.validation_seconds = seconds

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self._local_elapsed(), "validation_seconds": self.validation_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))
        self.validation_seconds = float(state_dict.get("validation_seconds", 0.0))

    @staticmethod
    def _test_fraction(trainer: pl.Trainer) -> float:
        """Size of the test split relative to validation (0 without one)."""
        datamodule = trainer.datamodule
        has_split = getattr(datamodule, "has_split", None)
        if datamodule is None or has_split is None or not has_split("test"):
            return 0.0
        sizes = getattr(datamodule, "split_sizes", None)
        if sizes is None:
            return 1.0
        val, test = sizes().get("val", 0), sizes().get("test", 0)
        return test / val if val else 1.0


class BudgetSchedule(LRScheduler):
    """Learning rate by budget progress ``p`` in [0, 1]: warm up, then decay to 0 at ``p = 1``.

    ``lr = base_lr * f(p)`` with ``f`` rising linearly from 0 over the first ``warmup`` of the
    budget, then falling to 0: ``1 - q`` (linear) or ``(1 + cos(pi q)) / 2`` (cosine), where
    ``q`` is the progress since the warm-up. The :class:`TrainingBudget` callback supplies
    progress and sets the rate at the start of every batch, from its clock as of then (without
    it, stepping the schedule counts progress in steps of ``total_steps``).

    Args:
        optimizer: the wrapped optimizer.
        shape: ``linear`` (the Budgeted Training recommendation) or ``cosine``.
        warmup: fraction of the budget spent warming up, in [0, 1).
        total_steps: step budget when no :class:`TrainingBudget` is attached.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        shape: Literal["linear", "cosine"] = "linear",
        warmup: float = 0.0,
        total_steps: int | None = None,
    ) -> None:
        if shape not in ("linear", "cosine"):
            raise OptionError.invalid("shape", shape, "linear or cosine")
        if not 0.0 <= warmup < 1.0:
            raise OptionError.invalid("warmup", warmup, "a fraction in [0, 1)")
        self.shape = shape
        self.warmup = warmup
        self.total_steps = total_steps
        self._budget: TrainingBudget | None = None
        self._trainer: pl.Trainer | None = None
        super().__init__(optimizer)

    def attach(self, budget: TrainingBudget, trainer: pl.Trainer) -> None:
        """Take progress from ``budget`` from now on."""
        self._budget, self._trainer = budget, trainer
        self.refresh()

    def refresh(self) -> None:
        """Set the learning rate for the progress as of now (the budget calls it every batch)."""
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def progress(self) -> float:
        if self._budget is not None and self._trainer is not None:
            return self._budget.progress(self._trainer.global_step)
        if self.total_steps:
            return min(1.0, self.last_epoch / self.total_steps)
        return 0.0

    def factor(self, progress: float) -> float:
        """The multiplier of the base learning rate at ``progress``."""
        if progress < self.warmup:
            return progress / self.warmup
        rest = (progress - self.warmup) / (1.0 - self.warmup)
        if self.shape == "linear":
            return max(0.0, 1.0 - rest)
        return 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))

    def get_lr(self) -> list[float]:
        factor = self.factor(self.progress())
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k not in ("_budget", "_trainer")}
