"""What a training run does, as a function tests can call: ``train(cfg)``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seg import loggers as seg_loggers
from seg.artifacts import write_json
from seg.config_tree import print_config_tree
from seg.data.datamodule import SegmentationDataModule
from seg.data.stats import MEDIAN_FREQUENCY_POWERS
from seg.errors import SegError, building, user_message
from seg.inference.formats import write_torchscript
from seg.lightning_module import SegmentationModule
from seg.metrics import DEFAULT_MONITOR
from seg.models.weights import starting_weights
from seg.reports.model_card import write_model_card
from seg.reports.pictures import curves_figure, save_figure
from seg.reports.run_summary import log_run_summary, shown
from seg.rundir import RunDir
from seg.training.budget import TrainingBudget
from seg.training.callbacks import GracefulStop, MetricsHistory, ReleaseMemoryBetweenPhases
from seg.training.checks import validate_train_config
from seg.training.cluster import other_rank
from seg.training.provenance import write_run_info
from seg.training.resume import resume_config
from seg.training.stopping import stop_reason

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` (a builder may
    return ``None``: that entry is switched off)."""
    if not group:
        return []
    with building():
        built = [instantiate(node) for node in group.values() if node is not None and "_target_" in node]
    return [item for item in built if item is not None]


def build_module(cfg: DictConfig, datamodule: SegmentationDataModule) -> SegmentationModule:
    """The LightningModule ``cfg`` describes, for ``datamodule``'s classes (median-frequency class
    weights are computed from its training split and written into ``cfg.loss``)."""
    rule = cfg.loss.get("class_weights")
    if isinstance(rule, str) and rule in MEDIAN_FREQUENCY_POWERS:
        power = MEDIAN_FREQUENCY_POWERS[rule]
        cfg.loss.class_weights = [round(w**power, 4) for w in datamodule.median_frequency_weights()]
        log.info("Class weights (%s): %s", rule, cfg.loss.class_weights)
    with building("model"):  # e.g. a loss option out of range, raised by the loss itself
        return instantiate(
            cfg.model,
            loss=cfg.loss,
            scheduler=cfg.get("scheduler"),
            class_names=datamodule.class_names,
            palette=datamodule.palette,
            ignore_index=datamodule.ignore_index,
            _recursive_=False,
        )


def build_trainer(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """``cfg.trainer`` with the configured loggers and callbacks, plus ``callbacks``.

    With ``trainer.fast_dev_run`` no logger is built: Lightning would send nothing to it, and a
    tracking run (MLflow, W&B) opened for it would be left running."""
    if cfg.trainer.get("fast_dev_run") and cfg.get("logger"):
        log.info("trainer.fast_dev_run: no logger is built (Lightning logs nothing in this mode)")
        loggers = []
    else:
        loggers = _instantiate_all(cfg.get("logger"))
    built = [*_instantiate_all(cfg.get("callbacks")), *callbacks]
    if not loggers:  # the learning-rate monitor has nowhere to write without a logger
        built = [c for c in built if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=built, logger=loggers or False)


def train(
    cfg: DictConfig, overrides: Sequence[str] = (), callbacks: Sequence[pl.Callback] = ()
) -> dict[str, Any]:
    """Train (or, with ``cfg.resume``, continue a run), test the best weights, export them.

    ``overrides`` are the command-line overrides, checked against what a resumed run may change.
    ``callbacks`` join the configured ones (``seg.search`` adds its pruning callback this way).
    Returns the run's metrics (see ``seg.rundir.RunDir`` for the files). User mistakes raise
    ``seg.errors.SegError``; Ctrl-C and SIGTERM save the last checkpoint, the model and the
    metrics and exit with status 130 / 143.
    """
    began = time.monotonic()  # the run's time budget counts from here (seg.training.budget)
    checkpoint = None
    if cfg.get("resume"):
        cfg, checkpoint = resume_config(cfg, overrides)
    validate_train_config(cfg)
    OmegaConf.resolve(cfg)
    output_dir = Path(cfg.paths.output_dir)
    run_dir = RunDir.of(output_dir, cfg)
    if cfg.get("print_config", True) and other_rank(os.environ) is None:  # only global rank 0 writes
        print_config_tree(cfg, run_dir.config_tree)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    with building("data"):  # a mistake in the data config (its mask format, ...) is one line
        datamodule: SegmentationDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")  # reads and checks the data before anything slow starts
    log.info("Validation: %s", datamodule.validation_summary()["description"])
    module = build_module(cfg, datamodule)
    history = MetricsHistory()
    stop = GracefulStop()
    trainer = build_trainer(cfg, [history, stop, ReleaseMemoryBetweenPhases(), *callbacks])
    for callback in trainer.callbacks:
        if isinstance(callback, TrainingBudget):
            callback.start = began
    if trainer.checkpoint_callback is None:
        raise RuntimeError("training needs a ModelCheckpoint callback (callbacks.model_checkpoint)")
    if checkpoint is not None:
        log.info("Resuming %s from %s", output_dir, checkpoint)

    if trainer.is_global_zero:
        write_run_info(cfg, run_dir)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    except BaseException as error:
        stop.restore_signals()
        status = f"stopped by {stop.signal}" if stop.signal else "failed"
        if trainer.is_global_zero:
            try:  # save what can be saved, and let the original error through
                _finish(cfg, trainer, datamodule, history, time.perf_counter() - start, status, error)
            except Exception:
                log.warning("could not write every output after the run stopped", exc_info=True)
        if stop.signal:
            log.info(
                "Stopped by %s at epoch %d, step %d; the last checkpoint, model and metrics are saved. "
                "Resume with: python -m seg.train resume=%s",
                stop.signal, trainer.current_epoch, trainer.global_step, shown(output_dir),
            )  # fmt: skip
            if trainer.is_global_zero:
                stop.requeue()
            raise SystemExit(stop.exit_status) from None
        if stop.data_failure:
            log.info(
                "A data file failed to decode at epoch %d, step %d; the last checkpoint is saved. "
                "Fix or replace the file, then resume with: python -m seg.train resume=%s",
                trainer.current_epoch, trainer.global_step, shown(output_dir),
            )  # fmt: skip
        raise
    stop.restore_signals()
    return _finish(cfg, trainer, datamodule, history, time.perf_counter() - start, "finished")


@dataclass(frozen=True)
class _Tested:
    """What ``_test_and_export`` leaves for the run's record."""

    best_checkpoint: str | None
    model_path: Path | None
    export_method: str | None
    test_metrics: dict[str, float]
    pretrained: dict[str, Any] | None
    network: dict[str, Any]


def _finish(
    cfg: DictConfig,
    trainer: pl.Trainer,
    datamodule: SegmentationDataModule,
    history: MetricsHistory,
    seconds: float,
    status: str,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """Test and export the best weights, then record the run (metrics, classes, curves, loggers,
    model card); return its metrics.

    Also runs after a stop or a failure (``status`` other than ``finished``: no test, no summary).
    Only the rank-0 process writes files (other ranks return ``{}``); every rank takes part in testing.
    """
    run_dir = RunDir.of_trainer(trainer, Path(cfg.paths.output_dir))
    tested = _test_and_export(cfg, trainer, datamodule, run_dir, status == "finished")
    if tested is None:
        return {}
    metrics = _run_metrics(cfg, trainer, datamodule, history, run_dir, tested, seconds, status, error)
    _record_and_notify(cfg, trainer, datamodule, history, run_dir, metrics)
    return metrics


def _test_and_export(
    cfg: DictConfig, trainer: pl.Trainer, datamodule: SegmentationDataModule, run_dir: RunDir, finished: bool
) -> _Tested | None:
    """Test the best checkpoint (a finished run with a test split) on every rank; on rank 0 write
    it as TorchScript. None on the other ranks."""
    pretrained = starting_weights(trainer.lightning_module.net)  # before testing swaps the module
    network = network_summary(trainer.lightning_module.net)
    checkpoint = trainer.checkpoint_callback
    assert checkpoint is not None
    best_path = RunDir.ranked_best(checkpoint)  # the same on every rank
    best = None
    if best_path and Path(best_path).is_file():
        best = SegmentationModule.load_from_checkpoint(best_path, map_location="cpu", weights_only=True)
    test_metrics: dict[str, float] = {}
    if (
        finished
        and best is not None
        and cfg.get("test_after_training", True)
        and datamodule.has_split("test")
    ):
        results = trainer.test(best, datamodule=datamodule, verbose=False)
        test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}
    if not trainer.is_global_zero:
        return None
    model_path, export_method = (
        write_torchscript(best.net, run_dir.model_file) if best is not None else (None, None)
    )
    return _Tested(best_path or None, model_path, export_method, test_metrics, pretrained, network)


def _run_metrics(
    cfg: DictConfig,
    trainer: pl.Trainer,
    datamodule: SegmentationDataModule,
    history: MetricsHistory,
    run_dir: RunDir,
    tested: _Tested,
    seconds: float,
    status: str,
    error: BaseException | None,
) -> dict[str, Any]:
    """The content of the run's metrics file."""
    checkpoint = trainer.checkpoint_callback
    assert checkpoint is not None
    monitor = checkpoint.monitor or DEFAULT_MONITOR
    locations = seg_loggers.where(trainer.loggers)
    return {
        "status": status,
        "stop_reason": stop_reason(trainer, status),
        "error": _error_line(error),
        "monitor": monitor,
        "mode": checkpoint.mode,
        "best": history.best(monitor, checkpoint.mode),
        "final": history.epochs[-1] if history.epochs else None,
        "test": tested.test_metrics or None,
        "validation": datamodule.validation_summary(),  # which frames the val numbers are on
        "pretrained": tested.pretrained,  # None: random initialisation
        "network": tested.network,
        "train_pixels": datamodule.class_pixels("train"),  # the model card's class shares
        "epochs": history.epochs,
        "train_seconds": round(seconds, 1),
        "resumed": bool(cfg.get("resume")),
        "torchscript_method": tested.export_method,  # script, or trace (see seg.inference.formats)
        "paths": {
            "run_dir": run_dir.path,
            "best_checkpoint": tested.best_checkpoint,
            "last_checkpoint": run_dir.last_checkpoint,
            "torchscript": tested.model_path,
            "classes": run_dir.classes,
            "tensorboard": locations.get("tensorboard"),
        },
        "loggers": locations,
    }


def _record_and_notify(
    cfg: DictConfig,
    trainer: pl.Trainer,
    datamodule: SegmentationDataModule,
    history: MetricsHistory,
    run_dir: RunDir,
    metrics: dict[str, Any],
) -> None:
    """Write the run's classes, metrics, curves and model card; hand them to every logger; end a
    finished run with its summary lines."""
    finished = metrics["status"] == "finished"
    datamodule.classes.write(run_dir.classes)
    write_json(run_dir.metrics, metrics)
    curves = None
    if history.epochs:
        shown_keys = ["train/loss_epoch", "val/loss", "val/dice", "val/iou", metrics["monitor"]]
        curves = save_figure(curves_figure(history.epochs, list(dict.fromkeys(shown_keys))), run_dir.curves)
    if finished:
        seg_loggers.log_run_hparams(trainer, cfg, metrics)
    model_path = metrics["paths"]["torchscript"]
    files = [model_path, run_dir.metrics, run_dir.classes, *sorted(run_dir.images.glob("*.png"))]
    seg_loggers.log_run_outputs(trainer.loggers, run_dir.path, metrics, datamodule.class_names, curves, files)
    seg_loggers.finish(trainer.loggers, metrics["status"])
    write_model_card(run_dir)
    if finished:
        log_run_summary(metrics, run_dir)


def network_summary(net: torch.nn.Module) -> dict[str, Any]:
    """The network as the model card describes it: its class, parameter count and the input
    normalisation the TorchScript model applies itself."""
    mean, std = getattr(net, "mean", None), getattr(net, "std", None)
    return {
        "class": f"{type(net).__module__}.{type(net).__qualname__}",
        "parameters": sum(p.numel() for p in net.parameters()),
        "mean": [round(float(v), 6) for v in mean.flatten()] if isinstance(mean, torch.Tensor) else None,
        "std": [round(float(v), 6) for v in std.flatten()] if isinstance(std, torch.Tensor) else None,
    }


def _error_line(error: BaseException | None) -> str | None:
    if error is None or isinstance(error, (KeyboardInterrupt, SystemExit)):
        return None
    return user_message(error) if isinstance(error, SegError) else f"{type(error).__name__}: {error}"
