"""Loss values checked against numbers worked out by hand.

The case: 2 classes, 2 pixels. Pixel A has logits (0, 0) -> probabilities (1/2, 1/2), pixel B
has logits (ln 3, 0) -> (3/4, 1/4); targets are A=0, B=1.
  class 0: p = (1/2, 3/4), t = (1, 0): intersection 1/2, sum p 5/4, sum t 1
  class 1: p = (1/2, 1/4), t = (0, 1): intersection 1/4, sum p 3/4, sum t 1
With smooth=1: dice0 = (1 + 1) / (9/4 + 1) = 8/13, dice1 = (1/2 + 1) / (7/4 + 1) = 6/11.
With smooth=0: dice0 = 1 / (9/4) = 4/9, dice1 = (1/2) / (7/4) = 2/7.
Cross entropy: (-ln 1/2 - ln 1/4) / 2 = 1.5 ln 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from seg.losses import DiceCELoss, DiceLoss

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
    for loss in (DiceLoss(smooth=1.0, ignore_index=255), DiceCELoss(ignore_index=255)):
        reference = type(loss)(ignore_index=255)(LOGITS, TARGET)
        assert loss(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)


def test_dice_ce_adds_cross_entropy() -> None:
    expected = (1 - (8 / 13 + 6 / 11) / 2) + 1.5 * math.log(2)
    assert DiceCELoss()(LOGITS, TARGET).item() == pytest.approx(expected, abs=1e-6)
    weighted = DiceCELoss(dice_weight=0.5, ce_weight=2.0)(LOGITS, TARGET).item()
    assert weighted == pytest.approx(0.5 * (1 - (8 / 13 + 6 / 11) / 2) + 3 * math.log(2), abs=1e-6)


@pytest.mark.parametrize("loss", [DiceLoss(), DiceCELoss()])
def test_perfect_prediction_gives_zero(loss: torch.nn.Module) -> None:
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0, 0] = 3  # class 3 present; class counts otherwise random
    logits = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50.0
    assert loss(logits, target).item() < 1e-4


def test_absent_class_not_predicted_is_not_penalised() -> None:
    target = torch.zeros(1, 4, 4, dtype=torch.long)  # only class 0; classes 1 and 2 absent
    logits = torch.tensor([50.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert DiceLoss()(logits, target).item() < 1e-4


@pytest.mark.parametrize("loss", [DiceLoss(ignore_index=0), DiceCELoss(ignore_index=0)])
def test_gradients_flow_and_are_finite(loss: torch.nn.Module) -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss(logits, target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_bf16_logits_give_the_fp32_value() -> None:
    assert DiceLoss()(LOGITS.bfloat16(), TARGET).dtype == torch.float32


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        DiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
