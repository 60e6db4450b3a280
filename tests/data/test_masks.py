"""A tiny real training on generated data in every format the data configs describe."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from PIL import Image
from support import ONE_EPOCH, compose_train
from support.datasets import (
    CITYSCAPES_PALETTE,
    binary_255,
    label_map,
    write_folder,
    write_pairs,
)
from support.probes import DecodedMasks

from seg.training.pipeline import train


def _train(
    tmp_path: Path, *overrides: str, output_dir: Path | None = None, callbacks: Sequence[pl.Callback] = ()
) -> dict:
    out = output_dir or tmp_path / "run"
    cfg = compose_train([*ONE_EPOCH, *overrides, f"paths.output_dir={out}", f"paths.data_dir={tmp_path}"])
    return train(cfg, callbacks=callbacks)


def _blocks(class_1_rows: int, compress_level: int) -> Image.Image:
    """A 32x32 index mask: class 2 on rows 0-1, class 1 on the next ``class_1_rows``, 0 below."""
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:2] = 2
    mask[2 : 2 + class_1_rows] = 1
    return Image.fromarray(mask)


def _loss_weights(metrics: dict) -> list[float]:
    """The class weights of the loss of the run's best checkpoint, as the module rebuilds it."""
    from seg.lightning_module import SegmentationModule

    module = SegmentationModule.load_from_checkpoint(
        metrics["paths"]["best_checkpoint"], map_location="cpu", weights_only=True
    )
    return module.loss_fn.class_weights.tolist()


@pytest.mark.parametrize("edit", ["new size and time", "same size and time"])
def test_median_frequency_weights_reach_the_loss_and_follow_a_mask_edited_in_place(
    tmp_path: Path, edit: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Index masks in a folder give SegNet's weights, by hand: four masks of 32x32 pixels, each
    with 64 px of class 2, 192 of class 1 and 768 of class 0, have frequencies 0.75, 0.1875 and
    0.0625 (every class is in every image), median 0.1875, so weights [0.25, 1, 3]. Rewriting one
    mask in place with class 1 on 448 px (class 0 on 512) makes them 2816/4096, 1024/4096 and
    256/4096: weights [0.25 / 0.6875, 1, 4], and the second run says why it recomputed them.
    The edit keeps the size and the modification time in the second case (uncompressed PNGs, the
    time put back with os.utime), where only the content digest can tell."""
    level = 0 if edit == "same size and time" else 6
    root = write_folder(tmp_path / "ds", {"train": 4, "val": 2, "test": 2}, size=32)
    for mask in (root / "train/masks").iterdir():
        _blocks(6, level).save(mask, compress_level=level)
    args = ["data=folder", f"data.root={root}", "data.num_classes=3", "loss=ce",
            "loss.class_weights=median_frequency"]  # fmt: skip
    first = _train(tmp_path, *args)
    assert _loss_weights(first) == pytest.approx([0.25, 1.0, 3.0], abs=1e-4)

    edited = root / "train/masks/000.png"
    before = edited.stat()
    _blocks(14, level).save(edited, compress_level=level)
    if edit == "same size and time":
        assert edited.stat().st_size == before.st_size
        os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        assert edited.stat().st_size != before.st_size
        os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO, logger="seg.data.cache"):
        second = _train(tmp_path, *args, output_dir=tmp_path / "run2")
    assert _loss_weights(second) == pytest.approx([0.25 / 0.6875, 1.0, 4.0], abs=1e-4)
    said = [r.getMessage() for r in caplog.records if r.name == "seg.data.cache"]
    assert said == [
        "class weights: 1 of 4 training masks changed since they were cached (train/masks/000.png); "
        "recomputing"
    ]


def test_folder_with_colour_masks(tmp_path: Path) -> None:
    """Colour PNG masks train as the class indices they were painted from, pixel for pixel
    (lossless files need no JPEG clean-up: without it the 3x3 majority filter would relabel an
    isolated pixel or two)."""
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    root = write_folder(tmp_path / "ds", {"train": 8, "val": 2}, size=32, palette=palette)
    decoded = DecodedMasks()
    metrics = _train(
        tmp_path, "data=folder", f"data.root={root}", "data.num_classes=3", f"data.palette={palette}",
        "data.mask_format.denoise=false", callbacks=[decoded],
    )  # fmt: skip
    classes = json.loads(Path(metrics["paths"]["classes"]).read_text())
    assert classes["palette"] == palette
    truth = [label_map(i + 100 * len("train"), 32, 3) for i in range(8)]
    assert set(np.unique(np.stack(truth)).tolist()) == {0, 1, 2}  # every colour is there to read
    for mask, labels in zip(decoded.masks, truth, strict=True):
        np.testing.assert_array_equal(mask, labels)


def test_cityscapes_pairs(tmp_path: Path) -> None:
    """Side-by-side JPEG pairs train on the labels drawn in their right halves: at least 95% of
    every mask's pixels decode to the class they were drawn with (JPEG blurs colour edges; the
    measured share is 95-100%), with Cityscapes' classes, colours and ignore index."""
    truth = write_pairs(tmp_path / "pairs", {"train": 6, "val": 2}, size=64)
    decoded = DecodedMasks()
    metrics = _train(
        tmp_path, "data=cityscapes_pairs", f"data.root={tmp_path / 'pairs'}", callbacks=[decoded]
    )
    assert "val/dice/road" in metrics["best"]
    classes = json.loads(Path(metrics["paths"]["classes"]).read_text())
    assert classes["ignore_index"] == 255 and classes["palette"] == CITYSCAPES_PALETTE
    agreement = [
        float((mask == labels).mean()) for mask, labels in zip(decoded.masks, truth["train"], strict=True)
    ]
    assert min(agreement) >= 0.95, agreement


def test_cityscapes_pairs_with_13_colour_clusters(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", {"train": 6, "val": 2}, size=32)
    metrics = _train(tmp_path, "data=cityscapes_pairs_kmeans", f"data.root={tmp_path / 'pairs'}")
    classes = json.loads(Path(metrics["paths"]["classes"]).read_text())
    assert classes["num_classes"] == 13 and len(classes["palette"]) == 13
    assert classes["ignore_index"] is None
    # The fitted clusters are cached and reused by the next run.
    cached = list((tmp_path / "cache").glob("kmeans-*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["value"]["centres"] == classes["palette"]
    # Every cluster colour lies near a true label colour.
    distances = [
        min(np.abs(np.array(c) - np.array(p)).sum() for p in CITYSCAPES_PALETTE) for c in classes["palette"]
    ]
    assert np.median(distances) < 30


@pytest.mark.slow
def test_folder_with_0_255_masks_trains_through_a_value_mapping(tmp_path: Path) -> None:
    """Binary masks stored as 0/255 PNGs (Carvana, most medical sets) train once
    ``data.mask_format.mask_values`` maps 255 to the foreground class, and the model learns it."""
    root = write_folder(
        tmp_path / "ds", {"train": 16, "val": 4, "test": 4}, num_classes=2, size=32, encode=binary_255,
        learnable=True,
    )  # fmt: skip
    metrics = _train(
        tmp_path, "data=folder", f"data.root={root}", "data.num_classes=2",
        "data.class_names=[background,foreground]", "data.mask_format.mask_values={0:0,255:1}",
        "model.net.base_channels=8", "model.optimizer.lr=3e-3", "trainer.max_epochs=3",
    )  # fmt: skip
    # Chance: the best constant answer. Calling every pixel foreground scores 2p / (1 + p) on the
    # foreground (p: its share of the pixels), calling none scores 0. The model must at least
    # halve chance's distance to a perfect score.
    for split, key in (("val", "best"), ("test", "test")):
        masks = np.stack([np.asarray(Image.open(path)) for path in (root / split / "masks").iterdir()])
        share = (masks == 255).mean()
        chance = 2 * share / (1 + share)
        dice = metrics[key][f"{split}/dice/foreground"]
        assert dice > 0.85 and 1 - dice < (1 - chance) / 2, (chance, metrics[key])
