"""Test-time augmentation: the mean of the softmax probabilities over flipped and rescaled views.

Each view is one model call: the input is resized to a scale (and, with ``flip``, mirrored
left-right in the same call), the probabilities are mirrored back and resized back to the input's
size, and every view weighs the same in the mean. Averaging probabilities, not logits, keeps one
confident view from outvoting the others, and the result is still a probability map, which is what
the tiled predictor blends (see ``seg.inference.predictor.Predictor``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from seg.errors import SegError, building


class TTA:
    """Views of a batch whose softmax probabilities are averaged.

    Args:
        flip: add the horizontal mirror of every scaled view.
        scales: input sizes relative to the image (``[1.0]``: the image itself only).
        size_multiple: a scaled height or width is rounded to a multiple of this, as models
            exported with fixed strides (ONNX, ``.pt2``) need; scale 1.0 is never resized.
    """

    def __init__(self, flip: bool, scales: Sequence[float], size_multiple: int) -> None:
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0:
            raise SegError(f"tta.scales={scales} is not valid: expected one or more positive numbers")
        if size_multiple < 1:
            raise SegError(f"tta.size_multiple={size_multiple} is not valid: expected an integer >= 1")
        self.flip = bool(flip)
        self.scales = scales
        self.size_multiple = int(size_multiple)

    @property
    def num_views(self) -> int:
        """How many predictions are averaged per image (the cost in model passes)."""
        return len(self.scales) * (2 if self.flip else 1)

    def settings(self) -> dict[str, Any]:
        """What a report records of this augmentation."""
        return {"flip": self.flip, "scales": self.scales, "views": self.num_views}

    def __str__(self) -> str:
        flips = "flip" if self.flip else "no flip"
        if self.scales == [1.0]:
            return flips if self.flip else "none"
        return f"{flips} at scales {', '.join(f'{s:g}' for s in self.scales)}"

    def scaled_size(self, size: int, scale: float) -> int:
        """``size * scale`` rounded to a multiple of ``size_multiple`` (at least one multiple)."""
        if scale == 1.0:
            return size
        return max(1, round(size * scale / self.size_multiple)) * self.size_multiple

    def __call__(self, model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """fp32 probabilities ``(B, K, H, W)`` of ``model`` (float images to logits), averaged."""
        batch = images.shape[0]
        height, width = images.shape[-2:]
        total: torch.Tensor | None = None
        for scale in self.scales:
            size = (self.scaled_size(height, scale), self.scaled_size(width, scale))
            view = images
            if size != (height, width):
                view = F.interpolate(
                    images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
                )
            if self.flip:
                view = torch.cat([view, view.flip(-1)])
            probs = model(view).float().softmax(1)
            if self.flip:
                probs = probs[:batch] + probs[batch:].flip(-1)
            if size != (height, width):
                probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
            total = probs if total is None else total + probs
        assert total is not None
        return total / self.num_views


#: No augmentation: the softmax of the model's logits (``conf/tta/none.yaml``).
PLAIN = TTA(flip=False, scales=[1.0], size_multiple=1)


def from_config(node: DictConfig | None) -> TTA:
    """The augmentation a command's ``tta`` group describes (none when the config has no ``tta``)."""
    if node is None:
        return PLAIN
    with building("tta"):
        return instantiate(node)
