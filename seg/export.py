"""Export a trained model: TorchScript, ONNX, int8 ONNX or an exported program.

``seg-export run=<run dir or .ckpt> format=<a key of seg.inference.formats.FORMATS>``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("export")
def main(cfg: DictConfig) -> None:
    from seg.inference.formats import export_from_config

    export_from_config(cfg)


if __name__ == "__main__":
    main()
