"""Per-class Dice/IoU against counts worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from seg.metrics import build_metrics, metric_key, summarize

# 3 classes, ignore_index 255. Pixels (pred, target):
#   (0,0) (0,0) (1,0) (1,1) (2,1) (0,255) (2,255)  -> the two ignored pixels do not count.
#   class 0: TP 2, FP 0, FN 1 -> Dice 4/5, IoU 2/3
#   class 1: TP 1, FP 1, FN 1 -> Dice 2/4, IoU 1/3
#   class 2: TP 0, FP 1, FN 0 -> Dice 0,   IoU 0   (predicted but absent: a real mistake)
PREDS = torch.tensor([[0, 0, 1, 1, 2, 0, 2]])
TARGET = torch.tensor([[0, 0, 0, 1, 1, 255, 255]])


def _summary() -> dict[str, float]:
    metrics = build_metrics(num_classes=3, ignore_index=255)
    metrics.update(PREDS, TARGET)
    return summarize(metrics.compute(), ["sky", "Road Sign", "car"], "val", ignore_index=255)


def test_per_class_values() -> None:
    out = _summary()
    assert out["val/dice/sky"] == pytest.approx(4 / 5)
    assert out["val/dice/road_sign"] == pytest.approx(1 / 2)
    assert out["val/dice/car"] == pytest.approx(0.0)
    assert out["val/iou/sky"] == pytest.approx(2 / 3)
    assert out["val/iou/road_sign"] == pytest.approx(1 / 3)
    assert out["val/dice"] == pytest.approx((4 / 5 + 1 / 2 + 0) / 3)
    assert out["val/iou"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert out["val/pixel_accuracy"] == pytest.approx(3 / 5)
    # Accuracy (recall) is defined for classes in the targets: sky 2/3, road sign 1/2.
    assert out["val/accuracy/sky"] == pytest.approx(2 / 3)
    assert out["val/accuracy/road_sign"] == pytest.approx(1 / 2)
    assert math.isnan(out["val/accuracy/car"])
    assert out["val/accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_class_absent_everywhere_is_nan_and_left_out_of_the_mean() -> None:
    metrics = build_metrics(num_classes=3)
    metrics.update(torch.tensor([[0, 0, 1]]), torch.tensor([[0, 1, 1]]))
    out = summarize(metrics.compute(), ["a", "b", "c"], "test")
    assert math.isnan(out["test/dice/c"])
    assert out["test/dice"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_ignored_class_inside_the_range_is_not_scored() -> None:
    metrics = build_metrics(num_classes=3, ignore_index=0)
    metrics.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 2, 0]]))
    out = summarize(metrics.compute(), ["void", "b", "c"], "val", ignore_index=0)
    assert math.isnan(out["val/dice/void"])
    assert out["val/dice"] == pytest.approx(1.0)


def test_metric_key() -> None:
    assert metric_key("Road Sign") == "road_sign"
    assert metric_key("a/b") == "a_b"


def test_mean_dice_follows_the_class_policy_of_summarize() -> None:
    from seg.metrics import MeanDice

    mean = MeanDice(num_classes=4, ignore_index=255, validate_args=False)
    for half in (slice(0, 4), slice(4, None)):  # accumulated over batches, like an epoch
        mean.update(PREDS[:, half], TARGET[:, half])
    # Class 3 appears nowhere: left out, as in val/dice (classes 0..2 as above).
    assert mean.compute().item() == pytest.approx((4 / 5 + 1 / 2 + 0) / 3)
    assert mean.compute().item() == pytest.approx(_summary()["val/dice"])
