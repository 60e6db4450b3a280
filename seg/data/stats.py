"""Class statistics of decoded masks: pixel histograms and median-frequency class weights."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def class_histogram(
    masks: Iterable[np.ndarray], num_classes: int, ignore_index: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per class: pixels, and images containing it; plus the number of ignored pixels."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    ignored = 0
    for mask in masks:
        counts = np.bincount(mask.reshape(-1).astype(np.int64), minlength=max(num_classes, 1))
        if ignore_index is not None and ignore_index < len(counts):
            ignored += int(counts[ignore_index])
            if ignore_index < num_classes:
                counts[ignore_index] = 0
        counts = counts[:num_classes]
        pixels += counts
        images += counts > 0
    return pixels, images, ignored


#: The ``loss.class_weights`` names of weights computed from the training masks, and the power
#: each raises SegNet's median-frequency weights to (0.5 halves their spread in log scale).
MEDIAN_FREQUENCY_POWERS = {"median_frequency": 1.0, "sqrt_median_frequency": 0.5}


def median_frequency_weights(pixels: np.ndarray, totals: np.ndarray) -> list[float]:
    """SegNet's class weights, ``median(freq) / freq_c`` with ``freq_c = pixels_c / totals_c``.

    ``totals_c`` is the number of (non-ignored) pixels of the images that contain class ``c``.
    """
    freq = np.where(totals > 0, pixels / np.maximum(totals, 1), 0.0)
    present = freq > 0
    median = float(np.median(freq[present])) if present.any() else 1.0
    return [round(float(median / f), 4) if f > 0 else 0.0 for f in freq]


def median_frequency_from_masks(
    masks: Iterable[np.ndarray], num_classes: int, ignore_index: int | None
) -> list[float]:
    """Median-frequency weights: ``freq_c`` = pixels of ``c`` / pixels of the images containing ``c``.

    Ignored pixels count towards neither. A class that never occurs gets weight 0.
    """
    pixels = np.zeros(num_classes, dtype=np.int64)
    totals = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        counts, _, _ = class_histogram([mask], num_classes, ignore_index)
        pixels += counts
        totals += np.where(counts > 0, counts.sum(), 0)
    return median_frequency_weights(pixels, totals)
