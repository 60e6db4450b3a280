"""Experiment loggers: building them from the config, and sending them what Lightning does not.

Scalars (losses, Dice and IoU per class) reach every logger through Lightning's ``self.log``.
Pictures, tables, files, hyperparameters with the run's best scores, and the end of a run have
no common Lightning call; the functions below are the one place that knows how each logger
kind holds them, and skip a kind that cannot (CSV holds no pictures, TensorBoard no files):

=============  ======================  =====================  ======================
kind           pictures                tables                 files
=============  ======================  =====================  ======================
TensorBoard    IMAGES tab, per epoch   TEXT tab (Markdown)    -
CSV            -                       ``<key>.csv`` beside   -
                                       ``metrics.csv``
MLflow         images, per step        ``tables/<key>.csv``   artifacts
W&B            media, per epoch        ``wandb.Table``        run files
=============  ======================  =====================  ======================

The builders in ``seg.loggers.builders`` (``mlflow_logger``, ``wandb_logger``, ``CSVLogger``)
turn seg's config (run name, tags, run directory) into each library's terms, stop with one
line when a library is missing or a server does not answer, and continue the same tracking run
when a run directory is resumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from seg.loggers.builders import run_label
from seg.loggers.kinds import for_each, kind_of


@rank_zero_only
def log_image(loggers: Iterable[Logger], key: str, image: np.ndarray, step: int) -> None:
    """An ``(H, W, 3)`` uint8 picture, to every logger that holds pictures."""
    for_each(loggers, key, lambda kind, logger: kind.image(logger, key, image, step))


@rank_zero_only
def log_table(
    loggers: Iterable[Logger], key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """A table (one list per row), to every logger that holds tables."""
    for_each(loggers, key, lambda kind, logger: kind.table(logger, key, columns, rows))


@rank_zero_only
def log_files(loggers: Iterable[Logger], run_dir: Path, names: Sequence[str]) -> None:
    """Files of the run directory, by their paths relative to it, to every logger that holds files."""
    present = [name for name in names if (run_dir / name).is_file()]
    for_each(loggers, "files", lambda kind, logger: kind.files(logger, run_dir, present))


@rank_zero_only
def log_hparams(
    loggers: Iterable[Logger], params: Mapping[str, Any], scores: Mapping[str, float], step: int
) -> None:
    """The run's settings beside its best scores (TensorBoard's HPARAMS tab, MLflow params, W&B config)."""
    params, scores = dict(params), dict(scores)
    for_each(loggers, "hyperparameters", lambda kind, logger: kind.hparams(logger, params, scores, step))


@rank_zero_only
def finish(loggers: Iterable[Logger], status: str) -> None:
    """End every logger's run: ``status`` is ``finished``, ``failed`` or ``stopped by <signal>``."""
    for_each(loggers, "the end of the run", lambda kind, logger: kind.finish(logger, status))


def log_run_outputs(
    loggers: Iterable[Logger],
    run_dir: Path,
    metrics: Mapping[str, Any],
    class_names: Sequence[str],
    curves: Path | None,
    files: Sequence[Path | None],
) -> None:
    """What the run leaves, to every logger that holds it: the curves picture, the per-class scores
    of the best epoch (and of the test) as the table ``per_class``, and ``files`` of the run dir."""
    from PIL import Image

    from seg.metrics import metric_key

    loggers = list(loggers)
    epochs = metrics.get("epochs") or []
    if curves is not None and curves.is_file() and epochs:
        log_image(loggers, "curves", np.asarray(Image.open(curves).convert("RGB")), epochs[-1]["epoch"])
    best, test = metrics.get("best") or {}, metrics.get("test") or {}
    if best:
        stages = [("val", best)] + ([("test", test)] if test else [])
        scores = [(stage, values, m) for stage, values in stages for m in ("dice", "iou", "accuracy")]
        columns = ["class"] + [f"{stage} {m}" for stage, _, m in scores]
        rows = [[name] + [v.get(f"{s}/{m}/{metric_key(name)}") for s, v, m in scores] for name in class_names]
        log_table(loggers, "per_class", columns, rows)
    names = [
        str(path.relative_to(run_dir)) for path in files if path is not None and path.is_relative_to(run_dir)
    ]
    log_files(loggers, run_dir, names)


def where(loggers: Iterable[Logger]) -> dict[str, Any]:
    """Where each logger keeps this run, by kind (for the run's metrics file and the final report)."""
    found: dict[str, Any] = {}
    for logger in loggers:
        kind = kind_of(logger)
        try:
            location = kind.where(logger)
        except Exception as error:  # a tracker gone must not cost the run's metrics file
            location = f"unknown ({type(error).__name__}: {error})"
        if location is not None:
            found[kind.name] = location
    return found


def report_lines(locations: Mapping[str, Any], shown: Callable[[str], str] = str) -> list[str]:
    """How to look at each logger's record of the run, one line per kind; ``shown`` formats paths."""
    lines = []
    if "tensorboard" in locations:
        lines.append(f"TensorBoard:     tensorboard --logdir {shown(locations['tensorboard'])}")
    if "csv" in locations:
        lines.append(f"CSV:             {shown(locations['csv'])}")
    mlflow = locations.get("mlflow")
    if isinstance(mlflow, dict):
        uri, run = mlflow["tracking_uri"], mlflow["run_id"]
        if urlparse(uri).scheme in ("http", "https"):
            lines.append(
                f"MLflow:          {uri.rstrip('/')}/#/experiments/{mlflow['experiment_id']}/runs/{run}"
            )
        else:
            lines.append(f"MLflow:          mlflow ui --backend-store-uri {uri}  (run {run})")
    wandb = locations.get("wandb")
    if isinstance(wandb, dict):
        if wandb["offline"]:
            lines.append(f"W&B (offline):   wandb sync {shown(wandb['dir'])}")
        else:
            lines.append(f"W&B:             {wandb['url']}")
    return lines


def hparams_scores(monitor: str, best: dict[str, float]) -> dict[str, float]:
    """The HPARAMS scores of a run's best epoch: ``hp/best_<monitor>`` (what chose the epoch), and
    the other validation means at that epoch as ``hp/<metric>_at_best``."""
    label = monitor.replace("/", "_")
    scores = {f"hp/best_{label}": best.get(monitor, math.nan)}
    for key in ("val/dice", "val/iou"):
        if key != monitor:
            scores[f"hp/{key.replace('/', '_')}_at_best"] = best.get(key, math.nan)
    return scores


def log_run_hparams(trainer: pl.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """This run's settings beside its best scores, for every logger (TensorBoard's HPARAMS tab...)."""
    from seg.metrics import DEFAULT_MONITOR

    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}." if key != "_target_" else prefix)
                if key == "_target_":
                    flat[prefix.rstrip(".") or "target"] = value.rsplit(".", 1)[-1]
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix.rstrip(".")] = node

    for group in ("model", "loss", "scheduler"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            walk(OmegaConf.to_container(node, resolve=True), f"{group}.")
    for key in ("data.batch_size", "data.image_size", "trainer.max_epochs", "trainer.precision", "seed"):
        flat[key] = OmegaConf.select(cfg, key)
    flat["data"] = Path(str(cfg.data.get("root", ""))).name
    flat["name"] = run_label(cfg.get("name"), cfg.paths.output_dir)
    flat["tags"] = ", ".join(cfg.get("tags") or [])
    best, test = metrics["best"] or {}, metrics["test"] or {}
    scores = hparams_scores(metrics.get("monitor") or DEFAULT_MONITOR, best)
    if "test/dice" in test:
        scores["hp/test_dice"] = test["test/dice"]
    params = {k: v for k, v in flat.items() if v is not None}
    log_hparams(trainer.loggers, params, scores, trainer.global_step)
