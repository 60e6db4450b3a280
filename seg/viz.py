"""Colours for classes (and, later, the pictures made from them)."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def default_palette(num_classes: int) -> list[list[int]]:
    """``num_classes`` distinct, deterministic colours (golden-ratio hue steps)."""
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        saturation = 0.65 + 0.35 * ((i // 7) % 2)
        value = 0.95 - 0.3 * ((i // 3) % 2)
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append([round(r * 255), round(g * 255), round(b * 255)])
    return colours


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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)
    return target
