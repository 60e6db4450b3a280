"""Per-pixel losses: cross entropy and the multi-class focal loss.

Both average over the pixels that count, each pixel weighted by the weight of its target class
(``sum_i w_{t_i} l_i / sum_i w_{t_i}``, the reduction of ``torch.nn.functional.cross_entropy``
with ``weight``), so the focal loss with ``gamma = 0`` is exactly cross entropy. Pixels equal to
``ignore_index`` contribute nothing; a batch whose pixels are all ignored gives 0, not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seg.losses.common import check_at_least, check_shapes, safe_ratio, valid_target, weights_tensor


class _PixelLoss(nn.Module):
    """The weighted mean over valid pixels of a per-pixel loss computed by ``per_pixel``."""

    def __init__(self, ignore_index: int | None, class_weights: Sequence[float] | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", weights_tensor(class_weights), persistent=False)

    def per_pixel(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted loss of every pixel ``(B, H, W)``; ``target`` holds valid class indices."""
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target)
        target, valid = valid_target(target, self.ignore_index)
        loss = self.per_pixel(logits.float(), target)
        weight = valid.to(loss.dtype)
        if self.class_weights is not None:
            weight = weight * self.class_weights.to(loss)[target]
        return safe_ratio((loss * weight).sum(), weight.sum())


class CrossEntropyLoss(_PixelLoss):
    """Cross entropy on softmax probabilities.

    Args:
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights of the pixels.
    """

    def __init__(self, ignore_index: int | None = None, class_weights: Sequence[float] | None = None) -> None:
        super().__init__(ignore_index, class_weights)

    def per_pixel(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, reduction="none")


class FocalLoss(_PixelLoss):
    """Multi-class focal loss (Lin et al. 2017) on softmax probabilities:
    ``-alpha_t (1 - p_t) ** gamma * log p_t`` at a pixel of class ``t``.

    ``gamma`` down-weights pixels that are already classified confidently, so the many easy
    background pixels stop dominating the gradient. The per-class ``alpha`` of the paper is
    ``class_weights``; with the weighted mean above a uniform alpha changes nothing.

    Args:
        gamma: focusing exponent (0: cross entropy; the paper uses 2).
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights (the focal loss's alpha).
    """

    def __init__(
        self,
        gamma: float,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        check_at_least("gamma", gamma, 0)
        self.gamma = gamma

    def per_pixel(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_pt = logits.log_softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        if self.gamma == 0:
            return -log_pt
        # Clamped: at p_t = 1, (1 - p_t) ** gamma has an infinite slope for gamma < 1.
        focus = (1 - log_pt.exp()).clamp_min(1e-12).pow(self.gamma)
        return -focus * log_pt
