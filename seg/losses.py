"""Segmentation losses on logits ``(B, C, H, W)`` and integer targets ``(B, H, W)``.

``DiceLoss`` is the multi-class soft Dice: softmax over classes, one-hot targets, one Dice
score per class computed over the whole batch, ``1 - mean`` over classes. Pixels equal to
``ignore_index`` are removed from both prediction and target. The smoothing term keeps a class
that is absent from both target and prediction at Dice 1 (no penalty), while predicting an
absent class is still penalised.

``DiceCELoss`` adds cross entropy, the usual remedy when Dice alone stalls on rare classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            "expected logits (B, C, H, W) and target (B, H, W), got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size")


class DiceLoss(nn.Module):
    """Soft multi-class Dice loss, ``1 - mean_c dice_c``.

    Args:
        smooth: added to numerator and denominator of every class's Dice.
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights for the mean over classes.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.tensor(list(class_weights))
        self.register_buffer("class_weights", weights, persistent=False)

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft Dice score of every class, shape ``(C,)``."""
        _check_shapes(logits, target)
        num_classes = logits.shape[1]
        probs = logits.float().softmax(dim=1)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            target = target.masked_fill(~valid, 0)
            probs = probs * valid.unsqueeze(1)
        else:
            valid = None
        onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        if valid is not None:
            onehot = onehot * valid.unsqueeze(1)
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        total = probs.sum(dims) + onehot.sum(dims)
        return (2 * intersection + self.smooth) / (total + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = self.per_class(logits, target)
        if self.class_weights is None:
            return 1 - dice.mean()
        weights = self.class_weights.to(dice)
        return 1 - (dice * weights).sum() / weights.sum()


class DiceCELoss(nn.Module):
    """``dice_weight * Dice + ce_weight * cross entropy``, both honouring ``ignore_index``.

    Args:
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        smooth: Dice smoothing term.
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights, used by both terms.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(smooth=smooth, ignore_index=ignore_index, class_weights=class_weights)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.ignore_index = -100 if ignore_index is None else ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = self.dice(logits, target)
        weights = self.dice.class_weights
        ce = F.cross_entropy(
            logits.float(),
            target.long(),
            weight=None if weights is None else weights.to(logits.device, torch.float32),
            ignore_index=self.ignore_index,
        )
        return self.dice_weight * dice + self.ce_weight * ce
