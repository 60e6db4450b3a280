"""When training stops before ``max_epochs``, and why a run stopped, in words for the run's metrics."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, Timer
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason

from seg.training.budget import TrainingBudget


def early_stopping(
    monitor: str,
    mode: str,
    patience: int | None = None,
    min_delta: float = 0.0,
    stopping_threshold: float | None = None,
) -> EarlyStopping | None:
    """Lightning's EarlyStopping, or ``None`` (off) while ``patience`` is null.

    Args:
        monitor: the value watched, e.g. ``val/dice`` (the checkpoint's, by default).
        mode: ``max`` when higher is better, ``min`` when lower is.
        patience: validation checks without an improvement of at least ``min_delta`` before stopping.
        min_delta: the smallest change that counts as an improvement.
        stopping_threshold: also stop as soon as ``monitor`` reaches this value.
    """
    if patience is None:
        return None
    return EarlyStopping(
        monitor=monitor,
        mode=mode,
        patience=patience,
        min_delta=min_delta,
        stopping_threshold=stopping_threshold,
        verbose=True,
    )


#: How ``stop_reason`` begins when the time budget (``trainer.max_time``) ended training.
BUDGET_STOP = "max_time reached"


def stop_reason(trainer: pl.Trainer, status: str) -> str:
    """Why training ended: early stopping (and its message), the time budget, the epoch count, a signal..."""
    if status != "finished":
        return status
    for callback in trainer.early_stopping_callbacks:
        if callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            message = callback.stopping_reason_message or callback.stopping_reason.value
            return f"early stopping at epoch {callback.stopped_epoch}: {message}"
    if trainer.fast_dev_run:
        return "fast_dev_run: one batch per split"
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        budget = callback if isinstance(callback, TrainingBudget) else None
        if budget is not None and budget.max_seconds is not None and budget.time_left() == 0:
            return (
                f"{BUDGET_STOP} after {budget.elapsed():.0f} s of the {budget.max_seconds:.0f} s "
                "budget (the rest kept for the final validation, test and export)"
            )
        if isinstance(callback, Timer):
            remaining = callback.time_remaining()
            if remaining is not None and remaining <= 0:
                return f"{BUDGET_STOP} after {callback.time_elapsed():.0f} s of training"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return f"max_epochs={trainer.max_epochs} reached"
    if 0 <= trainer.max_steps <= trainer.global_step:
        return f"max_steps={trainer.max_steps} reached"
    return "finished"
