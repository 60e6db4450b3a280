"""Mask decoders: from what is stored in a mask file to one class index per pixel.

``MaskDecoder`` reads single-channel masks as class indices and colour (RGB) masks by nearest
palette colour. ``KMeansColours`` finds the classes itself, as k colour clusters fitted once
(seeded) on the training masks and cached, so that training, evaluation and prediction agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg.data.cache import cached_json
from seg.data.layouts import Sample
from seg.errors import DataError

log = logging.getLogger(__name__)

Palette = list[list[int]]


#: RGB -> YCbCr (JPEG's colour space). JPEG keeps luma sharp and blurs chroma, so colour
#: matching weighs chroma differences down.
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
CHROMA_WEIGHT = 0.3


def nearest_colour(
    rgb: np.ndarray, palette: np.ndarray, max_distance: float | None, fill: int
) -> np.ndarray:
    """Index of the nearest ``palette`` colour for every pixel of ``rgb`` ``(H, W, 3)``.

    Distances are measured in YCbCr with chroma weighted by ``CHROMA_WEIGHT`` (robust to
    JPEG's chroma subsampling); pixels farther than ``max_distance`` from every colour get
    ``fill``. Each distinct colour is matched once, so JPEG-noisy masks stay fast.
    """
    flat = rgb.reshape(-1, 3).astype(np.int64)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    colours, inverse = np.unique(packed, return_inverse=True)
    unique_rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1)
    weights = np.array([1.0, CHROMA_WEIGHT, CHROMA_WEIGHT])
    a = unique_rgb.astype(np.float64) @ _YCBCR.T
    b = np.asarray(palette, dtype=np.float64) @ _YCBCR.T
    d2 = (((a[:, None, :] - b[None, :, :]) ** 2) * weights).sum(-1)
    best = d2.argmin(1)
    if max_distance is not None:
        best = np.where(d2[np.arange(len(best)), best] <= max_distance**2, best, fill)
    dtype = np.uint8 if max(len(palette) - 1, fill) < 256 else np.int32
    return best.astype(dtype)[inverse.reshape(-1)].reshape(rgb.shape[:2])


def majority_filter(labels: np.ndarray) -> np.ndarray:
    """Replace each label by the most common label of its 3x3 neighbourhood (ties keep the pixel's own).

    This removes the isolated wrong pixels that JPEG leaves along colour edges.
    """
    height, width = labels.shape
    padded = np.pad(labels, 1, mode="edge")
    # The centre first, so that argmax keeps it on ties.
    offsets = [(1, 1)] + [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    shifted = np.stack([padded[dy : dy + height, dx : dx + width] for dy, dx in offsets])
    votes = (shifted[:, None] == shifted[None, :]).sum(1)
    return np.take_along_axis(shifted, votes.argmax(0)[None], 0)[0]


class MaskDecoder:
    """Class-index masks as they are; colour masks through a palette.

    Args:
        num_classes: valid class indices are ``0..num_classes-1``.
        ignore_index: the one other value a mask may hold; colour pixels that match no palette
            colour get it.
        palette: one ``[r, g, b]`` per class, needed for colour masks.
        max_distance: how far a colour may be from its palette colour (weighted YCbCr distance,
            in 0..255 units), which absorbs JPEG artefacts; farther pixels become ``ignore_index``.
        denoise: clean decoded colour masks with a 3x3 majority filter (JPEG edge noise).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        max_distance: float = 40.0,
        denoise: bool = True,
    ) -> None:
        self.num_classes = num_classes
        self.denoise = denoise
        self.ignore_index = ignore_index
        self.max_distance = max_distance
        self.palette: Palette | None = None
        if palette is not None:
            self.set_palette(palette)

    def set_palette(self, palette: Sequence[Sequence[int]]) -> None:
        colours = [[int(c) for c in colour] for colour in palette]
        if len(colours) != self.num_classes or any(len(c) != 3 for c in colours):
            raise DataError(
                f"data.palette needs {self.num_classes} [r, g, b] colours (one per class), got {len(colours)}"
            )
        self.palette = colours

    def prepare(self, samples: Sequence[Sample], read: Callable[[Sample], np.ndarray], cache_dir: Path) -> None:
        """Learn whatever the decoder needs from the training masks (nothing, here)."""

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Class indices ``(H, W)`` for a raw mask array read from ``path``."""
        if raw.ndim == 3:
            if self.palette is None:
                raise DataError(
                    f"mask {path} is a colour image but data.palette is not set; give one "
                    "[r, g, b] per class, or store masks as single-channel class indices"
                )
            # Without an ignore index, unmatched pixels get an invalid class and are refused.
            fill = self.ignore_index if self.ignore_index is not None else self.num_classes
            labels = nearest_colour(raw, np.asarray(self.palette), self.max_distance, fill)
            if self.denoise:
                labels = majority_filter(labels)
            if self.ignore_index is None and (labels == fill).any():
                raise DataError(
                    f"mask {path} has colours farther than data.decoder.max_distance="
                    f"{self.max_distance} from every palette colour; set data.ignore_index to "
                    "ignore them, or raise max_distance"
                )
            return labels
        return self._check_indices(raw, path)

    def _check_indices(self, labels: np.ndarray, path: Path) -> np.ndarray:
        values = np.unique(labels)
        bad = [int(v) for v in values if v >= self.num_classes and v != self.ignore_index]
        if bad:
            raise DataError(
                f"mask {path} holds label value(s) {bad[:5]} but there are only {self.num_classes} "
                f"classes (0..{self.num_classes - 1}) and ignore_index is {self.ignore_index}; "
                "fix the mask or set data.num_classes / data.ignore_index"
            )
        # uint8 when the labels fit (fast augmentation), int32 for 16-bit masks with large labels.
        return labels.astype(np.uint8 if values[-1] < 256 else np.int32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})"


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns the ``(k, dim)`` centres, largest cluster first."""
    rng = np.random.default_rng(seed)
    points = points.astype(np.float64)
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min([((points - c) ** 2).sum(1) for c in centres], axis=0)
        total = d2.sum()
        pick = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
        centres.append(points[pick])
    c = np.stack(centres)
    for _ in range(iterations):
        assign = ((points[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        moved = np.stack([points[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(moved, c):
            break
        c = moved
    assign = ((points[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    order = np.argsort(-np.bincount(assign, minlength=k), kind="stable")
    return c[order]


class KMeansColours(MaskDecoder):
    """Colour masks whose classes are ``num_classes`` colour clusters, fitted on training masks.

    The clusters are fitted once with a fixed seed on pixels sampled from the training masks,
    ordered from the most to the least frequent, and cached as JSON; pass ``centres`` to reuse
    a known set (for example from a run's classes file, ``RunDir.classes``).

    Args:
        num_classes: number of clusters (13 in the original recipe).
        seed: seed of pixel sampling and of k-means.
        centres: fixed cluster colours; no fitting when given.
        max_images: at most this many training masks are sampled.
        pixels_per_image: pixels sampled from each of them.
        denoise: clean decoded masks with a 3x3 majority filter.
    """

    def __init__(
        self,
        num_classes: int = 13,
        seed: int = 0,
        centres: Sequence[Sequence[int]] | None = None,
        max_images: int = 200,
        pixels_per_image: int = 500,
        denoise: bool = True,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=None, palette=centres, denoise=denoise)
        self.seed = seed
        self.max_images = max_images
        self.pixels_per_image = pixels_per_image

    def prepare(self, samples: Sequence[Sample], read: Callable[[Sample], np.ndarray], cache_dir: Path) -> None:
        if self.palette is not None:
            return
        names = "\n".join(str(s.image.resolve()) for s in samples)
        key = [names, self.num_classes, self.seed, self.max_images, self.pixels_per_image]
        self.set_palette(cached_json(cache_dir, "kmeans", key, lambda: self._fit(samples, read))["centres"])

    def _fit(self, samples: Sequence[Sample], read: Callable[[Sample], np.ndarray]) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        picked = rng.permutation(len(samples))[: self.max_images]
        pixels = []
        for i in sorted(picked):
            raw = read(samples[i]).reshape(-1, 3)
            pixels.append(raw[rng.integers(len(raw), size=self.pixels_per_image)])
        log.info("Fitting %d colour clusters on %d training masks", self.num_classes, len(picked))
        centres = kmeans(np.concatenate(pixels), self.num_classes, self.seed).round().astype(int)
        return {"centres": centres.tolist(), "seed": self.seed, "images": len(picked)}

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim != 3:
            raise DataError(f"mask {path} is single-channel; the k-means decoder needs colour masks")
        labels = nearest_colour(raw, np.asarray(self.palette), None, 0)
        return majority_filter(labels) if self.denoise else labels
