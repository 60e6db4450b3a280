"""Loss values checked against numbers worked out by hand, MONAI, and brute force.

The case: 2 classes, 2 pixels. Pixel A has logits (0, 0) -> probabilities (1/2, 1/2), pixel B
has logits (ln 3, 0) -> (3/4, 1/4); targets are A=0, B=1.
  class 0: p = (1/2, 3/4), t = (1, 0): intersection 1/2, sum p 5/4, sum t 1
  class 1: p = (1/2, 1/4), t = (0, 1): intersection 1/4, sum p 3/4, sum t 1
With smooth=1: dice0 = (1 + 1) / (9/4 + 1) = 8/13, dice1 = (1/2 + 1) / (7/4 + 1) = 6/11.
With smooth=0: dice0 = 1 / (9/4) = 4/9, dice1 = (1/2) / (7/4) = 2/7.
Cross entropy: (-ln 1/2 - ln 1/4) / 2 = 1.5 ln 2.
Focal, gamma 2: A: (1 - 1/2)^2 ln 2 = ln2 / 4; B: (1 - 1/4)^2 ln 4 = 9/8 ln 2; mean 11/16 ln 2.
Tversky, alpha 0.3, beta 0.7, smooth 0:
  class 0: TP 1/2, FP 3/4, FN 1/2: TI = 0.5 / (0.5 + 0.225 + 0.35) = 20/43
  class 1: TP 1/4, FP 1/2, FN 3/4: TI = 0.25 / (0.25 + 0.15 + 0.525) = 10/37
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from support import CONF_DIR, compose_train

from seg.errors import ConfigError
from seg.losses import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
    WeightedSum,
)
from seg.losses.common import valid_target
from seg.training.pipeline import build_module, train

LOGITS = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
TARGET = torch.tensor([[[0, 1]]])  # (1, 1, 2)


def test_dice_with_smoothing_matches_hand_computation() -> None:
    expected = 1 - (8 / 13 + 6 / 11) / 2
    assert DiceLoss(smooth=1.0)(LOGITS, TARGET).item() == pytest.approx(expected, abs=1e-6)


def test_dice_without_smoothing_matches_hand_computation() -> None:
    expected = 1 - (4 / 9 + 2 / 7) / 2
    assert DiceLoss(smooth=0.0)(LOGITS, TARGET).item() == pytest.approx(expected, abs=1e-6)


def test_per_class_scores() -> None:
    per_class = DiceLoss(smooth=1.0).per_class(LOGITS, TARGET)
    torch.testing.assert_close(per_class, torch.tensor([8 / 13, 6 / 11]))


def test_class_weights_weight_the_mean() -> None:
    expected = 1 - (1 * 8 / 13 + 3 * 6 / 11) / 4
    loss = DiceLoss(smooth=1.0, class_weights=[1.0, 3.0])(LOGITS, TARGET)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_ignored_pixels_change_nothing() -> None:
    # A third pixel with confident, wrong logits, labelled with the ignore index.
    logits = torch.cat([LOGITS, torch.tensor([[[[9.0]], [[-9.0]]]])], dim=3)
    target = torch.tensor([[[0, 1, 255]]])
    for make in (
        lambda: DiceLoss(smooth=1.0, ignore_index=255),
        lambda: DiceCELoss(dice_weight=1.0, ce_weight=1.0, smooth=1.0, ignore_index=255),
    ):
        loss, reference = make(), make()(LOGITS, TARGET)
        assert loss(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)


def test_dice_ce_adds_cross_entropy() -> None:
    expected = (1 - (8 / 13 + 6 / 11) / 2) + 1.5 * math.log(2)
    assert DiceCELoss(dice_weight=1.0, ce_weight=1.0, smooth=1.0)(LOGITS, TARGET).item() == pytest.approx(
        expected, abs=1e-6
    )
    weighted = DiceCELoss(dice_weight=0.5, ce_weight=2.0, smooth=1.0)(LOGITS, TARGET).item()
    assert weighted == pytest.approx(0.5 * (1 - (8 / 13 + 6 / 11) / 2) + 3 * math.log(2), abs=1e-6)


#: One instance of every loss, with options away from their defaults where that tests more.
ALL_LOSSES = {
    "dice": lambda **kw: DiceLoss(smooth=1.0, **kw),
    "dice_ce": lambda **kw: DiceCELoss(dice_weight=1.0, ce_weight=1.0, smooth=1.0, **kw),
    "ce": lambda **kw: CrossEntropyLoss(**kw),
    "focal": lambda **kw: FocalLoss(gamma=2.0, **kw),
    "focal_half": lambda **kw: FocalLoss(gamma=0.5, **kw),
    "tversky": lambda **kw: TverskyLoss(alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0, **kw),
    "focal_tversky": lambda **kw: TverskyLoss(alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0, **kw),
    "lovasz": lambda **kw: LovaszSoftmaxLoss(per_image=False, only_present=True, **kw),
    "lovasz_per_image_all": lambda **kw: LovaszSoftmaxLoss(per_image=True, only_present=False, **kw),
}


@pytest.mark.parametrize("loss", [make() for make in ALL_LOSSES.values()], ids=list(ALL_LOSSES))
def test_perfect_prediction_gives_zero(loss: torch.nn.Module) -> None:
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0, 0] = 3  # class 3 present; class counts otherwise random
    logits = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50.0
    assert loss(logits, target).item() < 1e-4


def test_absent_class_not_predicted_is_not_penalised() -> None:
    target = torch.zeros(1, 4, 4, dtype=torch.long)  # only class 0; classes 1 and 2 absent
    logits = torch.tensor([50.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert DiceLoss(smooth=1.0)(logits, target).item() < 1e-4


@pytest.mark.parametrize("loss", [make(ignore_index=0) for make in ALL_LOSSES.values()], ids=list(ALL_LOSSES))
def test_gradients_flow_and_are_finite(loss: torch.nn.Module) -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss(logits, target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_bf16_logits_give_the_fp32_value(name: str) -> None:
    loss = ALL_LOSSES[name]()
    assert loss(LOGITS.bfloat16(), TARGET).dtype == torch.float32


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        DiceLoss(smooth=1.0)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# --- hand-computed values of the new losses (the case in the module docstring) ---


def test_focal_matches_hand_computation() -> None:
    assert FocalLoss(gamma=2.0)(LOGITS, TARGET).item() == pytest.approx(11 / 16 * math.log(2), abs=1e-6)


def test_tversky_matches_hand_computation() -> None:
    index = torch.tensor([20 / 43, 10 / 37])
    loss = TverskyLoss(alpha=0.3, beta=0.7, gamma=1.0, smooth=0.0)
    torch.testing.assert_close(loss.per_class(LOGITS, TARGET), index)
    assert loss(LOGITS, TARGET).item() == pytest.approx(1 - (20 / 43 + 10 / 37) / 2, abs=1e-6)
    focal = TverskyLoss(alpha=0.3, beta=0.7, gamma=2.0, smooth=0.0)(LOGITS, TARGET).item()
    assert focal == pytest.approx(((23 / 43) ** 2 + (27 / 37) ** 2) / 2, abs=1e-6)


def test_lovasz_matches_hand_computation() -> None:
    # 2 classes, 3 pixels: A logits (0, 0), B (ln 3, 0), C (0, ln 3), so p0 = (1/2, 3/4, 1/4);
    # targets A=0, B=1, C=1.
    # Class 0: errors |[t=0] - p0| = (1/2, 3/4, 1/4), sorted B, A, C; G = {A}.
    #   Delta({B}) = 1/|{A,B}| = 1/2, Delta({B,A}) = 2/2 = 1, Delta({B,A,C}) = 3/3 = 1
    #   loss0 = 3/4 * 1/2 + 1/2 * (1 - 1/2) + 1/4 * 0 = 5/8
    # Class 1: errors |[t=1] - p1| = (1/2, 3/4, 1/4), sorted B, A, C; G = {B, C}.
    #   Delta({B}) = 1/2, Delta({B,A}) = 2/3, Delta({B,A,C}) = 1
    #   loss1 = 3/4 * 1/2 + 1/2 * (2/3 - 1/2) + 1/4 * (1 - 2/3) = 3/8 + 1/12 + 1/12 = 13/24
    # Mean over the two (present) classes: (5/8 + 13/24) / 2 = 7/12.
    logits = torch.tensor([[[[0.0, math.log(3.0), 0.0]], [[0.0, 0.0, math.log(3.0)]]]])
    target = torch.tensor([[[0, 1, 1]]])
    loss = LovaszSoftmaxLoss(per_image=False, only_present=True)
    torch.testing.assert_close(loss.per_class(logits, target)[0], torch.tensor([[5 / 8, 13 / 24]]))
    assert loss(logits, target).item() == pytest.approx(7 / 12, abs=1e-6)


# --- cross entropy and focal against torch and MONAI ---


def _random_case(seed: int, ignore: int | None = 255, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, classes, 6, 7, generator=generator)
    target = torch.randint(0, classes, (2, 6, 7), generator=generator)
    if ignore is not None:
        target[torch.rand(target.shape, generator=generator) < 0.2] = ignore
    return logits, target


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 4.0]])
def test_cross_entropy_and_focal_gamma0_are_torch_cross_entropy(weights: list[float] | None) -> None:
    logits, target = _random_case(0)
    expected = F.cross_entropy(
        logits, target, weight=None if weights is None else torch.tensor(weights), ignore_index=255
    )
    for loss in (CrossEntropyLoss(255, weights), FocalLoss(0.0, 255, weights)):
        assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 4.0]])
def test_focal_matches_monai(gamma: float, weights: list[float] | None) -> None:
    monai = pytest.importorskip("monai.losses")
    logits, target = _random_case(1)
    valid = target != 255
    onehot = F.one_hot(target.masked_fill(~valid, 0), 4).permute(0, 3, 1, 2).float()
    # MONAI: softmax focal loss per pixel and class, the class weight applied to its channel; no
    # reduction. One-hot targets leave one non-zero channel per pixel: w_t * FL(p_t).
    reference = monai.FocalLoss(
        include_background=True,
        to_onehot_y=False,
        gamma=gamma,
        weight=weights,
        reduction="none",
        use_softmax=True,
    )(logits, onehot).sum(dim=1)
    w = torch.ones(4) if weights is None else torch.tensor(weights)
    # seg's reduction: the mean over valid pixels weighted by their class's weight.
    expected = reference[valid].sum() / w[target[valid]].sum()
    assert FocalLoss(gamma, 255, weights)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


# --- Tversky against MONAI and Dice ---


@pytest.mark.parametrize(
    ("alpha", "beta", "gamma", "smooth", "weights"),
    [
        (0.3, 0.7, 1.0, 1.0, None),
        (0.5, 0.5, 0.75, 1e-5, None),
        (0.7, 0.3, 2.0, 0.5, [1.0, 2.0, 0.5, 3.0]),
    ],
)
def test_tversky_matches_monai(
    alpha: float, beta: float, gamma: float, smooth: float, weights: list[float] | None
) -> None:
    monai = pytest.importorskip("monai.losses")
    logits, target = _random_case(2)
    logits.requires_grad_(True)
    valid = (target != 255).unsqueeze(1)
    onehot = F.one_hot(target.masked_fill(~valid[:, 0], 0), 4).permute(0, 3, 1, 2).float() * valid
    probs = logits.softmax(dim=1) * valid  # ignored pixels removed from prediction and target alike
    # MONAI: batch=True pools batch and pixels into one index per class (as seg does); the same
    # smoothing term in numerator and denominator; reduction="none" gives 1 - TI per class.
    per_class = monai.TverskyLoss(
        include_background=True,
        to_onehot_y=False,
        softmax=False,
        alpha=alpha,
        beta=beta,
        smooth_nr=smooth,
        smooth_dr=smooth,
        batch=True,
        reduction="none",
    )(probs, onehot)
    w = torch.ones(4) if weights is None else torch.tensor(weights)
    expected = (per_class.clamp_min(0) ** gamma * w).sum() / w.sum()
    loss = TverskyLoss(alpha, beta, gamma, smooth, ignore_index=255, class_weights=weights)(logits, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-7)
    # the gradient too: seg gathers each pixel's class probability where MONAI multiplies by one-hot
    (expected_grad,) = torch.autograd.grad(expected, logits)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "loss", [DiceLoss(smooth=1.0, ignore_index=255), TverskyLoss(0.3, 0.7, 1.0, 1.0, 255)]
)
def test_overlap_losses_count_in_fp32_under_bf16_autocast(loss: torch.nn.Module) -> None:
    # 16 x 64 x 64 pixels: a class's summed probability in bf16 keeps 3 significant digits
    # (16,381 becomes 16,384), in fp32 every pixel
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, 64, 64, generator=generator)
    target = torch.randint(0, 4, (16, 64, 64), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.per_class(logits, target)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, loss.per_class(logits, target), rtol=0, atol=1e-6)


def _plain_soft_counts(logits: torch.Tensor, target: torch.Tensor, ignore: int) -> tuple[torch.Tensor, ...]:
    """The soft counts written out with a one-hot target, as a reference for ``SoftCounts``."""
    valid = (target != ignore).unsqueeze(1)
    onehot = F.one_hot(target.masked_fill(~valid.squeeze(1), 0), logits.shape[1]).permute(0, 3, 1, 2)
    probs = logits.double().softmax(dim=1) * valid
    return (probs * onehot).sum((0, 2, 3)), probs.sum((0, 2, 3))


@pytest.mark.parametrize("chunk_elements", [1, 300, 1 << 24])  # one image a chunk, two, all
def test_soft_counts_and_their_gradient_are_the_one_hot_formula_in_any_chunking(
    chunk_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seg.losses import overlap

    monkeypatch.setattr(overlap, "CHUNK_ELEMENTS", chunk_elements)
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, 7, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (5, 7, 6), generator=generator)
    target[0, :2] = 255
    weights = torch.rand(2, 3, generator=generator, dtype=torch.float64)  # d loss / d counts
    loss = DiceLoss(smooth=1.0, ignore_index=255)
    counts = loss._soft_counts(logits, target)[:2]
    expected = _plain_soft_counts(logits, target, 255)
    for got, want in zip(counts, expected, strict=True):
        torch.testing.assert_close(got, want)

    def weighted(pair: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return (weights[0] * pair[0]).sum() + (weights[1] * pair[1]).sum()

    (grad,) = torch.autograd.grad(weighted(counts), logits)
    (expected_grad,) = torch.autograd.grad(weighted(expected), logits)
    torch.testing.assert_close(grad, expected_grad)
    labels, valid = valid_target(target, 255)
    assert torch.autograd.gradcheck(lambda z: overlap.SoftCounts.apply(z, labels, valid), (logits,))


@pytest.mark.parametrize(
    "loss", [DiceLoss(smooth=1.0, ignore_index=255), TverskyLoss(0.3, 0.7, 0.75, 1.0, 255)]
)
def test_overlap_losses_keep_no_probability_map_for_the_backward_pass(loss: torch.nn.Module) -> None:
    # all a loss saves is its inputs (bf16 logits, labels, the valid mask) and per-class vectors:
    # less than one fp32 probability map, which is what a softmax in the graph would keep
    logits = torch.randn(4, 19, 64, 64, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 19, (4, 64, 64))
    saved: list[torch.Tensor] = []
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t)
    with hooks, torch.autocast("cpu", dtype=torch.bfloat16):
        loss(logits, target).backward()
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in saved}
    probability_map = logits.numel() * 4
    assert sum(unique.values()) < probability_map
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


def test_tversky_with_equal_weights_is_dice() -> None:
    # TP / (TP + (FP + FN) / 2) = 2 TP / (sum p + sum t): Dice, with half the smoothing term.
    logits, target = _random_case(3)
    dice = DiceLoss(smooth=1.0, ignore_index=255)(logits, target)
    tversky = TverskyLoss(alpha=0.5, beta=0.5, gamma=1.0, smooth=0.5, ignore_index=255)(logits, target)
    assert tversky.item() == pytest.approx(dice.item(), abs=1e-6)


# --- Lovász-softmax against brute force ---


def _jaccard_loss(wrong: set[int], truth: set[int]) -> float:
    """Berman et al.'s set function: |M| / |G ∪ M| for the set M of wrong pixels (0 for M empty)."""
    return len(wrong) / len(truth | wrong) if wrong else 0.0


def _lovasz_by_permutations(errors: list[float], truth: set[int]) -> float:
    """The Lovász extension of the (submodular) Jaccard loss at ``errors``, as the largest value of
    sum_k errors[pi_k] * (Delta(first k) - Delta(first k-1)) over every order pi of the pixels
    (Edmonds: the greedy vertices of the base polytope). No sorting involved."""
    best = -math.inf
    for order in itertools.permutations(range(len(errors))):
        total, previous, chosen = 0.0, 0.0, set()
        for pixel in order:
            chosen.add(pixel)
            value = _jaccard_loss(chosen, truth)
            total += errors[pixel] * (value - previous)
            previous = value
        best = max(best, total)
    return best


def _lovasz_brute_force(
    logits: torch.Tensor, target: torch.Tensor, per_image: bool, only_present: bool, ignore: int | None
) -> float:
    probs = logits.double().softmax(dim=1)
    images = [[b] for b in range(len(target))] if per_image else [list(range(len(target)))]
    group_losses = []
    for group in images:
        pixels = [
            (b, y, x)
            for b in group
            for y in range(target.shape[1])
            for x in range(target.shape[2])
            if int(target[b, y, x]) != ignore
        ]
        class_losses = []
        for c in range(logits.shape[1]):
            truth = {i for i, (b, y, x) in enumerate(pixels) if int(target[b, y, x]) == c}
            if only_present and not truth:
                continue
            errors = [abs(float(i in truth) - float(probs[b, c, y, x])) for i, (b, y, x) in enumerate(pixels)]
            class_losses.append(_lovasz_by_permutations(errors, truth))
        if class_losses:
            group_losses.append(sum(class_losses) / len(class_losses))
    return sum(group_losses) / len(group_losses) if group_losses else 0.0


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("only_present", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_matches_brute_force(per_image: bool, only_present: bool, seed: int) -> None:
    # 2 images of 1x3 pixels, 4 classes (so some are absent), one pixel ignored.
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(2, 4, 1, 3, generator=generator)
    target = torch.randint(0, 4, (2, 1, 3), generator=generator)
    target[1, 0, seed % 3] = 255
    expected = _lovasz_brute_force(logits, target, per_image, only_present, ignore=255)
    loss = LovaszSoftmaxLoss(per_image=per_image, only_present=only_present, ignore_index=255)
    assert loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_lovasz_per_image_is_the_mean_of_single_images() -> None:
    logits, target = _random_case(4, ignore=None)
    loss = LovaszSoftmaxLoss(per_image=True, only_present=True)
    singles = [
        LovaszSoftmaxLoss(per_image=False, only_present=True)(logits[i : i + 1], target[i : i + 1])
        for i in range(2)
    ]
    assert loss(logits, target).item() == pytest.approx(sum(singles).item() / 2, abs=1e-6)


def test_lovasz_class_weights_weight_the_mean_over_classes() -> None:
    logits, target = _random_case(5)
    weights = [1.0, 2.0, 0.5, 3.0]
    losses, counted = LovaszSoftmaxLoss(per_image=False, only_present=True, ignore_index=255).per_class(
        logits, target
    )
    w = torch.tensor(weights) * counted[0]
    expected = (losses[0] * w).sum() / w.sum()
    loss = LovaszSoftmaxLoss(per_image=False, only_present=True, ignore_index=255, class_weights=weights)(
        logits, target
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


# --- ignore_index, for every loss ---


@pytest.mark.parametrize("name", list(ALL_LOSSES))
@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 4.0]])
def test_predictions_at_ignored_pixels_change_nothing(name: str, weights: list[float] | None) -> None:
    logits, target = _random_case(6)
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    other = torch.where(ignored, 10 * torch.randn_like(logits), logits).requires_grad_()
    loss = ALL_LOSSES[name](ignore_index=255, class_weights=weights)
    reference = loss(logits, target)
    changed = loss(other, target)
    assert changed.item() == pytest.approx(reference.item(), abs=1e-6)
    changed.backward()
    assert other.grad[ignored].abs().max() == 0


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_a_batch_of_ignored_pixels_gives_zero(name: str) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = ALL_LOSSES[name](ignore_index=255)(logits, torch.full((2, 4, 4), 255))
    assert loss.item() == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "make", [lambda: FocalLoss(gamma=-1), lambda: TverskyLoss(alpha=0.3, beta=-0.1, gamma=1.0, smooth=1.0)]
)
def test_invalid_options_are_config_errors_naming_the_argument(make: Callable[[], Any]) -> None:
    with pytest.raises(ConfigError, match=r"^(gamma|beta)=-"):  # building() adds "loss." (test_errors)
        make()


# --- weighted sums from config ---


def _loss_from_config(*overrides: str) -> torch.nn.Module:
    cfg = compose_train(["paths.output_dir=unused", "data.ignore_index=255", *overrides])
    return instantiate(OmegaConf.to_container(cfg.loss, resolve=True))


def test_every_loss_config_builds_and_runs() -> None:
    logits, target = _random_case(7)
    for path in sorted((CONF_DIR / "loss").glob("*.yaml")):
        loss = _loss_from_config(f"loss={path.stem}")
        value = loss(logits, target)
        assert torch.isfinite(value) and value > 0, path.stem


def test_combo_starts_as_dice_ce() -> None:
    logits, target = _random_case(8)
    combo = _loss_from_config("loss=combo")
    assert list(combo.terms) == ["dice", "ce"]
    expected = DiceCELoss(dice_weight=1.0, ce_weight=1.0, smooth=1.0, ignore_index=255)(logits, target)
    assert combo(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


def test_combo_weights_switch_terms_and_hand_them_the_shared_options() -> None:
    logits, target = _random_case(9)
    weights = [1.0, 2.0, 0.5, 3.0]
    combo = _loss_from_config(
        "loss=combo",
        "loss.weights.ce=0",
        "loss.weights.dice=0.5",
        "loss.weights.lovasz=2",
        "loss.weights.focal=0.25",
        "loss.terms.focal.gamma=1.5",
        f"loss.class_weights=[{','.join(map(str, weights))}]",
    )
    assert list(combo.terms) == ["dice", "focal", "lovasz"]
    expected = (
        0.5 * DiceLoss(smooth=1.0, ignore_index=255, class_weights=weights)(logits, target)
        + 0.25 * FocalLoss(1.5, ignore_index=255, class_weights=weights)(logits, target)
        + 2
        * LovaszSoftmaxLoss(per_image=False, only_present=True, ignore_index=255, class_weights=weights)(
            logits, target
        )
    )
    assert combo(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


def test_dice_lovasz_is_dice_plus_lovasz() -> None:
    logits, target = _random_case(11)
    loss = _loss_from_config("loss=dice_lovasz")
    assert list(loss.terms) == ["dice", "lovasz"]
    expected = DiceLoss(smooth=1.0, ignore_index=255)(logits, target) + LovaszSoftmaxLoss(
        per_image=False, only_present=True, ignore_index=255
    )(logits, target)
    assert loss(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_loss_replaces_an_experiments_loss_whole(experiment: str) -> None:
    """``experiment=<recipe> loss=<any>`` builds that loss alone: recipes choose a loss config
    and set none of its keys, which a loss of another shape would not accept."""
    logits, target = _random_case(12)
    for path in sorted((CONF_DIR / "loss").glob("*.yaml")):
        loss = _loss_from_config(f"experiment={experiment}", f"loss={path.stem}")
        reference = _loss_from_config(f"loss={path.stem}")
        assert type(loss) is type(reference), (experiment, path.stem)
        assert loss(logits, target).item() == pytest.approx(reference(logits, target).item(), abs=1e-6)


def test_a_term_added_on_the_command_line() -> None:
    combo = _loss_from_config(
        "loss=combo",
        "loss.weights.dice=0",
        "+loss.weights.ce2=3",
        "+loss.terms.ce2={_target_:seg.losses.CrossEntropyLoss,_partial_:true}",
    )
    logits, target = _random_case(10)
    expected = 3 * CrossEntropyLoss(255)(logits, target) + CrossEntropyLoss(255)(logits, target)
    assert combo(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize(
    ("terms", "weights", "message"),
    [
        ({"ce": CrossEntropyLoss}, {"ce": 1.0, "dice": 1.0}, "one weight per term"),
        ({"ce": CrossEntropyLoss}, {"ce": -1.0}, r"^weights\.ce=-1\.0"),
        ({"ce": CrossEntropyLoss}, {"ce": 0.0}, "at least one term"),
        ({"ce": CrossEntropyLoss()}, {"ce": 1.0}, r"_partial_: true"),
        (
            {"focal": functools.partial(FocalLoss, gamma=-2)},
            {"focal": 1.0},
            r"^terms\.focal\.gamma=-2 ",
        ),
    ],
)
def test_weighted_sum_errors_name_the_argument(
    terms: dict[str, Any], weights: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        WeightedSum(terms, weights)


# --- each new loss trains ---


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=focal"],
        ["loss=lovasz"],
        ["loss=tversky", "loss.gamma=0.75"],
        ["loss=combo", "loss.weights.ce=0", "loss.weights.focal=1", "loss.weights.lovasz=1"],
    ],
    ids=["focal", "lovasz", "focal_tversky", "dice_focal_lovasz"],
)
def test_each_new_loss_trains(make_cfg: Callable[..., Any], overrides: list[str]) -> None:
    cfg = make_cfg(
        *overrides,
        "trainer.max_epochs=3",
        "logger=none",
        "print_config=false",
        "test_after_training=false",
    )
    untrained = _untrained_val_loss(cfg)
    metrics = train(cfg)
    # Three epochs of a width-8 network are too few for a useful Dice on 13 classes (the default
    # Dice loss reaches about 0.1 too); what every loss must do is descend on the training split
    # and end with a validation loss below the untrained network's. (From one epoch to the next
    # the validation loss of so small a network can rise: focal's does, with one thread on the
    # AMD EPYC.)
    train_losses = [epoch["train/loss_epoch"] for epoch in metrics["epochs"]]
    val_losses = [epoch["val/loss"] for epoch in metrics["epochs"]]
    assert len(train_losses) == 3 and train_losses == sorted(train_losses, reverse=True), train_losses
    assert train_losses[-1] < 0.95 * train_losses[0], train_losses
    assert val_losses[-1] < untrained, (untrained, val_losses)
    assert (Path(cfg.paths.output_dir) / "model.pt").is_file()


def _untrained_val_loss(cfg: Any) -> float:
    """The validation loss of the network ``train(cfg)`` starts from (same seed, same data)."""
    cfg = cfg.copy()
    OmegaConf.resolve(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision=cfg.trainer.precision, logger=False,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    return float(trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"])


def test_a_loss_option_out_of_range_stops_training_with_its_key(make_cfg: Callable[..., Any]) -> None:
    # The loss is built inside the LightningModule, two instantiate() calls deep: the user still
    # gets the loss's own one-line error, not Hydra's wrappers around it.
    with pytest.raises(ConfigError, match=r"^loss\.weights\.dice=-1 is not valid"):
        train(make_cfg("loss=combo", "loss.weights.dice=-1", "logger=none", "print_config=false"))
