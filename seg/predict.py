"""Predict masks and overlays for an image or a folder of images.

``seg-predict run=<run dir or model> input=<image or folder> [output=<folder>]``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seg.command import command


@command("predict")
def main(cfg: DictConfig) -> None:
    from seg.inference.image_files import predict

    predict(cfg)


if __name__ == "__main__":
    main()
