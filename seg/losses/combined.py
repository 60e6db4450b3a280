"""Weighted sums of losses, built from config: ``total = sum_k weight_k * term_k(logits, target)``.

The terms are partial ``_target_`` nodes (``_partial_: true``) holding only their own options;
the sum owns ``ignore_index`` and ``class_weights`` and hands both to every term, so they are
set once (and ``class_weights=median_frequency`` works as for a single loss). A term whose weight
is 0 is not built, so one config can list every candidate term and a sweep can switch them on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from seg.errors import OptionError
from seg.losses.common import weights_tensor
from seg.losses.overlap import DiceLoss
from seg.losses.pixelwise import CrossEntropyLoss


class WeightedSum(nn.Module):
    """``sum_k weights[k] * terms[k](logits, target)`` over the terms with a weight above 0.

    Args:
        terms: name -> a callable that builds the loss when given ``ignore_index`` and
            ``class_weights`` (a loss class, or a ``_partial_: true`` config node).
        weights: name -> weight (>= 0), one for every term.
        ignore_index: target value whose pixels are excluded by every term, or ``None``.
        class_weights: optional per-class weights, handed to every term.
    """

    def __init__(
        self,
        terms: Mapping[str, Callable[..., nn.Module]],
        weights: Mapping[str, float],
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if set(terms) != set(weights):
            names = f" names {sorted(weights)} but terms names {sorted(terms)}: give one weight per term"
            raise OptionError("weights", names)
        for name, weight in weights.items():
            if not weight >= 0:
                raise OptionError.invalid(f"weights.{name}", weight, "a number >= 0")
        active = [name for name in terms if weights[name] > 0]
        if not active:
            raise OptionError("weights", ": every value is 0; give at least one term a weight above 0")
        weights_tensor(class_weights)  # its errors name class_weights, not a term's key
        self.terms = nn.ModuleDict()
        for name in active:
            if isinstance(terms[name], nn.Module):
                raise OptionError(
                    f"terms.{name}",
                    " is an instantiated loss: add _partial_: true to its config "
                    "(ignore_index and class_weights come from the sum)",
                )
            try:
                self.terms[name] = terms[name](ignore_index=ignore_index, class_weights=class_weights)
            except OptionError as error:  # a term's own option, under its key in terms
                raise error.within(f"terms.{name}") from None
        self.weights = {name: float(weights[name]) for name in active}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [self.weights[name] * term(logits, target) for name, term in self.terms.items()]
        return torch.stack(terms).sum()


class DiceCELoss(WeightedSum):
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
        dice_weight: float,
        ce_weight: float,
        smooth: float,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            terms={"dice": functools.partial(DiceLoss, smooth=smooth), "ce": CrossEntropyLoss},
            weights={"dice": dice_weight, "ce": ce_weight},
            ignore_index=ignore_index,
            class_weights=class_weights,
        )
