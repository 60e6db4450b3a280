"""Predict masks and overlays for an image or a folder of images.

``seg-predict model_path=<model or run dir> input=<image or folder> [output=<folder>]``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seg.command import command
from seg.errors import SegError, exit_on_user_error
from seg.hardware import resolve_device, tune_allocator
from seg.inference.image_files import PredictionReport, predict_files
from seg.inference.predictor import Predictor, load_model
from seg.inference.tta import from_config


def run(cfg: DictConfig) -> PredictionReport:
    model, info, _ = load_model(cfg.model_path, resolve_device(cfg.device))
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


@command("predict")
def main(cfg: DictConfig) -> None:
    tune_allocator()  # full frames: batches of large activations, allocated anew at every call
    exit_on_user_error(lambda: run(cfg))


if __name__ == "__main__":
    main()
