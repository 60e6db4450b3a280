"""A tiny real training on generated data in every format the data configs describe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train
from fixtures import CITYSCAPES_PALETTE, binary_255, write_folder, write_pairs
from PIL import Image

from seg.training.pipeline import train

FAST = [
    "data.num_workers=0",
    "data.batch_size=4",
    "data.image_size=32",
    "model.net.base_channels=4",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _train(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_train(
        [*FAST, *overrides, f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path}"]
    )
    return train(cfg)


def test_folder_with_index_masks_and_median_frequency_weights(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", {"train": 8, "val": 2, "test": 2}, size=32)
    metrics = _train(
        tmp_path, "data=folder", f"data.root={root}", "data.num_classes=3", "loss=dice_ce",
        "loss.class_weights=median_frequency",
    )  # fmt: skip
    assert metrics["test"]["test/dice"] >= 0
    checkpoint = torch.load(metrics["paths"]["best_checkpoint"], map_location="cpu", weights_only=True)
    weights = checkpoint["hyper_parameters"]["loss"]["class_weights"]
    assert len(weights) == 3 and all(w > 0 for w in weights)


def test_folder_with_colour_masks(tmp_path: Path) -> None:
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    root = write_folder(tmp_path / "ds", {"train": 8, "val": 2}, size=32, palette=palette)
    metrics = _train(
        tmp_path, "data=folder", f"data.root={root}", "data.num_classes=3", f"data.palette={palette}"
    )
    classes = json.loads(Path(metrics["paths"]["classes"]).read_text())
    assert classes["palette"] == palette


def test_cityscapes_pairs(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", {"train": 6, "val": 2}, size=32)
    metrics = _train(tmp_path, "data=cityscapes_pairs", f"data.root={tmp_path / 'pairs'}")
    assert "val/dice/road" in metrics["best"]
    classes = json.loads(Path(metrics["paths"]["classes"]).read_text())
    assert classes["ignore_index"] == 255 and classes["palette"] == CITYSCAPES_PALETTE


def test_cityscapes_pairs_with_13_colour_clusters(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", {"train": 6, "val": 2}, size=32)
    metrics = _train(tmp_path, "data=cityscapes_pairs_kmeans", f"data.root={tmp_path / 'pairs'}")
    classes = json.loads(Path(metrics["paths"]["classes"]).read_text())
    assert classes["num_classes"] == 13 and len(classes["palette"]) == 13
    assert classes["ignore_index"] is None
    # The fitted clusters are cached and reused by the next run.
    cached = list((tmp_path / "cache").glob("kmeans-*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["centres"] == classes["palette"]
    # Every cluster colour lies near a true label colour.
    distances = [
        min(np.abs(np.array(c) - np.array(p)).sum() for p in CITYSCAPES_PALETTE) for c in classes["palette"]
    ]
    assert np.median(distances) < 30


@pytest.mark.slow
def test_folder_with_0_255_masks_trains_through_a_value_mapping(tmp_path: Path) -> None:
    """Binary masks stored as 0/255 PNGs (Carvana, most medical sets) train once
    ``data.decoder.mask_values`` maps 255 to the foreground class, and the model learns it."""
    root = write_folder(
        tmp_path / "ds", {"train": 16, "val": 4, "test": 4}, num_classes=2, size=32, encode=binary_255,
        learnable=True,
    )  # fmt: skip
    metrics = _train(
        tmp_path, "data=folder", f"data.root={root}", "data.num_classes=2",
        "data.class_names=[background,foreground]", "data.decoder.mask_values={0:0,255:1}",
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
