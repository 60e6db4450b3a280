"""Callbacks that record and show what happens during a run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger

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
