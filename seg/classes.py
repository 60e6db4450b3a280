"""What a model's output channels mean: class names, their colours, the ignored label and the
input channels (``ClassInfo``), with the defaults every part of seg uses when a dataset names
none. The data module exposes it; the run directory, reports, exports and predictions read it."""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg.artifacts import write_json


def default_names(num_classes: int) -> list[str]:
    """``class_0``, ``class_1``, ...: the names of classes a dataset does not name."""
    return [f"class_{i}" for i in range(num_classes)]


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


@dataclass
class ClassInfo:
    """What the output channels of a model mean: the schema of a run's classes file."""

    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int | None = None
    in_channels: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def generated(cls, num_classes: int, in_channels: int = 3) -> ClassInfo:
        """Placeholder names and colours, for a model saved without a classes file."""
        return cls(default_names(num_classes), default_palette(num_classes), None, in_channels)

    @classmethod
    def read(cls, path: Path) -> ClassInfo:
        data = json.loads(path.read_text())
        names = list(data["class_names"])
        palette = data.get("palette") or default_palette(len(names))
        return cls(names, palette, data.get("ignore_index"), int(data.get("in_channels", 3)))

    def write(self, path: Path) -> Path:
        """Write this as JSON to ``path`` (a run's ``RunDir.classes``); return the path."""
        return write_json(path, self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "palette": self.palette,
            "in_channels": self.in_channels,
            "input": "float32 (B, C, H, W) scaled to [0, 1]; any H and W (multiples of 16 for ONNX and .pt2)",
            "output": "logits (B, num_classes, H, W)",
        }
