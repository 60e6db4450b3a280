"""The Lovász-softmax loss (Berman, Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU.

For each class ``c`` the pixel errors are ``m_i = |[t_i = c] - p_i(c)|``. The loss of the class
is the Lovász extension of its Jaccard loss ``Delta(M) = |M| / |G_c ∪ M|`` (``G_c``: the pixels of
class ``c``, ``M``: a set of wrong pixels) evaluated at ``m``: sort the errors in decreasing order
and weigh each by how much adding its pixel raises ``Delta``. The result is averaged over classes.

Choices (Berman et al.'s defaults): the errors of the whole batch are pooled into one set per
class (``per_image: false``), which is the batch's IoU and sees classes that a single image
lacks; the mean runs over the classes present in the target (``only_present: true``).
Ignored pixels get error 0 and no class, which leaves every other pixel's weight unchanged, so
the loss is the one of the valid pixels alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.losses.common import check_shapes, masked_onehot, safe_ratio, valid_target, weights_tensor


def lovasz_jaccard_weights(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Weights of the sorted errors: ``Delta(first k) - Delta(first k-1)`` along the last dimension.

    ``fg_sorted`` holds 1 where the pixel belongs to the class, in the order of decreasing error.
    The first ``k`` pixels, as a wrong set, leave ``|G| - (fg among them)`` pixels of the class
    right, out of a union of ``|G| + (non-fg among them)``.
    """
    total = fg_sorted.sum(dim=-1, keepdim=True)
    intersection = total - fg_sorted.cumsum(dim=-1)
    union = total + (1 - fg_sorted).cumsum(dim=-1)  # >= 1: at least the first pixel
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax loss on logits ``(B, C, H, W)`` and integer targets ``(B, H, W)``.

    Args:
        per_image: one loss per image, averaged over the images that have a class to average
            (instead of one over the pooled batch).
        only_present: average over the classes present in the target; otherwise over all
            classes, so that predicting an absent class costs its largest probability.
        ignore_index: target value whose pixels are excluded, or ``None``.
        class_weights: optional per-class weights for the mean over classes.
    """

    def __init__(
        self,
        per_image: bool,
        only_present: bool,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.per_image = per_image
        self.only_present = only_present
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", weights_tensor(class_weights), persistent=False)

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(losses, counted)``, both ``(G, C)`` with one row per image, or one row for the batch:
        the Lovász loss of each class and whether it enters the mean."""
        check_shapes(logits, target)
        target, valid = valid_target(target, self.ignore_index)
        probs = logits.float().softmax(dim=1)
        fg = masked_onehot(target, valid, logits.shape[1])
        errors = (fg - probs).abs() * valid.unsqueeze(1)
        if self.per_image:
            fg, errors = fg.flatten(2), errors.flatten(2)
        else:
            fg, errors = (x.transpose(0, 1).flatten(1).unsqueeze(0) for x in (fg, errors))
        errors_sorted, order = errors.sort(dim=-1, descending=True)
        losses = (errors_sorted * lovasz_jaccard_weights(fg.gather(-1, order))).sum(dim=-1)
        counted = fg.sum(dim=-1) > 0 if self.only_present else torch.ones_like(losses, dtype=torch.bool)
        return losses, counted

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses, counted = self.per_class(logits, target)
        weights = counted.to(losses.dtype)
        if self.class_weights is not None:
            weights = weights * self.class_weights.to(losses)
        per_group = safe_ratio((losses * weights).sum(dim=-1), weights.sum(dim=-1))
        groups = (weights.sum(dim=-1) > 0).to(losses.dtype)
        return safe_ratio((per_group * groups).sum(), groups.sum())
