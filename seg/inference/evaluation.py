"""Scoring a trained model on a whole split: per-class table, JSON, Markdown and pictures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError
from tqdm import tqdm

from seg.artifacts import atomic_path, write_json
from seg.classes import ClassInfo
from seg.config import CONF_DIR
from seg.data.datamodule import SegmentationDataModule
from seg.errors import SegError, unwrapping_user_errors
from seg.hardware import resolve_device
from seg.inference.predictor import Predictor, load_model
from seg.inference.tta import from_config
from seg.metrics import build_metrics, metric_key, summarize
from seg.overrides import split_override
from seg.reports import tables
from seg.reports.model_card import write_model_card
from seg.reports.pictures import confusion_matrix_figure, sample_panel_figure, save_figure
from seg.rundir import EvalDir, RunDir

log = logging.getLogger(__name__)


#: The loading knobs every data config shares (``conf/data/_loader.yaml``).
LOADER_DEFAULTS = CONF_DIR / "data" / "_loader.yaml"


def data_config(cfg: DictConfig, data_root: str | None = None) -> DictConfig:
    """The data config to evaluate on: a run directory's saved one (read from ``data_root`` when
    given), or the composed one."""
    if not cfg.get("run_dir"):
        return cfg.data
    return run_data_config(RunDir.of(cfg.run_dir), data_root)


def run_data_config(run_dir: RunDir, data_root: str | None = None) -> DictConfig:
    """The data config a training run saved, read from ``data_root`` instead when given."""
    saved = run_dir.saved_config()
    if saved is None:
        raise SegError(f"run_dir {run_dir.path} has no saved config; is it a training run directory?")
    run_cfg = OmegaConf.load(saved)
    # Loading settings added to seg after the run was saved take today's defaults.
    run_cfg.data = OmegaConf.merge(OmegaConf.load(LOADER_DEFAULTS), run_cfg.data)
    if data_root:
        run_cfg.data.root = data_root
    return run_cfg.data


def build_datamodule(data: DictConfig, run_dir: RunDir | None) -> SegmentationDataModule:
    """The data module ``data`` describes; a run saved with other data settings than this version
    of seg takes is one line naming the way around it."""
    try:
        with unwrapping_user_errors():
            return instantiate(data)
    except (InstantiationException, InterpolationKeyError) as error:
        reason = error.__cause__ if isinstance(error, InstantiationException) else error
        if run_dir is None or not isinstance(reason, (TypeError, InterpolationKeyError)):
            raise
        raise SegError(
            f"run_dir {run_dir.path}: its saved data config does not fit this version of seg "
            f"({reason}); evaluate its model with model_path={run_dir.model()} "
            "data=<name> data.root=<dir> instead"
        ) from None


def per_class_table(
    summary: dict[str, float], info: ClassInfo, share: np.ndarray, split: str
) -> list[dict[str, Any]]:
    """One row per class: Dice, IoU, accuracy and the share of the split's pixels it covers."""
    rows = []
    for i, name in enumerate(info.class_names):
        key = metric_key(name)
        rows.append(
            {
                "class": name,
                "dice": summary[f"{split}/dice/{key}"],
                "iou": summary[f"{split}/iou/{key}"],
                "accuracy": summary[f"{split}/accuracy/{key}"],
                "pixel_share": float(share[i]),
            }
        )
    return rows


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


_COLUMNS = [
    tables.Column("class"),
    tables.Column("dice", "Dice", _percent, "right"),
    tables.Column("iou", "IoU", _percent, "right"),
    tables.Column("accuracy", "accuracy", _percent, "right"),
    tables.Column("pixel_share", "pixels", _percent, "right"),
]


def markdown_table(rows: Sequence[dict[str, Any]], means: dict[str, float]) -> str:
    """The per-class table in Markdown (percent), with the means as the last row."""
    footer = {
        "class": "mean",
        "dice": means["dice"],
        "iou": means["iou"],
        "accuracy": means["class_accuracy"],
    }
    table = tables.markdown_table(rows, _COLUMNS, footer=footer)
    return f"{table}\nGlobal pixel accuracy: {tables.cell(means['pixel_accuracy'], _percent)}%\n"


def run_evaluation(cfg: DictConfig) -> float:
    """What ``seg.evaluate`` runs: ``evaluate`` with the command's run directory as the default
    output and a ``data.root=`` given on the command line moving a run's saved data (the composed
    ``data`` is not used with ``run_dir``); returns the mean Dice, for sweepers."""
    data_root = _command_line_data_root() if cfg.get("run_dir") else None
    report = evaluate(cfg, Path(HydraConfig.get().runtime.output_dir), data_root)
    return float(report["mean"]["dice"])


def _command_line_data_root() -> str | None:
    for override in HydraConfig.get().overrides.task:
        key, value = split_override(override)
        if key == "data.root":
            return value
    return None


def evaluate(cfg: DictConfig, default_output: Path, data_root: str | None = None) -> dict[str, Any]:
    """Score ``cfg.model_path`` (or ``cfg.run_dir``'s ``RunDir.model()``) on ``cfg.split``, with a
    run's data read from ``data_root`` when given; write the report (``EvalDir``: a table, its JSON twin,
    pictures) and return its content."""
    if not cfg.get("run_dir") and not cfg.get("model_path"):
        raise SegError(
            "pass run_dir=<training run directory>, or model_path=<model file> with data=<dataset>"
        )
    if cfg.get("run_dir") and not Path(cfg.run_dir).is_dir():
        raise SegError(f"run_dir {cfg.run_dir} does not exist")
    run_dir = RunDir.of(cfg.run_dir) if cfg.get("run_dir") else None
    model_path = Path(cfg.model_path) if cfg.get("model_path") or run_dir is None else run_dir.model()
    model, info, model_path = load_model(model_path, resolve_device(cfg.device))
    split = cfg.split
    if split not in ("train", "val", "test"):
        raise SegError(f"split={split!r} is not valid: expected test, val or train")
    datamodule = build_datamodule(data_config(cfg, data_root), run_dir)
    if info.num_classes != datamodule.num_classes:
        raise SegError(
            f"model {model_path} predicts {info.num_classes} classes but the data has "
            f"{datamodule.num_classes}; evaluate it on the data it was trained for"
        )
    datamodule.prepare_data()
    if not datamodule.has_split(split):
        raise SegError(f"the data in {datamodule.root} has no {split} split; try split=val")
    tta = from_config(cfg.get("tta"))
    predictor = Predictor(
        model, info.num_classes, cfg.device, str(cfg.precision), cfg.tile_size, cfg.tile_overlap, tta
    )
    scores = _score(predictor, datamodule, split, info, cfg.num_samples)
    if cfg.get("output_dir"):
        output = Path(cfg.output_dir)
    else:
        output = run_dir.eval_dir(split) if run_dir else default_output / "eval" / split
    report = {
        "model": model_path,
        "data_root": datamodule.root,
        "split": split,
        "images": scores.images,
        "validation": datamodule.validation_summary() if split == "val" else None,
        "tta": predictor.tta.settings(),
        "precision": predictor.precision,
        "mean": scores.means,
        "per_class": scores.rows,
        "confusion_matrix": scores.confmat.tolist(),
        "class_names": info.class_names,
        "ignore_index": datamodule.ignore_index,
    }
    _write_report(
        EvalDir(output), report, scores, info, datamodule, f"test-time augmentation: {predictor.tta}"
    )
    if run_dir is not None and output == run_dir.eval_dir(split):
        print(f"Model card: {write_model_card(run_dir)} (with these {split} results)", flush=True)
    return report


@dataclass(frozen=True)
class _Scores:
    """What scoring a split found: means, the per-class rows, the confusion matrix, samples."""

    images: int
    means: dict[str, float]
    rows: list[dict[str, Any]]
    confmat: np.ndarray
    samples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]  # name, image, truth, prediction


def _score(
    predictor: Predictor, datamodule: SegmentationDataModule, split: str, info: ClassInfo, num_samples: int
) -> _Scores:
    """Predict every frame of ``split`` and accumulate the metrics; keep the first frames as samples."""
    loader = datamodule.eval_dataloader(split)
    dataset = loader.dataset
    order = [index for batch in loader.batch_sampler for index in batch]
    metrics = build_metrics(info.num_classes, datamodule.ignore_index)
    samples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    seen = 0
    for images, masks in tqdm(loader, desc=f"Evaluating {split}", unit="batch"):
        predictions = predictor.labels(images)
        metrics.update(predictions, masks)
        for k in range(len(images)):
            if len(samples) < num_samples:
                name = Path(dataset.frames.name(order[seen + k])).stem
                image = images[k].permute(1, 2, 0).numpy()
                samples.append((name, image, masks[k].numpy(), predictions[k].numpy()))
        seen += len(images)
    values = metrics.compute()
    summary = summarize(values, info.class_names, split, datamodule.ignore_index)
    confmat = values["confmat"].cpu().numpy()
    share = confmat.sum(1) / max(confmat.sum(), 1)
    means = {
        "dice": summary[f"{split}/dice"],
        "iou": summary[f"{split}/iou"],
        "class_accuracy": summary[f"{split}/accuracy"],
        "pixel_accuracy": summary[f"{split}/pixel_accuracy"],
    }
    return _Scores(len(dataset), means, per_class_table(summary, info, share, split), confmat, samples)


def _write_report(
    files: EvalDir,
    report: dict[str, Any],
    scores: _Scores,
    info: ClassInfo,
    datamodule: SegmentationDataModule,
    augmentation: str,
) -> None:
    """The report as JSON and as a Markdown table, the confusion matrix and the sample panels."""
    split = report["split"]
    write_json(files.metrics, report)
    table = markdown_table(scores.rows, scores.means)
    with atomic_path(files.report) as tmp:
        heading = f"# {split} split of {datamodule.root} ({scores.images} images)"
        if report["validation"] is not None:
            heading += f"\n\nValidation frames: {report['validation']['description']}"
        tmp.write_text(
            f"{heading}\n\nModel: `{report['model']}`, precision: {report['precision']}, "
            f"{augmentation}\n\n{table}"
        )
    title = f"{split}: {scores.images} images"
    save_figure(confusion_matrix_figure(scores.confmat, info.class_names, title), files.confusion_matrix)
    for name, image, target, prediction in scores.samples:
        figure = sample_panel_figure(
            image, target, prediction, info.palette, info.class_names, datamodule.ignore_index, name
        )
        save_figure(figure, files.samples / f"{name}.png")
    print(table, flush=True)
    shown = ", ".join(p.name for p in (files.metrics, files.report, files.confusion_matrix))
    print(f"Report: {files.path}/ ({shown}, {files.samples.name}/)", flush=True)
