"""``python -m seg.export model_path=<.ckpt or run dir> format=torchscript|onnx|exported_program``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import seg.config  # noqa: F401  (registers the config resolvers)
from seg.deploy import export, export_format
from seg.errors import SegError, exit_on_user_error
from seg.inference import load_model
from seg.rundir import RunDir


def checkpoint_of(path: Path) -> tuple[Path, RunDir]:
    """The checkpoint to export and its run: a run directory's best checkpoint, or a ``.ckpt``
    file (whose run is the folder above its checkpoint folder)."""
    if path.is_dir():
        run_dir = RunDir.of(path)
        return run_dir.best_checkpoint(), run_dir
    if path.suffix != ".ckpt":
        raise SegError(f"model_path {path} must be a .ckpt checkpoint or a training run directory")
    return path, RunDir.of(path.parent.parent)


def run(cfg: DictConfig) -> Path:
    chosen = export_format(cfg.format)
    checkpoint, run_dir = checkpoint_of(Path(cfg.model_path))
    net, info, _ = load_model(checkpoint)
    output = Path(cfg.output) if cfg.get("output") else run_dir.export_dir
    path = export(net, output / chosen.file_name, cfg.format)
    classes = info.write(output)
    print(f"Wrote {path} and {classes}")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(lambda: run(cfg))


if __name__ == "__main__":
    main()
