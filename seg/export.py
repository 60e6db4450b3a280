"""Export a trained model: TorchScript, ONNX, int8 ONNX or an exported program.

``seg-export model_path=<.ckpt or run dir> format=<a key of seg.inference.formats.FORMATS>``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command
from seg.errors import exit_on_user_error
from seg.inference.formats import export_run
from seg.inference.quantize import Int8Settings


@command("export")
def main(cfg: DictConfig) -> None:
    model, classes = exit_on_user_error(
        lambda: export_run(
            cfg.model_path, cfg.format, cfg.get("output"), Int8Settings(**cfg.int8), cfg.data.root
        )
    )
    print(f"Wrote {model} and {classes}")


if __name__ == "__main__":
    main()
