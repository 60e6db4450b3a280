"""Test-time augmentation: flips and scales averaged in probability space, with tiles and every
model format, and from the command line of seg.evaluate and seg.predict."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from support import CONF_DIR, cli_ok
from torch import nn

from seg.errors import SegError
from seg.inference.formats import FORMATS, export
from seg.inference.predictor import Predictor, load_model
from seg.inference.tta import PLAIN, TTA, from_config
from seg.models.unet import UNet


def _tta(*overrides: str) -> TTA:
    """The TTA a ``seg.predict`` command line with ``overrides`` builds."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return from_config(compose(config_name="predict", overrides=list(overrides)).tta)


def _unet(num_classes: int = 5) -> nn.Module:
    """A tiny random U-Net whose head is scaled up and unbiased, so that its probabilities are
    far from uniform (where the mean of probabilities and the mean of logits would agree) and its
    labels vary from pixel to pixel."""
    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=num_classes, base_channels=4).eval()
    with torch.no_grad():
        net.head.weight.mul_(100)
        net.head.bias.zero_()
    return net


def _plain(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).softmax(1)


def test_flip_on_a_mirror_symmetric_input_keeps_the_plain_labels() -> None:
    # Symmetric 3x3 kernels and symmetric zero padding make the network mirror-equivariant, so on
    # an image equal to its own left-right mirror the mirrored view adds nothing. The image is not
    # symmetric top-bottom, so flipping the wrong axis would change the result.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    with torch.no_grad():
        for conv in (net[0], net[2]):
            conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    half = torch.randint(0, 256, (2, 3, 40, 24), dtype=torch.uint8)
    images = torch.cat([half, half.flip(-1)], dim=-1)
    plain = Predictor(net, 4, precision="32", tile_size=None)
    flipped = Predictor(net, 4, precision="32", tile_size=None, tta=_tta("tta=flip"))
    torch.testing.assert_close(flipped.probabilities(images), plain.probabilities(images), atol=1e-6, rtol=0)
    assert torch.equal(flipped.labels(images), plain.labels(images))


def test_flip_averages_the_plain_and_the_mirrored_probabilities() -> None:
    net = _unet()
    images = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    x = images.float() / 255
    expected = (_plain(net, x) + _plain(net, x.flip(-1)).flip(-1)) / 2
    got = Predictor(net, 5, precision="32", tile_size=None, tta=_tta("tta=flip")).probabilities(images)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    plain = Predictor(net, 5, precision="32", tile_size=None).probabilities(images)
    assert (got - plain).abs().max() > 0.1  # the random U-Net is far from mirror-symmetric
    assert (got.argmax(1) != plain.argmax(1)).float().mean() > 0.1
    with torch.no_grad():
        mean_of_logits = ((net(x) + net(x.flip(-1)).flip(-1)) / 2).softmax(1)
    assert (got - mean_of_logits).abs().max() > 1e-2


def test_flip_scale_at_scale_one_is_flip_and_views_stay_probabilities() -> None:
    net = _unet()
    images = torch.randint(0, 256, (1, 3, 40, 56), dtype=torch.uint8)
    flip = Predictor(net, 5, precision="32", tile_size=None, tta=_tta("tta=flip"))
    one = Predictor(net, 5, precision="32", tile_size=None, tta=_tta("tta=flip_scale", "tta.scales=[1.0]"))
    assert torch.equal(one.probabilities(images), flip.probabilities(images))
    # A per-pixel model on a one-colour image predicts the same at every scale and in the mirror,
    # so the mean over the six views of flip_scale is the plain prediction, normalised.
    pixelwise = nn.Conv2d(3, 5, kernel_size=1).eval()
    flat = torch.full((1, 3, 40, 56), 90, dtype=torch.uint8)
    scaled = Predictor(pixelwise, 5, precision="32", tile_size=None, tta=_tta("tta=flip_scale"))
    plain = Predictor(pixelwise, 5, precision="32", tile_size=None)
    assert scaled.tta.num_views == 6
    torch.testing.assert_close(scaled.probabilities(flat), plain.probabilities(flat), atol=1e-6, rtol=0)


def test_flip_with_tiles_matches_flip_on_the_whole_image() -> None:
    """TTA runs per tile. The tile grid here is its own mirror (starts 0 and 32 of 96 pixels), so
    tiled flip TTA is exactly the mean of the tiled prediction and the mirrored tiled prediction
    of the mirror, and, by the triangle inequality, it is within the plain tiling's own error of
    flip TTA on the whole image: TTA adds no error of its own to tiling."""
    net = _unet()
    images = torch.randint(0, 256, (1, 3, 80, 96), dtype=torch.uint8)
    flip = _tta("tta=flip")
    whole = Predictor(net, 5, precision="32", tile_size=None, tta=flip).probabilities(images)
    tiled = Predictor(net, 5, precision="32", tile_size=64, tile_overlap=0.5, tta=flip).probabilities(images)
    plain_whole = Predictor(net, 5, precision="32", tile_size=None)
    plain_tiled = Predictor(net, 5, precision="32", tile_size=64, tile_overlap=0.5)
    mirror = images.flip(-1)
    by_hand = (plain_tiled.probabilities(images) + plain_tiled.probabilities(mirror).flip(-1)) / 2
    torch.testing.assert_close(tiled, by_hand, atol=1e-5, rtol=0)
    tiling_error = (
        (plain_tiled.probabilities(images) - plain_whole.probabilities(images)).abs()
        + (plain_tiled.probabilities(mirror) - plain_whole.probabilities(mirror)).abs().flip(-1)
    ) / 2
    assert ((tiled - whole).abs() <= tiling_error + 1e-5).all()
    assert torch.allclose(tiled.sum(1), torch.ones(1, 80, 96), atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "onnx"])
def test_flip_scale_runs_on_every_exported_format(fmt: str, tmp_path: Path) -> None:
    # 48x80 scaled by 0.75 and 1.25 is 36x60 and 60x100: rounded to multiples of 16 (32x64,
    # 64x96), which the ONNX and .pt2 models need.
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip('onnxruntime is not installed (pip install -e ".[export]")')
    net = _unet()
    path = export(net, tmp_path / FORMATS[fmt].file_name, fmt)
    (tmp_path / "classes.json").write_text(json.dumps({"class_names": list("abcde")}))
    loaded, _, _ = load_model(path)
    images = torch.randint(0, 256, (2, 3, 48, 80), dtype=torch.uint8)
    tta = _tta("tta=flip_scale")
    assert [tta.scaled_size(48, s) for s in tta.scales] == [32, 48, 64]
    eager = Predictor(net, 5, precision="32", tile_size=None, tta=tta).probabilities(images)
    got = Predictor(loaded, 5, precision="32", tile_size=None, tta=tta).probabilities(images)
    torch.testing.assert_close(got, eager, atol=1e-4, rtol=0)


def test_bad_scales_are_one_line() -> None:
    with pytest.raises(SegError, match=r"tta.scales=\[0.0\] is not valid"):
        _tta("tta=flip_scale", "tta.scales=[0]")
    assert str(_tta()) == str(PLAIN) == "none"
    assert str(_tta("tta=flip_scale")) == "flip at scales 0.75, 1, 1.25"


@pytest.mark.slow
def test_evaluate_accepts_tta_flip_and_records_it(cli_run: Path, tmp_path: Path) -> None:
    cli_ok(
        ["seg.evaluate", f"run={cli_run}", "tta=flip", "num_samples=0", f"output_dir={tmp_path}"],
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["tta"] == {"flip": True, "scales": [1.0], "views": 2}
    assert "test-time augmentation: flip" in (tmp_path / "metrics.md").read_text()


@pytest.mark.slow
def test_predict_accepts_tta_flip_on_a_checkpoint(cli_run: Path, tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    checkpoint = cli_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "out"
    cli_ok(
        [
            "seg.predict",
            f"run={checkpoint}",
            f"input={tmp_path / 'a.png'}",
            f"output={out}",
            "tta=flip",
            "precision=32",
        ],
        cwd=tmp_path,
    )
    model, _, _ = load_model(checkpoint)
    predictor = Predictor(model, 13, precision="32", tile_size=None, tta=_tta("tta=flip"))
    expected = predictor.labels(torch.from_numpy(image).permute(2, 0, 1)[None])[0].numpy()
    with Image.open(out / "a.png") as mask:
        assert np.array_equal(np.asarray(mask), expected)
