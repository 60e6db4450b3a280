"""The LightningModule: a segmentation network, its loss, optimizer and per-class metrics.

It is built from plain config dicts (``_target_`` nodes), which it stores as hyperparameters,
so ``SegmentationModule.load_from_checkpoint(path)`` rebuilds it from the ``.ckpt`` alone.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seg.classes import default_names, default_palette
from seg.errors import ConfigError, NonFiniteLossError, building
from seg.metrics import MeanDice, build_metrics, summarize

log = logging.getLogger(__name__)


def _plain(config: Any) -> Any:
    """A resolved, plain-Python copy of a config node (safe to pickle and to save as hparams)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return {key: _plain(value) for key, value in config.items()}
    return config


class SegmentationModule(pl.LightningModule):
    """Trains ``net`` with ``loss`` and logs Dice/IoU per class under ``val/`` and ``test/``.

    Args:
        net: config of the network (e.g. ``seg.models.unet.UNet``).
        loss: config of the loss, called as ``loss(logits, target)``.
        optimizer: partial config of the optimizer; it receives the parameters.
        scheduler: optional Lightning lr-scheduler config whose ``scheduler`` entry is a partial
            that receives the optimizer (``interval``, ``monitor``, ... are passed through).
        class_names: one name per class, used in metric names.
        palette: one ``[r, g, b]`` per class, for pictures of predictions.
        ignore_index: target value left out of the metrics (the loss has its own setting).
        channels_last: keep activations in NHWC, which is faster for convolutions on CPU
            (oneDNN) and on GPU tensor cores.
        compile: ``torch.compile`` the network's calls while fitting (``nn.Module.compile``: in
            place, so the parameters, checkpoints and the exported TorchScript model are those of the
            plain network). The first training step, which compiles, is timed and logged.
        encoder_lr_scale: the learning rate of a pretrained encoder (a network's
            ``encoder_parameters()``) as a multiple of the optimizer's: fine-tuning usually moves
            pretrained weights more gently than a new decoder.
        decay_norms_and_biases: whether weight decay also applies to 1-D parameters (normalisation
            weights and biases); the usual fine-tuning practice turns it off for them.
        freeze_encoder_norms: keep a pretrained encoder's batch norms as the weights left them:
            their running statistics are not updated (they stay in eval mode while training) and
            their scale and shift are not trained. Small batches then cannot drift statistics
            learnt on ImageNet.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        loss: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
        channels_last: bool = True,
        compile: bool = False,
        encoder_lr_scale: float = 1.0,
        decay_norms_and_biases: bool = True,
        freeze_encoder_norms: bool = False,
    ) -> None:
        super().__init__()
        net, loss, optimizer, scheduler = _plain(net), _plain(loss), _plain(optimizer), _plain(scheduler)
        class_names = list(class_names) if class_names is not None else None
        palette = [[int(c) for c in colour] for colour in palette] if palette is not None else None
        self.save_hyperparameters()
        with building("model.net"):  # the config paths of these nodes (they are built apart)
            self.net: nn.Module = instantiate(net)
        with building("loss"):
            self.loss_fn: nn.Module = instantiate(loss)
        num_classes = int(self.net.num_classes)
        self.class_names = class_names or default_names(num_classes)
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a network with {num_classes} classes")
        self.palette = palette or default_palette(num_classes)
        self.ignore_index = ignore_index
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if encoder_lr_scale <= 0:
            raise ConfigError(f"model.encoder_lr_scale={encoder_lr_scale}: expected a positive multiple")
        for norm in self.frozen_norms():
            norm.requires_grad_(False)
        self.compile_net = bool(compile)
        self.compile_seconds: float | None = None  # the first compiled training step, once measured
        self._first_step_start: float | None = None
        self.last_confmat: dict[str, Any] = {}  # the latest confusion matrix per stage, for pictures
        self.val_metrics = build_metrics(num_classes, ignore_index)
        self.test_metrics = build_metrics(num_classes, ignore_index)
        # Dice on the training batches as trained (augmented, train-mode batch norm): how well the
        # network fits what it sees, e.g. with debug=overfit; val/dice says how well it generalises.
        self.train_dice = MeanDice(num_classes, ignore_index=ignore_index, validate_args=False)

    def _encoder_ids(self) -> set[int] | None:
        """The ids of the network's encoder parameters; None for a network without an encoder."""
        encoder_parameters = getattr(self.net, "encoder_parameters", None)
        return None if encoder_parameters is None else {id(p) for p in encoder_parameters()}

    def frozen_norms(self) -> list[nn.Module]:
        """The encoder's batch norms that ``freeze_encoder_norms`` keeps as loaded (none when off).
        Found anew at each call, so that norms a trainer swapped in (``sync_batchnorm``: the same
        parameters in new modules) are the ones kept."""
        if not self.hparams.freeze_encoder_norms:
            return []
        encoder = self._encoder_ids()
        if encoder is None:
            raise ConfigError(
                f"model.freeze_encoder_norms=true: {type(self.net).__name__} has no pretrained encoder; "
                "use model=smp or model.freeze_encoder_norms=false"
            )
        return [
            module
            for module in self.net.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and any(id(p) in encoder for p in module.parameters(recurse=False))
        ]

    def train(self, mode: bool = True) -> SegmentationModule:
        """As ``nn.Module.train``, with frozen encoder norms kept in eval mode."""
        super().train(mode)
        for norm in self.frozen_norms():
            norm.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, H, W)`` for uint8 images ``(B, C, H, W)`` or floats in ``[0, 1]``."""
        if image.dtype == torch.uint8:
            x = image.to(torch.float32, memory_format=self.memory_format).div_(255)
        else:
            x = image.to(memory_format=self.memory_format)
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = batch
        logits = self(image)
        return logits, self.loss_fn(logits, mask)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits, loss = self._step(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}; training stopped and the last good checkpoint is kept. Try a "
                "lower learning rate (model.optimizer.lr=...) or loss=dice_ce"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0])
        self.train_dice.update(logits.detach().argmax(dim=1), batch[1])
        self.log("train/dice", self.train_dice, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        logits, loss = self._step(batch)
        self.log(
            f"{stage}/loss",
            loss,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=batch[0].shape[0],
            sync_dist=True,
        )
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        predictions = logits.argmax(dim=1)
        metrics.update(predictions, batch[1])
        return predictions

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        computed = metrics.compute()
        self.last_confmat[stage] = computed["confmat"].cpu().numpy()
        values = summarize(computed, self.class_names, stage, self.ignore_index)
        metrics.reset()
        # Already synchronised across processes by torchmetrics; sync_dist only averages equal values.
        self.log(f"{stage}/dice", values.pop(f"{stage}/dice"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)

    def on_train_start(self) -> None:
        # Sanity-check batches must not leak into the first epoch's validation scores.
        self.val_metrics.reset()

    def on_fit_start(self) -> None:
        # After Lightning's setup, so callbacks that copy the module (EMA) copy the plain network.
        if self.compile_net:
            self.net.compile()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.compile_net and self.compile_seconds is None:
            self._first_step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._first_step_start is not None and self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - self._first_step_start
            log.info(
                "torch.compile: the first training step took %.1f s (compilation included)",
                self.compile_seconds,
            )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A network may say how it is rebuilt from a checkpoint (seg.models.smp.SmpNet: without
        # downloading pretrained weights that the checkpoint holds anyway).
        rebuild = getattr(self.net, "checkpoint_config", None)
        hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY)
        if rebuild is not None and hparams is not None:
            checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = {**hparams, "net": rebuild(hparams["net"])}

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The trainable parameters in optimizer groups: a pretrained encoder's at
        ``encoder_lr_scale * lr``, and 1-D ones without weight decay unless
        ``decay_norms_and_biases``. Groups are named (``encoder``, ``decoder``, or ``network`` for a
        network without an encoder; ``+no_decay``) when there is more than one, which is how the
        learning-rate monitor logs them (``lr-AdamW/encoder``); a single group keeps ``lr-AdamW``."""
        encoder = self._encoder_ids() or set()
        groups: dict[str, dict[str, Any]] = {}
        for parameter in self.parameters():
            if not parameter.requires_grad:
                continue
            part = "encoder" if id(parameter) in encoder else "decoder" if encoder else "network"
            decay = self.hparams.decay_norms_and_biases or parameter.ndim > 1
            name = part if decay else f"{part}+no_decay"
            scale = self.hparams.encoder_lr_scale if part == "encoder" else 1.0
            group = groups.setdefault(name, {"name": name, "params": [], "lr": lr * scale})
            if not decay:
                group["weight_decay"] = 0.0
            group["params"].append(parameter)
        if len(groups) == 1:
            del next(iter(groups.values()))["name"]
        return list(groups.values())

    def configure_optimizers(self) -> Any:
        build = instantiate(self.hparams.optimizer)
        lr = build.keywords.get("lr", inspect.signature(build.func).parameters["lr"].default)
        optimizer = build(self.parameter_groups(float(lr)))
        if not self.hparams.scheduler:
            return optimizer
        scheduler_config = dict(self.hparams.scheduler)
        with building("scheduler.scheduler"):
            scheduler_config["scheduler"] = instantiate(scheduler_config["scheduler"])(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config}
