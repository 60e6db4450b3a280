"""Callbacks and modules that tests put into real runs (``+callbacks.x._target_=support.probes.X``):
slow steps, a loss that turns NaN, a file cut mid-run, records of the learning rate and weights."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class NanAfter(torch.nn.Module):
    """A Dice loss that turns NaN after ``calls`` training steps (for the NaN-stop test)."""

    def __init__(self, calls: int, ignore_index: int | None = None) -> None:
        super().__init__()
        from seg.losses import DiceLoss

        self.loss = DiceLoss(smooth=1.0, ignore_index=ignore_index)
        self.calls = calls
        self.seen = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = self.loss(logits, target)
        if torch.is_grad_enabled():  # training steps only, not validation
            self.seen += 1
            if self.seen > self.calls:
                return value * float("nan")
        return value


class SlowSteps(pl.Callback):
    """Makes every training step ``seconds`` longer: a slower machine, for the budget tests."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: object) -> None:
        time.sleep(self.seconds)


class TruncateAtStep(pl.Callback):
    """Cuts the file at ``path`` to a third of its bytes as training step ``step`` begins: a file
    that breaks mid-run, long after the start-up header check (its header still reads)."""

    def __init__(self, path: str, step: int) -> None:
        self.path, self.step = Path(path), step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            data = self.path.read_bytes()
            self.path.write_bytes(data[: len(data) // 3])


class RecordLearningRate(pl.Callback):
    """Appends ``step lr`` to ``<path>.rank<global rank>`` at every training batch (after the
    callbacks before it have set the rate): one file per process, for the DDP budget test."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as out:
            out.write(f"{trainer.global_step} {lr!r}\n")


class RecordWeights(pl.Callback):
    """Saves to ``path`` the module's state after every training step, the state it validates
    with (outside the sanity check) and the state after the last validation, for the EMA tests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _state(module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self.steps.append(self._state(pl_module))

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object
    ) -> None:
        if not trainer.sanity_checking:
            self.validated.append(self._state(pl_module))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after = self._state(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save({"steps": self.steps, "validated": self.validated, "after": self.after}, self.path)


class DecodedMasks(pl.Callback):
    """Keeps the training split's masks as the run's own data module decoded them (at fit start),
    so format tests compare what training sees with the labels the files were made from."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = trainer.datamodule.datasets["train"]
        self.masks = [dataset.frames.read(i)[1] for i in range(len(dataset))]
