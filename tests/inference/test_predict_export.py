"""seg.predict and seg.export as users run them, and the inference helpers behind them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import cli_ok, run_cli
from support.models import assert_export_matches_eager
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from seg.inference.predictor import Predictor, load_model
from seg.models.unet import UNet


@pytest.mark.slow
def test_predict_keeps_sizes_and_names_the_corrupt_file(cli_run: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a": (64, 64), "b": (70, 90), "c": (64, 64), "big": (300, 200)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(inputs / f"{name}.png")
    Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(inputs / "gray.jpg")
    sizes["gray"] = (40, 48)
    (inputs / "corrupt.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    result = run_cli(
        ["seg.predict", f"run={cli_run}", f"input={inputs}", f"output={out}", "tile_size=128"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Wrote 5 mask(s) and overlay(s)" in result.stdout
    assert "corrupt.png" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "error: 1 input file(s) could not be read (listed above)"
    for name, (h, w) in sizes.items():
        with Image.open(out / f"{name}.png") as mask, Image.open(out / f"{name}_overlay.png") as over:
            assert mask.size == (w, h) and over.size == (w, h)
            assert mask.mode == "L" and over.mode == "RGB"
            assert np.asarray(mask).max() < 13


@pytest.mark.slow
def test_predict_without_classes_json_uses_generated_names(cli_run: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "model.pt"
    lonely.write_bytes((cli_run / "model.pt").read_bytes())
    _, info, _ = load_model(lonely)
    assert info.num_classes == 13 and info.class_names[0] == "class_0"


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "onnx"])
def test_export_matches_eager_on_two_sizes(fmt: str, upsample: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=5, base_channels=4, upsample=upsample, dropout=0.2)
    assert_export_matches_eager(net, fmt, tmp_path, [(1, 3, 32, 48), (3, 3, 64, 64)])


@pytest.mark.slow
def test_export_cli_writes_model_and_classes(cli_run: Path, tmp_path: Path) -> None:
    cli_ok(["seg.export", f"run={cli_run}", "format=torchscript", f"output={tmp_path}"], cwd=tmp_path)
    assert json.loads((tmp_path / "classes.json").read_text())["num_classes"] == 13
    assert torch.jit.load(str(tmp_path / "model.pt"))(torch.rand(1, 3, 48, 32)).shape == (1, 13, 48, 32)


def test_tiles_blend_without_seams() -> None:
    # A per-pixel model gives the same answer tiled or not, whatever the blending weights.
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, kernel_size=1)
    images = torch.randint(0, 255, (2, 3, 100, 70), dtype=torch.uint8)
    whole = Predictor(model, 4, precision="32", tile_size=None).probabilities(images)
    tiled = Predictor(model, 4, precision="32", tile_size=32, tile_overlap=0.5).probabilities(images)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_tensorboard_has_images_and_hparams(trained_run: dict) -> None:
    events = EventAccumulator(str(trained_run["dir"] / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = set(events.Tags()["images"])
    assert {"val/predictions", "val/confusion_matrix"} <= images
    assert len(events.Images("val/predictions")) == 10  # one per epoch, same images each time
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert {"model.optimizer.lr", "model.net.base_channels", "loss", "data.batch_size"} <= set(logged)
    assert "hp/best_val_dice" in events.Tags()["scalars"]
    for name in ("val_predictions.png", "val_confusion_matrix.png", "curves.png"):
        assert (trained_run["dir"] / "images" / name).is_file()
