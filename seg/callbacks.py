"""Callbacks that record and show what happens during a run."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from seg.artifacts import atomic_path
from seg.viz import confusion_matrix_figure, figure_to_array, prediction_grid, save_figure


class MetricsHistory(pl.Callback):
    """Keeps every epoch's ``val/*`` values and epoch-level ``train/*`` values, for ``metrics.json``."""

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
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")})

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


class ValidationImages(pl.Callback):
    """Shows how predictions improve: the same validation images every epoch, and the confusion matrix.

    Each validation epoch adds to TensorBoard a grid of input | ground truth | prediction for the
    first ``num_images`` validation images, in the dataset's colours, and the row-normalised
    confusion matrix, and writes both as PNGs into ``<run dir>/images/`` (the latest epoch).

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
        due = trainer.current_epoch % self.every_n_epochs == 0 or last
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
        run_dir = Path(trainer.default_root_dir) / "images"
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/predictions", grid, epoch, dataformats="HWC")
                if confmat is not None:
                    figure = confusion_matrix_figure(
                        confmat, pl_module.class_names, f"Validation, epoch {epoch}"
                    )
                    logger.experiment.add_image(
                        "val/confusion_matrix", figure_to_array(figure), epoch, dataformats="HWC"
                    )
        with atomic_path(run_dir / "val_predictions.png") as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        if confmat is not None:
            title = f"Validation, epoch {epoch}"
            save_figure(
                confusion_matrix_figure(confmat, pl_module.class_names, title),
                run_dir / "val_confusion_matrix.png",
            )


class GracefulStop(pl.Callback):
    """Ctrl-C and SIGTERM stop training at the next batch boundary, after saving ``last.ckpt``.

    Lightning turns SIGTERM into an exception at the next batch. The first Ctrl-C is turned into
    one at the end of the current training batch too (a second Ctrl-C stops at once, without
    a new checkpoint), so the saved state is always a consistent one: the step completed, the
    optimizer updated, the loader's position counted. Other failures (a NaN loss, a crash)
    leave the previous ``last.ckpt`` untouched.
    """

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signal: str | None = None
        self._requested = False
        self._previous_handler: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        print(
            "\nCtrl-C: stopping after this batch and saving last.ckpt (press again to stop at once)",
            flush=True,
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._requested:
            raise KeyboardInterrupt

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT"
            if not self._requested:  # interrupted mid-step: the previous checkpoint is the good one
                return
        else:
            return
        trainer.save_checkpoint(self.checkpoint_dir / "last.ckpt")
