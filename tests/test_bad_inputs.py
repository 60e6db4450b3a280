"""Every user mistake ends in one line that says what and where, and exit status 2 (a new user's view)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import TINY, compose_train, run_cli
from support.datasets import write_folder

from seg.errors import SegError, user_message
from seg.training.pipeline import train


def _one_error_line(stderr: str) -> str:
    lines = [
        line for line in stderr.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line
    ]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


def _empty(root: Path) -> None:
    root.mkdir(parents=True)


def _no_masks(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    for mask in (root / "train" / "masks").iterdir():
        mask.unlink()
    (root / "train" / "masks").rmdir()


def _image_without_mask(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    (root / "train" / "masks" / "001.png").unlink()


def _mask_without_image(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    (root / "val" / "images" / "000.png").unlink()


def _truncated(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    path = root / "train" / "images" / "001.png"
    path.write_bytes(path.read_bytes()[:100])


def _zero_bytes(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    (root / "train" / "images" / "001.png").write_bytes(b"")


def _text_as_png(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    (root / "train" / "images" / "001.png").write_text("this is a text file")


def _size_mismatch(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    Image.new("L", (32, 16)).save(root / "val" / "masks" / "000.png")


def _label_out_of_range(root: Path) -> None:
    write_folder(root, {"train": 2, "val": 1}, size=32)
    Image.fromarray(np.full((32, 32), 5, dtype=np.uint8)).save(root / "train" / "masks" / "000.png")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_empty, r"no image folder .*/ds/train/images \(expected <root>/train/images/ with masks"),
        (_no_masks, r"no mask folder .*/ds/train/masks for the images in .*/ds/train/images"),
        (_image_without_mask, r"image .*/ds/train/images/001\.png has no mask in .*/ds/train/masks"),
        (_mask_without_image, r"mask .*/ds/val/masks/000\.png has no image in .*/ds/val/images"),
        (_truncated, r"cannot read image .*/ds/train/images/001\.png: "),
        (_zero_bytes, r"image .*/ds/train/images/001\.png is an empty file"),
        (_text_as_png, r"cannot read image .*/ds/train/images/001\.png: cannot identify image file"),
        (_size_mismatch, r"image .*/ds/val/images/000\.png is 32x32 but its mask .*/000\.png is 32x16"),
        (
            _label_out_of_range,
            r"mask .*/ds/train/masks/000\.png holds label value\(s\) \[5\] but there are only 3",
        ),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_bad_data_names_the_file(tmp_path: Path, make: Callable[[Path], None], expected: str) -> None:
    """Each problem a dataset can have stops training before its first step with one message
    naming the file; no checkpoint is written."""
    root = tmp_path / "ds"
    make(root)
    cfg = compose_train(
        ["data=folder", f"data.root={root}", "data.num_classes=3", "data.num_workers=0",
         f"paths.output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    with pytest.raises(SegError) as raised:
        train(cfg)
    assert re.match(expected, user_message(raised.value)), user_message(raised.value)
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_missing_data_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """The command-line promise, once per kind of error: one line, no traceback, status 2."""
    root = tmp_path / "ds"
    args = [
        "seg.train",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=3",
        f"paths.log_dir={tmp_path}",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == (
        f"error: data.root {root} does not exist: expected <root>/train/images/ with masks in "
        "<root>/train/masks/; put the dataset there or pass data.root=DIR"
    )
    assert not (tmp_path / "train").exists() or not list((tmp_path / "train").rglob("*.ckpt"))


@pytest.mark.slow
def test_bad_config_value_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """Every check of a value is tested in-process (tests/training/test_checks.py); this is the
    command's side."""
    result = run_cli(["seg.train", "model.optimizer.lr=-1", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(
        "error: model.optimizer.lr=-1 is not valid: expected a positive number"
    )


@pytest.mark.slow
def test_unknown_group_option_is_one_line_listing_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli(["seg.train", "loss=hinge", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == (
        "error: loss=hinge is not an option of loss: choose one of ce, combo, dice, dice_ce, "
        "dice_lovasz, focal, lovasz, tversky"
    )


@pytest.mark.slow
def test_grayscale_rgba_images_and_16_bit_masks_are_converted(tmp_path: Path, data_cache: Path) -> None:
    root = write_folder(tmp_path / "ds", {"train": 4, "val": 2}, size=32)
    images = sorted((root / "train" / "images").iterdir())
    Image.open(images[0]).convert("L").save(images[0])
    Image.open(images[1]).convert("RGBA").save(images[1])
    mask = root / "train" / "masks" / "002.png"
    Image.fromarray(np.asarray(Image.open(mask)).astype(np.uint16)).save(mask)
    assert Image.open(mask).mode.startswith("I;16")
    cfg = compose_train(
        [*[o for o in TINY if not o.startswith("data.generator")], "data=folder", f"data.root={root}",
         "data.num_classes=3", "data.image_size=32", "trainer.max_epochs=1",
         f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={data_cache}"]
    )  # fmt: skip
    assert train(cfg)["status"] == "finished"


@pytest.mark.slow
def test_predict_with_a_bad_model_file(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x00" * 64)
    result = run_cli(
        ["seg.predict", f"run={model}", f"input={tmp_path}", f"paths.log_dir={tmp_path}"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(f"error: cannot load model {model}")
