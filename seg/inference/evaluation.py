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
from seg.errors import SegError, building
from seg.hardware import resolve_device
from seg.inference.predictor import Predictor, load_model
from seg.inference.tta import from_config
from seg.metrics import build_metrics, metric_key, summarize
from seg.reports import tables
from seg.reports.model_card import write_model_card
from seg.reports.pictures import confusion_matrix_figure, sample_panel_figure, save_figure
from seg.rundir import EvalDir, RunDir

log = logging.getLogger(__name__)


#: The loading knobs every data config shares (``conf/data/_loader.yaml``).
LOADER_DEFAULTS = CONF_DIR / "data" / "_loader.yaml"


def data_config(cfg: DictConfig, run_dir: RunDir | None) -> DictConfig:
    """The data to evaluate on: the dataset chosen with ``data=<name>``, else the data config the
    model's training run saved (read from ``data.root`` instead, when given)."""
    if "_target_" in cfg.data:
        return cfg.data
    if run_dir is None:
        raise SegError(
            f"run={cfg.run} is not inside a training run, so its data is unknown: add "
            "data=<dataset> data.root=<dir>"
        )
    return run_data_config(run_dir, cfg.data.root)


def run_data_config(run_dir: RunDir, data_root: str | None = None) -> DictConfig:
    """The data config a training run saved, read from ``data_root`` instead when given."""
    run_cfg = run_dir.load_config()
    if run_cfg is None:
        raise SegError(f"run {run_dir.path} has no saved config; is it a training run directory?")
    # Loading settings added to seg after the run was saved take today's defaults.
    run_cfg.data = OmegaConf.merge(OmegaConf.load(LOADER_DEFAULTS), run_cfg.data)
    if data_root:
        run_cfg.data.root = data_root
    return run_cfg.data


def build_datamodule(data: DictConfig, run_dir: RunDir | None) -> SegmentationDataModule:
    """The data module ``data`` describes; a run saved with other data settings than this version
    of seg takes is one line naming the way around it."""
    try:
        with building("data"):
            return instantiate(data)
    except (InstantiationException, InterpolationKeyError) as error:
        reason = error.__cause__ if isinstance(error, InstantiationException) else error
        if run_dir is None or not isinstance(reason, (TypeError, InterpolationKeyError)):
            raise
        raise SegError(
            f"run {run_dir.path}: its saved data config does not fit this version of seg "
            f"({reason}); name the data instead: run={run_dir.path} data=<name> data.root=<dir>"
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
    output; returns the mean Dice, for sweepers."""
    report = evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    return float(report["mean"]["dice"])


def evaluate(cfg: DictConfig, default_output: Path) -> dict[str, Any]:
    """Score ``cfg.run`` (a training run's own model, or a model file) on ``cfg.split`` of its
    data (``data_config``); write the report (``EvalDir``: a table, its JSON twin, pictures) into
    the run's ``eval/<split>`` when the model is the run's own, else under ``default_output``,
    and return its content."""
    model, info, model_path = load_model(cfg.run, resolve_device(cfg.device))
    run_dir = RunDir.holding(cfg.run)
    own_model = run_dir is not None and model_path.resolve() == run_dir.model_file.resolve()
    split = cfg.split
    if split not in ("train", "val", "test"):
        raise SegError(f"split={split!r} is not valid: expected test, val or train")
    datamodule = build_datamodule(data_config(cfg, run_dir), run_dir)
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
        output = run_dir.eval_dir(split) if own_model else default_output / "eval" / split
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
