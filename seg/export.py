"""``python -m seg.export model_path=<.ckpt or run dir> format=torchscript|onnx|exported_program``."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.artifacts import write_json
from seg.deploy import FILE_NAMES, export
from seg.errors import SegError, exit_on_user_error
from seg.inference import load_model


def checkpoint_of(path: Path) -> Path:
    """The checkpoint to export: ``path`` itself, or a run directory's best checkpoint."""
    if path.is_dir():
        metrics = path / "metrics.json"
        if metrics.is_file():
            best = json.loads(metrics.read_text())["paths"].get("best_checkpoint")
            if best and Path(best).is_file():
                return Path(best)
        last = path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise SegError(f"model_path {path} is a folder without metrics.json or checkpoints/last.ckpt")
    if path.suffix != ".ckpt":
        raise SegError(f"model_path {path} must be a .ckpt checkpoint or a training run directory")
    return path


def run(cfg: DictConfig) -> Path:
    checkpoint = checkpoint_of(Path(cfg.model_path))
    net, info, _ = load_model(checkpoint)
    if cfg.format not in FILE_NAMES:
        raise SegError(f"format={cfg.format!r} is not valid: expected one of {', '.join(FILE_NAMES)}")
    output = Path(cfg.output) if cfg.get("output") else checkpoint.parent.parent / "export"
    path = export(net, output / FILE_NAMES[cfg.format], cfg.format)
    write_json(output / "classes.json", info.to_json())
    print(f"Wrote {path} and {output / 'classes.json'}")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(lambda: run(cfg))


if __name__ == "__main__":
    main()
