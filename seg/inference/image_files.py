"""Predicting masks for image files: class-index PNGs and colour overlays, at the input's size."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from seg.artifacts import atomic_path
from seg.classes import ClassInfo
from seg.data.layouts import IMAGE_EXTENSIONS
from seg.data.reading import open_image, to_channels
from seg.errors import DataError, SegError
from seg.hardware import resolve_device
from seg.inference.predictor import Predictor, load_model
from seg.inference.tta import from_config
from seg.reports.pictures import overlay


@dataclass
class PredictionReport:
    """What a prediction run wrote and what it had to skip (with the reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def list_inputs(source: Path) -> list[Path]:
    """The image files to predict: ``source`` itself, or the images directly inside it."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    raise SegError(f"input {source} does not exist; pass an image file or a folder of images")


def _batches(
    files: Sequence[Path], batch_size: int, in_channels: int, report: PredictionReport
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Read files in order and yield batches of equally sized images; unreadable files are skipped."""
    pending: dict[tuple[int, ...], list[tuple[Path, np.ndarray]]] = {}
    for path in files:
        try:
            image = to_channels(open_image(path, "image"), in_channels)
        except DataError as e:
            report.skipped.append((path, str(e)))
            continue
        group = pending.setdefault(image.shape, [])
        group.append((path, image))
        if len(group) == batch_size:
            yield pending.pop(image.shape)
    yield from pending.values()


def save_mask(labels: np.ndarray, path: Path) -> None:
    """A class-index PNG: 8-bit when the classes fit, else 16-bit."""
    array = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def predict_files(
    predictor: Predictor,
    info: ClassInfo,
    source: Path,
    output: Path,
    batch_size: int = 8,
    alpha: float = 0.5,
) -> PredictionReport:
    """Write ``<stem>.png`` (class indices) and ``<stem>_overlay.png`` for every image in ``source``."""
    if not 0 <= alpha <= 1:
        raise SegError(f"alpha={alpha} is not valid: expected a number between 0 and 1")
    if batch_size < 1:
        raise SegError(f"batch_size={batch_size} is not valid: expected an integer >= 1")
    files = list_inputs(source)
    if not files:
        raise SegError(f"input {source} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    output.mkdir(parents=True, exist_ok=True)
    report = PredictionReport()
    with tqdm(total=len(files), desc="Predicting", unit="image") as progress:
        for batch in _batches(files, batch_size, info.in_channels, report):
            images = torch.from_numpy(np.stack([image for _, image in batch])).permute(0, 3, 1, 2)
            labels = predictor.labels(images).numpy()
            for (path, image), mask in zip(batch, labels, strict=True):
                save_mask(mask, output / f"{path.stem}.png")
                with atomic_path(output / f"{path.stem}_overlay.png") as tmp:
                    Image.fromarray(overlay(image, mask, info.palette, alpha)).save(tmp, format="PNG")
                report.written.append(path)
            progress.update(len(batch))
        progress.update(len(report.skipped))
    return report


def predict(cfg: DictConfig) -> PredictionReport:
    """What ``seg.predict`` runs: ``cfg.run`` (a run or a model file) on ``cfg.input`` (an image
    or a folder), masks and overlays written to ``cfg.output`` (default: the command's run
    directory). Files that cannot be read are listed, then one error names how many."""
    model, info, _ = load_model(cfg.run, resolve_device(cfg.device))
    tta = from_config(cfg.get("tta"))
    predictor = Predictor(
        model, info.num_classes, cfg.device, str(cfg.precision), cfg.tile_size, cfg.tile_overlap, tta
    )
    output = Path(cfg.output) if cfg.get("output") else Path(HydraConfig.get().runtime.output_dir)
    report = predict_files(predictor, info, Path(cfg.input), output, cfg.batch_size, cfg.alpha)
    print(f"Wrote {len(report.written)} mask(s) and overlay(s) to {output}; skipped {len(report.skipped)}.")
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}")
    if report.skipped:
        raise SegError(f"{len(report.skipped)} input file(s) could not be read (listed above)")
    return report
