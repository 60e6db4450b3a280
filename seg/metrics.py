"""Per-class Dice and IoU on torchmetrics, with class names and an explicit absent-class policy.

Dice of a class is its pixel F1 score, ``2TP / (2TP + FP + FN)``, IoU is ``TP / (TP + FP + FN)``
and accuracy is ``TP / (TP + FN)`` (recall), all accumulated over every pixel of the split (not
averaged per image).
Pixels whose target is ``ignore_index`` are left out. A class that appears neither in the
targets nor in the predictions of the whole split has no score (NaN); the means are taken over
the classes that have one, and never over the ignored class. Accuracy is only defined for classes
present in the targets (mean class accuracy is over those).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

#: What ranks epochs and runs (best checkpoint, early stopping, sweeps) when a run names nothing
#: else: ``callbacks.model_checkpoint.monitor``'s default (conf/callbacks/default.yaml).
DEFAULT_MONITOR = "val/dice"


def build_metrics(num_classes: int, ignore_index: int | None = None) -> MetricCollection:
    """Accumulators for per-class Dice, IoU, accuracy (recall) and the confusion matrix over a split."""
    common = {"num_classes": num_classes, "ignore_index": ignore_index, "validate_args": False}
    return MetricCollection(
        {
            "dice": MulticlassF1Score(average="none", **common),
            "iou": MulticlassJaccardIndex(average="none", **common),
            "accuracy": MulticlassAccuracy(average="none", **common),
            "confmat": MulticlassConfusionMatrix(**common),
        },
        compute_groups=False,
    )


def metric_key(name: str) -> str:
    """A class name as it appears in metric names: ``Road sign`` becomes ``road_sign``."""
    return re.sub(r"[^0-9a-zA-Z_.-]+", "_", name.strip()).strip("_").lower() or "class"


def summarize(
    values: dict[str, torch.Tensor],
    class_names: Sequence[str],
    prefix: str,
    ignore_index: int | None = None,
) -> dict[str, float]:
    """Flatten computed metrics into ``{prefix}/dice``, ``{prefix}/dice/<class>``, ``{prefix}/iou``, ...

    ``{prefix}/accuracy`` is the mean class accuracy (recall), ``{prefix}/pixel_accuracy`` the
    global one.

    Classes absent from targets and predictions are NaN and left out of the means, and so is
    ``ignore_index`` when it is one of the classes.
    """
    confmat = values["confmat"].double()
    in_targets = confmat.sum(1) > 0
    present = {"dice": in_targets | (confmat.sum(0) > 0), "accuracy": in_targets}
    out: dict[str, float] = {}
    for metric in ("dice", "iou", "accuracy"):
        per_class = values[metric].double().clone()
        per_class[~present.get(metric, present["dice"])] = math.nan
        if ignore_index is not None and 0 <= ignore_index < len(per_class):
            per_class[ignore_index] = math.nan
        scored = [v for v in per_class.tolist() if not math.isnan(v)]
        out[f"{prefix}/{metric}"] = sum(scored) / len(scored) if scored else math.nan
        for name, value in zip(class_names, per_class.tolist(), strict=True):
            out[f"{prefix}/{metric}/{metric_key(name)}"] = value
    total = confmat.sum()
    out[f"{prefix}/pixel_accuracy"] = (confmat.trace() / total).item() if total > 0 else math.nan
    return out


class MeanDice(MulticlassConfusionMatrix):
    """The mean Dice of everything seen since the last reset, under ``summarize``'s class policy.

    A confusion matrix that computes to one number, so it can be logged as a metric object
    (``train/dice``): classes absent from both targets and predictions, and the ignored class,
    are left out of the mean.
    """

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        confmat = super().compute().double()
        tp = confmat.diag()
        scored = confmat.sum(0) + confmat.sum(1) > 0
        if self.ignore_index is not None and 0 <= self.ignore_index < len(scored):
            scored[self.ignore_index] = False
        dice = 2 * tp / (confmat.sum(0) + confmat.sum(1))
        return dice[scored].mean() if scored.any() else torch.tensor(math.nan, dtype=torch.double)
