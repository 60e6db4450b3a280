"""Callbacks that record and show what happens during a run."""

from __future__ import annotations

import logging
import math
import signal
import threading
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities.exceptions import SIGTERMException

from seg.artifacts import atomic_path
from seg.errors import DataError
from seg.hardware import release_memory
from seg.loggers import log_image
from seg.reports.pictures import confusion_matrix_figure, figure_to_array, prediction_grid, save_figure
from seg.rundir import RunDir
from seg.training import cluster

log = logging.getLogger(__name__)

#: Signals that ask a job to save and come back: SLURM's ``--signal=SIGUSR1@90`` (Lightning's
#: convention) and submitit's warning before the time limit (SIGUSR2 by default).
REQUEUE_SIGNAL_NAMES = ("SIGUSR1", "SIGUSR2")
#: Those of them this OS has (Windows has neither).
REQUEUE_SIGNALS = tuple(getattr(signal, name) for name in REQUEUE_SIGNAL_NAMES if hasattr(signal, name))


class MetricsHistory(pl.Callback):
    """Keeps every epoch's ``val/*`` values and epoch-level ``train/*`` values, for the run's metrics."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def _row(self, trainer: pl.Trainer) -> dict[str, Any]:
        if not self.epochs or self.epochs[-1]["epoch"] != trainer.current_epoch:
            self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step})
        return self.epochs[-1]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = self._row(trainer)
        row["step"] = trainer.global_step
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = self._row(trainer)
        metrics = trainer.callback_metrics  # `train/x_epoch`, or `train/x` when logged per epoch only
        epoch_keys = [k for k in metrics if k.startswith("train/") and not k.endswith("_step")]
        row.update({k: float(metrics[k]) for k in epoch_keys if f"{k}_epoch" not in metrics})

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))

    def best(self, monitor: str, mode: str = "max") -> dict[str, Any] | None:
        """The first epoch with the best ``monitor`` value (NaN never wins)."""
        scored = [row for row in self.epochs if not math.isnan(row.get(monitor, math.nan))]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda row: row[monitor])


class ReleaseMemoryBetweenPhases(pl.Callback):
    """Returns freed memory to the system as validation or test starts and ends.

    A process with a tuned allocator (``seg.hardware.tune_allocator``) keeps the blocks of its
    largest training steps. Without a release, validation on full frames allocates beside them,
    and a run's peak is the sum of both phases rather than the larger. One release costs the
    next step one round of page faults: nothing, next to a validation.
    """

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        release_memory()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        release_memory()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        release_memory()


class ValidationImages(pl.Callback):
    """Shows how predictions improve: the same validation images every epoch, and the confusion matrix.

    Each validation epoch adds to every logger that holds pictures (TensorBoard, MLflow, W&B) a
    grid of input | ground truth | prediction for the first ``num_images`` validation images, in
    the dataset's colours, and the row-normalised confusion matrix, and writes both as PNGs into
    ``<run dir>/images/`` (the latest epoch).

    Args:
        num_images: validation images in the grid.
        every_n_epochs: draw every this many epochs (the last epoch is always drawn).
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1) -> None:
        self.num_images = num_images
        self.every_n_epochs = max(1, every_n_epochs)
        self._batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _active(self, trainer: pl.Trainer) -> bool:
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        due = trainer.current_epoch % self.every_n_epochs == 0 or last or trainer.should_stop
        return due and not trainer.sanity_checking and trainer.is_global_zero

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        have = sum(len(b[0]) for b in self._batches)
        if have >= self.num_images or outputs is None or not self._active(trainer):
            return
        take = self.num_images - have
        images, masks = batch
        self._batches.append((images[:take].cpu(), masks[:take].cpu(), outputs[:take].cpu()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer) or not self._batches:
            return
        palette, ignore = pl_module.palette, pl_module.ignore_index
        sizes = {tuple(b[1].shape[-2:]) for b in self._batches}
        if len(sizes) == 1:
            images = torch.cat([b[0] for b in self._batches]).permute(0, 2, 3, 1).numpy().astype(np.uint8)
            targets = torch.cat([b[1] for b in self._batches]).numpy()
            predictions = torch.cat([b[2] for b in self._batches]).numpy()
            grid = prediction_grid(images, targets, predictions, palette, ignore)
        else:  # mixed frame sizes: show the first batch only
            images, targets, predictions = self._batches[0]
            grid = prediction_grid(
                images.permute(0, 2, 3, 1).numpy(), targets.numpy(), predictions.numpy(), palette, ignore
            )
        epoch = trainer.current_epoch
        confmat = getattr(pl_module, "last_confmat", {}).get("val")
        run_dir = RunDir.of_trainer(trainer)
        log_image(trainer.loggers, "val/predictions", grid, epoch)
        if confmat is not None and trainer.loggers:
            figure = confusion_matrix_figure(confmat, pl_module.class_names, f"Validation, epoch {epoch}")
            log_image(trainer.loggers, "val/confusion_matrix", figure_to_array(figure), epoch)
        with atomic_path(run_dir.val_predictions) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        if confmat is not None:
            title = f"Validation, epoch {epoch}"
            save_figure(
                confusion_matrix_figure(confmat, pl_module.class_names, title),
                run_dir.val_confusion_matrix,
            )


_stop_asked: signal.Signals | None = None  # set by GracefulStop, read by stop_asked()


def stop_asked() -> signal.Signals | None:
    """The first signal that asked this process to stop while it trained, if any. A run whose stop
    came during its last batches finishes normally; a command that trains several runs in turn
    (``seg.search``) asks this between them, so that the user's Ctrl-C still ends it."""
    return _stop_asked


class GracefulStop(pl.Callback):
    """Signals stop training at the next batch boundary, after saving the last checkpoint.

    It is saved as ``RunDir.of_trainer(trainer).last_checkpoint``: in the checkpoint callback's
    ``dirpath``, where ``resume=`` looks.

    Ctrl-C (SIGINT) and SIGTERM (``kill``, ``scancel``, preemption) stop the run. SIGUSR1 (SLURM's
    ``--signal``, as Lightning uses it) and SIGUSR2 (submitit's warning before a time limit) stop it
    and then put the job back in the queue (:meth:`requeue`), where ``resume=auto`` continues it.
    The stop waits for the end of the current training batch (at an epoch's last batch, for the
    end of the next one, after the epoch's validation), so the saved state is always a
    consistent one: the step completed, the optimizer updated, the loader's position counted. A
    second Ctrl-C stops at once, without a new checkpoint. Under DDP every rank stops at rank 0's
    batch. A data file that fails to decode mid-epoch saves it too (``resume=`` continues once the
    file is fixed). Other failures (a NaN loss, a crash) leave the previous last checkpoint untouched.
    This replaces Lightning's own SLURM handling, which saves mid-step and ignores SIGTERM.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, *REQUEUE_SIGNALS)

    def __init__(self) -> None:
        self.signal: str | None = None  # the name of the signal that stopped the run
        self._requested: signal.Signals | None = None
        self._stopping = False  # True once stopping at a batch boundary
        self._previous: dict[signal.Signals, Any] = {}
        self.data_failure = False  # True once a file failed to decode mid-epoch (checkpoint saved)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._requested is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        global _stop_asked
        self._requested = signal.Signals(signum)
        _stop_asked = _stop_asked or self._requested
        then = "saving the last checkpoint" + (" and requeueing" if signum in REQUEUE_SIGNALS else "")
        hint = " (press again to stop at once)" if signum == signal.SIGINT else ""
        print(f"\n{self._requested.name}: stopping after this batch, {then}{hint}", flush=True)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Installed before Lightning's handlers: Lightning then leaves SIGUSR1 to us and calls
        # this SIGTERM handler from its own.
        if threading.current_thread() is threading.main_thread():
            for signum in self.HANDLED:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            missing = [name for name in REQUEUE_SIGNAL_NAMES if not hasattr(signal, name)]
            if missing:
                log.info(
                    "This OS has no %s: Ctrl-C and SIGTERM stop the run with a checkpoint; "
                    "no signal requeues it",
                    " or ".join(missing),
                )

    def restore_signals(self) -> None:
        """Give the signals back to the handlers they had before training."""
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        requested = self._requested is not None
        if trainer.world_size > 1:
            requested = bool(trainer.strategy.broadcast(requested, src=0))
            if requested and self._requested is None:
                self._requested = signal.SIGTERM
        # At an epoch's last batch, wait for its validation and checkpoint: a run resumed from a
        # state between the last batch and the epoch's end would skip that validation.
        if not requested or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        self._stopping = True
        if self._requested == signal.SIGINT:
            raise KeyboardInterrupt
        raise SIGTERMException

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._stopping:
            self.signal = self._requested.name if self._requested else "SIGTERM"
        elif isinstance(exception, SIGTERMException):  # Lightning's own stop at an epoch's end
            self.signal = "SIGTERM"
            self._requested = signal.SIGTERM
        elif isinstance(exception, DataError) and trainer.training:
            # A file that failed to decode mid-epoch: the state after the last trained batch is
            # consistent, so save it; resume= continues there once the file is fixed.
            self.data_failure = True
        else:  # a crash, or a second Ctrl-C mid-step: the previous checkpoint is the good one
            if isinstance(exception, KeyboardInterrupt):
                self.signal, self._requested = "SIGINT", signal.SIGINT
            return
        trainer.save_checkpoint(RunDir.of_trainer(trainer).last_checkpoint)

    @property
    def exit_status(self) -> int:
        """The status shells report for a process ended by the stopping signal (128 + number)."""
        return 128 + int(self._requested or signal.SIGTERM)

    def requeue(self) -> bool:
        """After a requeue signal, put the job back in the queue; True when it was.

        A submitit job is handed to submitit's own handler (it resubmits the same call, which finds
        the run dir and ``resume=auto``); a plain SLURM batch job is requeued with ``scontrol``.
        """
        if self._requested not in REQUEUE_SIGNALS:
            return False
        previous = self._previous.get(self._requested)
        if callable(previous):
            previous(int(self._requested), None)  # submitit's handler requeues and exits
            return True
        return cluster.requeue()
