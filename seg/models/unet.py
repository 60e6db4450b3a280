"""The classic U-Net (Ronneberger et al., 2015) as a plain, scriptable ``nn.Module``.

Four encoder stages of two 3x3 conv+BN+ReLU followed by 2x2 max-pooling, a middle block at
16x the base width, and four decoder stages that upsample with a stride-2 3x3 transposed
convolution, concatenate the skip connection and apply another conv block. With
``base_channels=64`` this is the original 64-128-256-512-1024 network.

Two options change it: ``upsample="bilinear"`` replaces each transposed convolution by a 1x1
convolution followed by x2 bilinear upsampling (fewer parameters, no checkerboard artifacts, and
no deconvolution, which oneDNN runs through a slow generic kernel on some CPUs). Both steps are
linear and the bilinear weights sum to one, so convolving first gives the same result as the
usual upsample-then-convolve at a quarter of the convolution's cost. ``dropout=p`` drops
activations of the middle block (the end of the contracting path, where the paper puts it)
with probability ``p`` while training.

The model takes float RGB (or ``in_channels``-channel) images scaled to ``[0, 1]`` and
normalises them itself with ``mean``/``std``, so an exported model needs no preprocessing
beyond ``image / 255``. Inputs whose height or width is not a multiple of 16 are padded
(reflect) and the logits are cropped back, so any size works (``seg.models.inputs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.errors import OptionError
from seg.models.inputs import normalisation, pad_to_multiple

#: Height and width are padded to a multiple of this (four 2x2 poolings).
SIZE_DIVISOR = 16


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def transpose_up(in_channels: int, out_channels: int) -> nn.Module:
    """x2 upsampling by a stride-2 3x3 transposed convolution (the original network)."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)


def bilinear_up(in_channels: int, out_channels: int) -> nn.Module:
    """x2 upsampling by a 1x1 convolution, then bilinear interpolation (equal to the reverse order)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
        nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
    )


#: ``upsample`` values and the x2 upsampling layer each builds.
UPSAMPLERS = {"transpose": transpose_up, "bilinear": bilinear_up}


class UpBlock(nn.Module):
    """Upsample x2 (``UPSAMPLERS``), concatenate the skip, then a conv block."""

    def __init__(self, in_channels: int, out_channels: int, upsample: str = "transpose") -> None:
        super().__init__()
        self.up = UPSAMPLERS[upsample](in_channels, out_channels)
        self.conv = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net mapping images ``(B, in_channels, H, W)`` in ``[0, 1]`` to logits ``(B, num_classes, H, W)``.

    Args:
        in_channels: image channels (3 for RGB).
        num_classes: output classes, one logit map each.
        base_channels: width of the first stage; stages double it, the middle is 16x.
        mean: per-channel mean used to normalise the ``[0, 1]`` input (default
            ``seg.models.inputs.DEFAULT_MEAN``).
        std: per-channel standard deviation used to normalise the input (default
            ``seg.models.inputs.DEFAULT_STD``).
        upsample: ``transpose`` (stride-2 transposed convolutions, the original network) or
            ``bilinear`` (1x1 convolution + bilinear interpolation).
        dropout: probability of zeroing an activation of the middle block while training
            (0 = no dropout layer, the original network).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        base_channels: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        upsample: str = "transpose",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.check_options(
            in_channels=in_channels, num_classes=num_classes, base_channels=base_channels,
            upsample=upsample, dropout=dropout,
        )  # fmt: skip
        mean_tensor, std_tensor = normalisation(in_channels, mean, std)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.size_divisor = SIZE_DIVISOR
        self.register_buffer("mean", mean_tensor)
        self.register_buffer("std", std_tensor)

        widths = [base_channels * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.encoders = nn.ModuleList()
        prev = in_channels
        for width in widths[:4]:
            self.encoders.append(ConvBlock(prev, width))
            prev = width
        self.pool = nn.MaxPool2d(2)
        self.middle = ConvBlock(widths[3], widths[4])
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoders = nn.ModuleList(
            [UpBlock(widths[i + 1], widths[i], upsample) for i in reversed(range(4))]
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=3, padding=1)

    @staticmethod
    def check_options(
        in_channels: object = 3,
        num_classes: object = 2,
        base_channels: object = 64,
        upsample: object = "transpose",
        dropout: object = 0.0,
        **others: object,
    ) -> None:
        """Raise an ``OptionError`` naming the first of these options that cannot build a U-Net;
        training runs it on the config before any data is read (``seg.training.checks``)."""
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
        ):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise OptionError.invalid(name, value, "an integer >= 1")
        if upsample not in UPSAMPLERS:
            raise OptionError.invalid("upsample", upsample, " or ".join(UPSAMPLERS))
        if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
            raise OptionError.invalid("dropout", dropout, "a number in [0, 1)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x = (pad_to_multiple(x, self.size_divisor) - self.mean) / self.std
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.middle(x))
        for i, decoder in enumerate(self.decoders):
            x = decoder(x, skips[3 - i])
        return self.head(x)[:, :, :height, :width]
