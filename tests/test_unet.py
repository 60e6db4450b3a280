from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seg.models.unet import UNet


@pytest.mark.parametrize("size", [(64, 64), (32, 96), (50, 70), (17, 33)])
def test_output_has_input_size_and_one_map_per_class(size: tuple[int, int]) -> None:
    net = UNet(in_channels=3, num_classes=5, base_channels=4).eval()
    x = torch.rand(2, 3, *size)
    assert net(x).shape == (2, 5, *size)


def test_grayscale_input() -> None:
    net = UNet(in_channels=1, num_classes=2, base_channels=4)
    assert net(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_base_64_is_the_original_network() -> None:
    net = UNet(in_channels=3, num_classes=13, base_channels=64)
    params = sum(p.numel() for p in net.parameters())
    assert 31e6 <= params <= 35e6
    widths = [block[0].out_channels for block in net.encoders]
    assert widths == [64, 128, 256, 512]
    assert net.middle[0].out_channels == 1024
    up = net.decoders[0].up
    assert (up.kernel_size, up.stride, up.padding, up.output_padding) == ((3, 3), (2, 2), (1, 1), (1, 1))
    assert net.head.kernel_size == (3, 3) and net.head.out_channels == 13


def test_layers_are_created_once_not_in_forward() -> None:
    net = UNet(num_classes=3, base_channels=4)
    before = {name for name, _ in net.named_parameters()}
    net(torch.rand(1, 3, 32, 32))
    assert {name for name, _ in net.named_parameters()} == before


def test_torchscript_matches_eager_and_survives_save_load(tmp_path: Path) -> None:
    net = UNet(num_classes=4, base_channels=4).eval()
    scripted = torch.jit.script(net)
    path = tmp_path / "unet.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    for size in [(32, 32), (40, 56)]:
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=1e-5)


def test_normalisation_uses_mean_and_std() -> None:
    net = UNet(num_classes=2, base_channels=4, mean=[0.2, 0.3, 0.4], std=[0.5, 0.5, 0.5]).eval()
    plain = UNet(num_classes=2, base_channels=4, mean=[0.0] * 3, std=[1.0] * 3).eval()
    plain.load_state_dict(
        {k: v for k, v in net.state_dict().items() if k not in ("mean", "std")}, strict=False
    )
    x = torch.rand(1, 3, 32, 32)
    shifted = (x - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)) / 0.5
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(shifted))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="mean/std"):
        UNet(in_channels=1, mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=">= 1"):
        UNet(num_classes=0)
