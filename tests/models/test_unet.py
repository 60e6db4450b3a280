from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seg.errors import OptionError
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


def conv_block_params(i: int, o: int) -> int:
    """Two bias-free 3x3 convolutions and two batch norms (weight and bias each)."""
    return 9 * i * o + 2 * o + 9 * o * o + 2 * o


def test_bilinear_parameter_count_worked_out_by_hand() -> None:
    encoders = sum(conv_block_params(i, o) for i, o in [(3, 64), (64, 128), (128, 256), (256, 512)])
    middle = conv_block_params(512, 1024)
    ups = [(1024, 512), (512, 256), (256, 128), (128, 64)]
    # each decoder: a 1x1 convolution with bias halves the channels, then a conv block on the concat
    decoders = sum(i * o + o + conv_block_params(2 * o, o) for i, o in ups)
    head = 9 * 64 * 13 + 13
    assert encoders + middle + decoders + head == 28_956_109
    bilinear = UNet(in_channels=3, num_classes=13, base_channels=64, upsample="bilinear")
    transpose = UNet(in_channels=3, num_classes=13, base_channels=64)
    assert sum(p.numel() for p in bilinear.parameters()) == 28_956_109
    # a 3x3 transposed convolution has 9 weights where the 1x1 convolution has one
    assert sum(p.numel() for p in transpose.parameters()) - 28_956_109 == sum(8 * i * o for i, o in ups)


@pytest.mark.parametrize("size", [(17, 33), (50, 70), (1, 9)])
def test_bilinear_output_has_input_size_on_odd_sizes(size: tuple[int, int]) -> None:
    net = UNet(in_channels=3, num_classes=5, base_channels=4, upsample="bilinear").eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, *size)).shape == (2, 5, *size)


def test_bilinear_convolves_before_upsampling_with_the_same_result() -> None:
    """The 1x1 convolution commutes with bilinear x2 upsampling (bias included: the interpolation
    weights sum to one), so running it at the low resolution changes nothing but the cost."""
    torch.manual_seed(0)
    up = UNet(num_classes=2, base_channels=4, upsample="bilinear").decoders[0].up
    conv = up[0]
    x = torch.randn(2, conv.in_channels, 5, 7)
    upsample_first = conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
    with torch.no_grad():
        torch.testing.assert_close(up(x), upsample_first.detach(), atol=1e-6, rtol=1e-5)


def test_dropout_is_active_only_in_training_mode() -> None:
    torch.manual_seed(0)
    net = UNet(num_classes=3, base_channels=4, dropout=0.5)
    plain = UNet(num_classes=3, base_channels=4)
    plain.load_state_dict(net.state_dict())  # dropout adds no parameters or buffers
    x = torch.rand(2, 3, 32, 32)
    net.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), atol=0, rtol=0)
    # In training mode the middle block's activations are dropped, differently at each call;
    # only the dropout layer may differ from the plain network (the batch norms see the same batch).
    net.train(), plain.train()
    with torch.no_grad():
        first, second, reference = net(x), net(x), plain(x)
    assert not torch.allclose(first, second) and not torch.allclose(first, reference)
    middle = net.middle(torch.rand(1, 32, 4, 4)).detach()
    dropped = net.dropout(middle)
    kept = dropped != 0
    assert 0.3 < 1 - kept[middle != 0].float().mean().item() < 0.7  # about half of them zeroed
    torch.testing.assert_close(dropped[kept], 2 * middle[kept])  # the rest scaled by 1 / (1 - p)


def test_layers_are_created_once_not_in_forward() -> None:
    net = UNet(num_classes=3, base_channels=4)
    before = {name for name, _ in net.named_parameters()}
    net(torch.rand(1, 3, 32, 32))
    assert {name for name, _ in net.named_parameters()} == before


@pytest.mark.parametrize("options", [{}, {"upsample": "bilinear", "dropout": 0.3}])
def test_torchscript_matches_eager_and_survives_save_load(tmp_path: Path, options: dict) -> None:
    net = UNet(num_classes=4, base_channels=4, **options).eval()
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
    with pytest.raises(OptionError, match=r"^num_classes=0 is not valid: expected an integer >= 1$"):
        UNet(num_classes=0)
    with pytest.raises(OptionError, match=r"^base_channels=True is not valid"):
        UNet(base_channels=True)
    with pytest.raises(
        OptionError, match=r"^upsample='nearest' is not valid: expected transpose or bilinear$"
    ):
        UNet(upsample="nearest")
    with pytest.raises(OptionError, match=r"^dropout=1.0 is not valid: expected a number in \[0, 1\)$"):
        UNet(dropout=1.0)
