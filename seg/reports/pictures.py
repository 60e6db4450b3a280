"""Pictures people look at: class colours, prediction panels, confusion matrices, curves, histograms.

Figures are drawn with matplotlib's file-only backend, so no display is ever needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_class_histogram(
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    shares: Mapping[str, Sequence[float]],
    palette: Sequence[Sequence[int]],
) -> Path:
    """A bar chart of each split's pixel share per class (percent), bars in the class colours."""
    plt = _pyplot()
    splits = list(shares)
    width = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(class_names) + 2), 4.0), dpi=100)
    for k, split in enumerate(splits):
        xs = [i + (k - (len(splits) - 1) / 2) * width for i in range(len(class_names))]
        colours = [[c / 255 for c in palette[i]] for i in range(len(class_names))]
        ax.bar(
            xs,
            [100 * v for v in shares[split]],
            width,
            color=colours,
            edgecolor="black",
            linewidth=0.5,
            hatch=["", "//", ".."][k % 3],
            label=split,
        )
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_ylabel("pixels (%)")
    ax.set_title("Class pixel share per split")
    if len(splits) > 1:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def colorize(
    labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int | None = None
) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours for a label map; ignored (and unknown) labels are black."""
    table = np.zeros((max(int(labels.max(initial=0)) + 1, len(palette)), 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    if ignore_index is not None and 0 <= ignore_index < len(table):
        table[ignore_index] = 0
    return table[labels]


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float
) -> np.ndarray:
    """The image with its label colours blended on top (``alpha`` = weight of the colours)."""
    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    blend = (1 - alpha) * rgb.astype(np.float32) + alpha * colorize(labels, palette).astype(np.float32)
    return blend.round().clip(0, 255).astype(np.uint8)


def prediction_grid(
    images: np.ndarray,
    targets: np.ndarray,
    predictions: np.ndarray,
    palette: Sequence[Sequence[int]],
    ignore_index: int | None = None,
) -> np.ndarray:
    """Rows of input | ground truth | prediction for ``(N, H, W, C)`` images, as one uint8 picture.

    Small images are enlarged (nearest neighbour) to at least 128 pixels high.
    """
    scale = max(1, 128 // images.shape[1])
    if scale > 1:
        images, targets, predictions = (
            a.repeat(scale, axis=1).repeat(scale, axis=2) for a in (images, targets, predictions)
        )
    rows = []
    for image, target, prediction in zip(images, targets, predictions, strict=True):
        rgb = image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)
        gap = np.full((rgb.shape[0], 4, 3), 255, dtype=np.uint8)
        rows.append(
            np.concatenate(
                [
                    rgb,
                    gap,
                    colorize(target, palette, ignore_index),
                    gap,
                    colorize(prediction, palette, ignore_index),
                ],
                axis=1,
            )
        )
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, dtype=np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def confusion_matrix_figure(confmat: np.ndarray, class_names: Sequence[str], title: str = "") -> Any:
    """A row-normalised confusion matrix (rows: truth, columns: prediction) as a matplotlib figure."""
    plt = _pyplot()
    counts = np.asarray(confmat, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    im = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if normalised[i, j] >= 0.005:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        f"{100 * normalised[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    ax.set_title(title or "Confusion matrix (% of each true class)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def sample_panel_figure(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    ignore_index: int | None = None,
    title: str = "",
) -> Any:
    """input | ground truth | prediction | errors, with a legend of the classes shown."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    valid = np.ones_like(target, dtype=bool) if ignore_index is None else target != ignore_index
    errors = np.zeros((*target.shape, 3), dtype=np.uint8)
    errors[valid & (prediction == target)] = (40, 40, 40)
    errors[valid & (prediction != target)] = (255, 40, 40)
    errors[~valid] = (160, 160, 160)
    rgb = image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)
    panels = [
        (rgb, "input"),
        (colorize(target, palette, ignore_index), "ground truth"),
        (colorize(prediction, palette, ignore_index), "prediction"),
        (errors, f"errors ({100 * (valid & (prediction != target)).sum() / max(valid.sum(), 1):.1f}%)"),
    ]
    aspect = image.shape[0] / image.shape[1]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4 * aspect + 1.2), dpi=100)
    for ax, (picture, label) in zip(axes, panels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label)
        ax.axis("off")
    shown = sorted(set(np.unique(target).tolist()) | set(np.unique(prediction).tolist()))
    handles = [
        Patch(color=np.asarray(palette[c]) / 255, label=class_names[c]) for c in shown if c < len(class_names)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def curves_figure(epochs: Sequence[Mapping[str, float]], keys: Sequence[str]) -> Any:
    """Per-epoch curves of ``keys`` (losses on the left axis, the rest on the right)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    right = ax.twinx()
    for i, key in enumerate(keys):
        points = [(row["epoch"], row[key]) for row in epochs if key in row]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        target = ax if "loss" in key else right
        style = "--" if target is right else "-"
        target.plot(xs, ys, marker="o", markersize=3, label=key, linestyle=style, color=f"C{i}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    right.set_ylabel("score")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    from seg.artifacts import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return Path(path)


def figure_to_array(fig: Any) -> np.ndarray:
    """A matplotlib figure as an ``(H, W, 3)`` uint8 array (for TensorBoard), then closed."""
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    _pyplot().close(fig)
    return array
