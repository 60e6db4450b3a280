"""The input convention every seg network follows, in one place.

A network takes float images scaled to ``[0, 1]`` and normalises them itself with a per-channel
``mean``/``std`` (so an exported model needs no preprocessing beyond ``image / 255``), and it
takes any height and width: the input is padded up to a multiple of the network's stride and
the logits are cropped back. Both helpers are plain tensor code that TorchScript, ``torch.export``
and ONNX accept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: The normalisation used when the data config leaves ``mean``/``std`` null (and no pretrained
#: encoder brings its own): roughly centres and scales natural images in ``[0, 1]``.
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25


def normalisation(
    in_channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    default_mean: Sequence[float] | None = None,
    default_std: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, C, 1, 1)`` mean and std tensors for ``in_channels`` channels, checked.

    ``None`` takes ``default_mean``/``default_std`` (or ``DEFAULT_MEAN``/``DEFAULT_STD`` for every
    channel). Raises ``ValueError`` naming mean/std when the lengths or values cannot work.
    """
    mean = list(default_mean or [DEFAULT_MEAN] * in_channels) if mean is None else list(mean)
    std = list(default_std or [DEFAULT_STD] * in_channels) if std is None else list(std)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(
            f"mean/std need {in_channels} values (one per input channel), got {len(mean)} and {len(std)}"
        )
    if min(std) <= 0:
        raise ValueError(f"std values must be positive, got {std}")
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x`` padded at the bottom and right so that height and width are multiples of ``divisor``.

    Reflect padding keeps image statistics at the border; inputs smaller than the padding
    itself (where reflection is undefined) are replicate-padded. Crop the output back with
    ``[..., :height, :width]``.
    """
    height, width = x.shape[-2], x.shape[-1]
    pad_h = (divisor - height % divisor) % divisor
    pad_w = (divisor - width % divisor) % divisor
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, [0, pad_w, 0, pad_h], mode=mode)
