"""What every loss shares: input checks, the ignore mask, one-hot targets and class weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from seg.errors import OptionError


def check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``(B, C, H, W)`` and ``target`` is ``(B, H, W)``."""
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            "expected logits (B, C, H, W) and target (B, H, W), got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size")


def valid_target(target: torch.Tensor, ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, valid)``: labels as int64 with ignored pixels set to class 0, and the mask of
    pixels that count (all of them when ``ignore_index`` is ``None``)."""
    target = target.long()
    if ignore_index is None:
        return target, torch.ones_like(target, dtype=torch.bool)
    valid = target != ignore_index
    return target.masked_fill(~valid, 0), valid


def masked_onehot(target: torch.Tensor, valid: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot ``(B, C, H, W)`` float targets, all zero at pixels that do not count."""
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    return onehot * valid.unsqueeze(1)


def weights_tensor(class_weights: Sequence[float] | None) -> torch.Tensor | None:
    """Per-class weights as a tensor (``None`` stays ``None``); negative weights are a config error."""
    if class_weights is None:
        return None
    weights = torch.tensor([float(w) for w in class_weights])
    if (weights < 0).any() or weights.sum() <= 0:
        raise OptionError.invalid("class_weights", list(class_weights), "weights >= 0, not all zero")
    return weights


def check_at_least(name: str, value: float, minimum: float, strict: bool = False) -> None:
    """Raise an ``OptionError`` naming the loss's argument ``name`` when ``value`` is below ``minimum``."""
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise OptionError.invalid(name, value, f"a number {relation} {minimum}")


def safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where a zero denominator (nothing counted) gives 0, not NaN."""
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
