"""Region-overlap losses: soft Dice and Tversky (with the focal-Tversky exponent).

Both take softmax probabilities and the targets' classes and compute one score per class over the
whole batch (all images' pixels pooled, as nnU-Net's batch Dice), then a mean over classes,
weighted by ``class_weights`` when given. Pixels equal to ``ignore_index`` are removed from both
prediction and target. The smoothing term keeps a class that is absent from both target and
prediction at a perfect score (no penalty), while predicting an absent class is still penalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from seg.losses.common import check_at_least, check_shapes, valid_target, weights_tensor

#: ``SoftCounts`` handles this many probabilities (class x pixel) at a time: 64 MB in fp32.
CHUNK_ELEMENTS = 1 << 24


def _chunks(logits: torch.Tensor) -> list[slice]:
    """Slices of the batch that hold at most ``CHUNK_ELEMENTS`` values each (one image at least)."""
    per_image = max(logits[0].numel(), 1)
    step = max(CHUNK_ELEMENTS // per_image, 1)
    return [slice(start, start + step) for start in range(0, logits.shape[0], step)]


class SoftCounts(torch.autograd.Function):
    """``(true_positives, predicted)`` of softmax probabilities, per class: the probability summed
    over the valid pixels of each class, and over all valid pixels. Computed in fp32 (or the logits'
    own precision, if higher) a chunk of images at a time, forward and backward; only the logits
    are saved, and the backward pass recomputes each chunk's probabilities."""

    @staticmethod
    def _probabilities(logits: torch.Tensor) -> torch.Tensor:
        return logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=1)

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        num_classes = logits.shape[1]
        dtype = torch.promote_types(logits.dtype, torch.float32)
        true_positives = logits.new_zeros(num_classes, dtype=dtype)
        predicted = logits.new_zeros(num_classes, dtype=dtype)
        with torch.autocast(logits.device.type, enabled=False):
            for part in _chunks(logits):
                probs = SoftCounts._probabilities(logits[part])
                labels, counts = target[part], valid[part]
                own = probs.gather(1, labels.unsqueeze(1)).squeeze(1)[counts]
                true_positives.index_add_(0, labels[counts], own)
                predicted += (probs * counts.unsqueeze(1)).sum((0, 2, 3))
        ctx.save_for_backward(logits, target, valid)
        return true_positives, predicted

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_true_positives: torch.Tensor, grad_predicted: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        logits, target, valid = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
        with torch.autocast(logits.device.type, enabled=False):
            for part in _chunks(logits):
                probs = SoftCounts._probabilities(logits[part])
                own_class = classes == target[part].unsqueeze(1)
                # d/dp of the counts: every valid pixel adds p to predicted, and to true_positives
                # for its own class; then back through the softmax
                per_class = grad_predicted.view(1, -1, 1, 1), grad_true_positives.view(1, -1, 1, 1)
                grad_probs = per_class[0] + own_class * per_class[1]
                grad_probs *= valid[part].unsqueeze(1)
                grad = probs * (grad_probs - (probs * grad_probs).sum(dim=1, keepdim=True))
                grad_logits[part] = grad.to(logits.dtype)
        return grad_logits, None, None


class _OverlapLoss(nn.Module):
    """Masked probabilities and one-hot targets, and the class-weighted mean of per-class losses."""

    def __init__(self, ignore_index: int | None, class_weights: Sequence[float] | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", weights_tensor(class_weights), persistent=False)

    def _soft_counts(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per class, over the batch's pixels that count: the soft true positives (the probability
        each pixel gives its target class), the summed probabilities and the target pixels.

        ``SoftCounts`` computes the first two a few images at a time and keeps only the logits
        for the backward pass, so the loss holds no probability map of the whole batch (16 crops
        of 512x512 with ADE20K's 150 classes: 2.5 GB each, in fp32).
        """
        check_shapes(logits, target)
        target, valid = valid_target(target, self.ignore_index)
        true_positives, predicted = SoftCounts.apply(logits, target, valid)
        pixels = torch.bincount(target[valid], minlength=logits.shape[1]).to(predicted.dtype)
        return true_positives, predicted, pixels

    def _class_mean(self, per_class: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:
            return per_class.mean()
        weights = self.class_weights.to(per_class)
        return (per_class * weights).sum() / weights.sum()


class DiceLoss(_OverlapLoss):
    """Soft multi-class Dice loss, ``1 - mean_c dice_c``.

    Args:
        smooth: added to numerator and denominator of every class's Dice.
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights for the mean over classes.
    """

    def __init__(
        self,
        smooth: float,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        check_at_least("smooth", smooth, 0)
        self.smooth = smooth

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft Dice score of every class, shape ``(C,)``."""
        intersection, predicted, pixels = self._soft_counts(logits, target)
        return (2 * intersection + self.smooth) / (predicted + pixels + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - self._class_mean(self.per_class(logits, target))


class TverskyLoss(_OverlapLoss):
    """Tversky loss (Salehi et al. 2017) with the focal-Tversky exponent (Abraham & Khan 2019).

    Per class, ``TI_c = (TP + smooth) / (TP + alpha FP + beta FN + smooth)`` with soft counts;
    the loss is ``mean_c (1 - TI_c) ** gamma``. ``alpha = beta = 0.5`` is Dice (with half the
    smoothing term); ``beta > alpha`` penalises missed pixels more than false alarms, which favours
    recall of small classes. ``gamma`` reshapes each class's loss: ``gamma < 1`` (Abraham & Khan's
    ``1/gamma = 0.75``) keeps a steep slope for classes that are nearly right, ``gamma > 1``
    flattens it there and so puts the weight on the poorly segmented classes.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives.
        gamma: exponent of ``1 - TI`` (1: plain Tversky).
        smooth: added to numerator and denominator of every class's index.
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights for the mean over classes.
    """

    def __init__(
        self,
        alpha: float,
        beta: float,
        gamma: float,
        smooth: float,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        for name, value in (("alpha", alpha), ("beta", beta), ("smooth", smooth)):
            check_at_least(name, value, 0)
        check_at_least("gamma", gamma, 0, strict=True)
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Tversky index of every class, shape ``(C,)``."""
        tp, predicted, pixels = self._soft_counts(logits, target)
        fp, fn = predicted - tp, pixels - tp  # soft counts over the pixels that count
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = 1 - self.per_class(logits, target)
        if self.gamma != 1:
            # A perfect class has loss 0, where x**gamma has an infinite slope for gamma < 1.
            loss = torch.where(loss > 0, loss.clamp_min(1e-12).pow(self.gamma), 0.0)
        return self._class_mean(loss)
