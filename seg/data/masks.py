"""Mask formats (``data/mask_format``): from what is stored in a mask file to one class index per pixel.

``MaskFormat`` reads single-channel masks (8-bit, 16-bit, palette PNGs by index) as class
indices, or through a mapping from stored values to classes (``{0: 0, 255: 1}``), and colour
(RGB) masks by nearest palette colour. ``BinaryMask`` reads any background/foreground coding as
two classes. ``KMeansColours`` finds the classes itself, as k colour clusters fitted once
(seeded) on the training masks and cached, so that training, evaluation and prediction agree.

Every format says in one line what it maps to what (``describe``), for ``seg.check_data``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg.data.cache import Sources, cached_json
from seg.data.layouts import Sample
from seg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Palette = list[list[int]]

#: Where the value mapping is set, as error messages name it.
MASK_VALUES_KEY = "data.mask_format.mask_values"


#: RGB -> YCbCr (JPEG's colour space). JPEG keeps luma sharp and blurs chroma, so colour
#: matching weighs chroma differences down.
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
CHROMA_WEIGHT = 0.3


def nearest_colour(rgb: np.ndarray, palette: np.ndarray, max_distance: float | None, fill: int) -> np.ndarray:
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


class MaskFormat:
    """Class-index masks as they are, or through a value mapping; colour masks through a palette.

    Args:
        num_classes: valid class indices are ``0..num_classes-1``.
        ignore_index: the one other value a mask may hold; colour pixels that match no palette
            colour get it.
        palette: one ``[r, g, b]`` per class, needed for colour masks.
        max_distance: how far a colour may be from its palette colour (weighted YCbCr distance,
            in 0..255 units), which absorbs JPEG artefacts; farther pixels become ``ignore_index``.
        denoise: clean decoded colour masks with a 3x3 majority filter (JPEG edge noise).
        mask_values: stored value -> class for single-channel masks (``{0: 0, 255: 1}``); a
            class may also be ``ignore_index``. ``None``: stored values are the classes.
        ignore_unmapped: values missing from ``mask_values`` become ``ignore_index`` instead of
            stopping with an error.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        max_distance: float = 40.0,
        denoise: bool = True,
        mask_values: Mapping[Any, Any] | None = None,
        ignore_unmapped: bool = False,
    ) -> None:
        self.num_classes = num_classes
        self.denoise = denoise
        self.ignore_index = ignore_index
        self.max_distance = max_distance
        self.palette: Palette | None = None
        if palette is not None:
            self.set_palette(palette)
        self.mask_values = self._check_mapping(mask_values) if mask_values is not None else None
        if ignore_unmapped and (self.mask_values is None or ignore_index is None):
            raise ConfigError(
                f"data.mask_format.ignore_unmapped=true needs {MASK_VALUES_KEY} (the values to keep) and "
                "data.ignore_index (what the others become)"
            )
        self.ignore_unmapped = ignore_unmapped
        self._tables: dict[str, np.ndarray] = {}

    def _check_mapping(self, mapping: Mapping[Any, Any]) -> dict[int, int]:
        checked: dict[int, int] = {}
        for value, cls in mapping.items():
            try:
                value, cls = int(value), int(cls)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{MASK_VALUES_KEY} maps stored values to classes, as integers "
                    f"(e.g. {{0: 0, 255: 1}}); got {value!r}: {cls!r}"
                ) from None
            if not (0 <= cls < self.num_classes or cls == self.ignore_index):
                raise ConfigError(
                    f"{MASK_VALUES_KEY} maps {value} to {cls}, but classes are 0..{self.num_classes - 1}"
                    f" (data.num_classes={self.num_classes}) or data.ignore_index={self.ignore_index}"
                )
            checked[value] = cls
        if not checked:
            raise ConfigError(f"{MASK_VALUES_KEY} is empty; give stored value: class pairs, or null")
        return checked

    def set_palette(self, palette: Sequence[Sequence[int]]) -> None:
        colours = [[int(c) for c in colour] for colour in palette]
        if len(colours) != self.num_classes or any(len(c) != 3 for c in colours):
            raise DataError(
                f"data.palette needs {self.num_classes} [r, g, b] colours (one per class), got {len(colours)}"
            )
        self.palette = colours

    def prepare(
        self, samples: Sequence[Sample], read: Callable[[Sample], np.ndarray], cache_dir: Path
    ) -> None:
        """Learn whatever the format needs from the training masks (nothing, here)."""

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Class indices ``(H, W)`` for a raw mask array read from ``path``."""
        if raw.ndim == 3:
            if self.mask_values is not None:
                raise DataError(
                    f"mask {path} is a colour image, but {MASK_VALUES_KEY} maps single-channel values; "
                    "decode colour masks with data.palette instead"
                )
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
                    f"mask {path} has colours farther than data.mask_format.max_distance="
                    f"{self.max_distance} from every palette colour; set data.ignore_index to "
                    "ignore them, or raise max_distance"
                )
            return labels
        if self.mask_values is not None:
            return self._map_values(raw, path)
        return self._check_indices(raw, path)

    def _map_values(self, raw: np.ndarray, path: Path) -> np.ndarray:
        values = integer_values(raw, path)
        mapping = self.mask_values or {}
        if values.dtype in (np.uint8, np.uint16):  # a lookup table: no sort of every pixel
            classes = self._table(values.dtype)[values]
            unmapped = classes < 0
            if unmapped.any():
                if not self.ignore_unmapped:
                    self._refuse_unmapped(np.unique(values), np.unique(values[unmapped]), mapping, path)
                classes[unmapped] = self.ignore_index
            return _compact(classes)
        found, inverse = np.unique(values, return_inverse=True)
        missing = [int(v) for v in found if int(v) not in mapping]
        if missing and not self.ignore_unmapped:
            self._refuse_unmapped(found, np.array(missing), mapping, path)
        classes = np.array([mapping.get(int(v), self.ignore_index) for v in found], dtype=np.int64)
        return _compact(classes[inverse.reshape(-1)].reshape(raw.shape))

    def _table(self, dtype: np.dtype) -> np.ndarray:
        """Class of every value a ``dtype`` mask can hold; -1 where ``mask_values`` has none.
        Built once per dtype (this runs for every mask a loader decodes)."""
        key = np.dtype(dtype).name
        if key not in self._tables:
            size = np.iinfo(dtype).max + 1
            table = np.full(size, -1, dtype=np.int32)
            for value, cls in (self.mask_values or {}).items():
                if 0 <= value < size:
                    table[value] = cls
            self._tables[key] = table
        return self._tables[key]

    @staticmethod
    def _refuse_unmapped(
        values: np.ndarray, missing: np.ndarray, mapping: Mapping[int, int], path: Path
    ) -> None:
        raise DataError(
            f"mask {path} holds values {_listed(values)}, of which {_listed(missing)} are not in "
            f"{MASK_VALUES_KEY}={_flow(mapping)}; give each a class there, or set "
            "data.mask_format.ignore_unmapped=true (with data.ignore_index) to ignore them"
        )

    def _check_indices(self, labels: np.ndarray, path: Path) -> np.ndarray:
        values = np.unique(integer_values(labels, path))
        bad = [int(v) for v in values if v >= self.num_classes and v != self.ignore_index]
        if bad:
            ignored = f" and ignore_index is {self.ignore_index}" if self.ignore_index is not None else ""
            raise DataError(
                f"mask {path} holds label value(s) {_listed(bad)} but there are only {self.num_classes} "
                f"classes (0..{self.num_classes - 1}){ignored}; {self._fix_for([int(v) for v in values])}"
            )
        return _compact(labels)

    def _fix_for(self, values: list[int]) -> str:
        """What to set when a mask holds ``values`` and some are not classes: a value mapping
        first (an example built from ``values`` when they fit), as masks store classes as codes
        (0/255 for binary masks) more often than they hold a class too many."""
        present = {v for v in values if v < self.num_classes}
        free = [c for c in range(self.num_classes) if c not in present]
        codes = [v for v in values if v >= self.num_classes and v != self.ignore_index]
        example = None
        if len(codes) <= len(free):
            mapping = {v: v for v in sorted(present)} | dict(
                zip(codes, free[len(free) - len(codes) :], strict=True)
            )
            example = f"'{MASK_VALUES_KEY}={_flow(dict(sorted(mapping.items())), compact=True)}'"
        if example is not None and self.num_classes == 2:
            binary = "data/mask_format=binary (any value above 0 is class 1)"
            return f"map stored values to classes with {example}, or use {binary}"
        also = f" (e.g. {example})" if example else ""
        return (
            f"map stored values to classes with {MASK_VALUES_KEY}{also}, fix the mask, or set "
            "data.num_classes / data.ignore_index"
        )

    def describe(self, class_names: Sequence[str]) -> str:
        """One line: how stored mask values become classes (``seg.check_data`` prints it)."""
        if self.mask_values is not None:
            pairs = ", ".join(
                f"{v} -> {self._class_label(c, class_names)}" for v, c in self.mask_values.items()
            )
            other = "ignored" if self.ignore_unmapped else "an error"
            return f"mask values -> classes ({MASK_VALUES_KEY}): {pairs}; any other value is {other}"
        line = f"single-channel masks hold class indices 0..{self.num_classes - 1}"
        if self.ignore_index is not None:
            line += f" ({self.ignore_index}: ignored)"
        if self.palette is not None:
            farther = "ignored" if self.ignore_index is not None else "refused"
            line += (
                f"; colour masks: nearest data.palette colour (farther than {self.max_distance}: {farther})"
            )
        return line

    def _class_label(self, cls: int, class_names: Sequence[str]) -> str:
        return "ignored" if cls == self.ignore_index else class_names[cls]

    def __repr__(self) -> str:
        mapping = (
            f", mask_values={self.mask_values}, ignore_unmapped={self.ignore_unmapped}"
            if self.mask_values
            else ""
        )
        name = type(self).__name__
        return f"{name}(num_classes={self.num_classes}, ignore_index={self.ignore_index}{mapping})"


def integer_values(raw: np.ndarray, path: Path) -> np.ndarray:
    """``raw`` as integers: float masks (``F``-mode TIFFs) must hold whole numbers."""
    if np.issubdtype(raw.dtype, np.floating):
        if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
            raise DataError(f"mask {path} holds non-integer values; masks store whole class values")
        return raw.astype(np.int64)
    return raw


def _compact(labels: np.ndarray) -> np.ndarray:
    """uint8 when the labels fit (fast augmentation), int32 for others (16-bit masks)."""
    fits = not labels.size or (int(labels.min()) >= 0 and int(labels.max()) < 256)
    return labels.astype(np.uint8 if fits else np.int32, copy=False)


def _listed(values: Sequence[int] | np.ndarray, most: int = 8) -> str:
    """``[0, 7, 255]``, cut to the first ``most`` values with ``...``."""
    shown = ", ".join(str(int(v)) for v in values[:most])
    return f"[{shown}]" if len(values) <= most else f"[{shown}, ...]"


def _flow(mapping: Mapping[int, int], compact: bool = False) -> str:
    """``{0: 0, 255: 1}``, or ``{0:0,255:1}`` for a command line."""
    sep, colon = (",", ":") if compact else (", ", ": ")
    return "{" + sep.join(f"{k}{colon}{v}" for k, v in mapping.items()) + "}"


class BinaryMask(MaskFormat):
    """Two classes from any background/foreground coding (0/1, 0/255, 0/65535, white on black):
    stored values above ``threshold`` are class 1, the others class 0. A colour mask's pixel is
    foreground where any channel is above ``threshold``.

    Args:
        num_classes: must be 2 (the data config's ``num_classes``, checked here).
        threshold: 0 reads any non-zero value as foreground; 127 splits JPEG-compressed 0/255 masks.
    """

    def __init__(self, num_classes: int = 2, threshold: float = 0) -> None:
        if num_classes != 2:
            raise ConfigError(
                f"data/mask_format=binary makes 2 classes, but data.num_classes={num_classes}; set it to 2"
            )
        super().__init__(num_classes=2)
        self.threshold = threshold

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        stored = raw.max(axis=-1) if raw.ndim == 3 else raw
        return (stored > self.threshold).astype(np.uint8)

    def describe(self, class_names: Sequence[str]) -> str:
        t = self.threshold
        background, foreground = class_names[:2]
        return f"binary masks (data/mask_format=binary): values <= {t} -> {background}, above -> {foreground}"

    def __repr__(self) -> str:
        return f"BinaryMask(threshold={self.threshold})"


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


class KMeansColours(MaskFormat):
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

    def prepare(
        self, samples: Sequence[Sample], read: Callable[[Sample], np.ndarray], cache_dir: Path
    ) -> None:
        if self.palette is not None:
            return
        names = "\n".join(str(s.image.resolve()) for s in samples)
        key = [names, self.num_classes, self.seed, self.max_images, self.pixels_per_image]
        rng = np.random.default_rng(self.seed)
        picked = sorted(rng.permutation(len(samples))[: self.max_images])
        # The masks sampled are what the clusters depend on: a change to one of them refits.
        masks = Sources([samples[i].mask or samples[i].image for i in picked], "training masks")
        fitted = cached_json(
            cache_dir, "kmeans", key, lambda: self._fit(samples, read, picked, rng), masks, "colour clusters"
        )
        self.set_palette(fitted["centres"])

    def _fit(
        self,
        samples: Sequence[Sample],
        read: Callable[[Sample], np.ndarray],
        picked: Sequence[int],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        pixels = []
        for i in picked:
            raw = read(samples[i]).reshape(-1, 3)
            pixels.append(raw[rng.integers(len(raw), size=self.pixels_per_image)])
        log.info("Fitting %d colour clusters on %d training masks", self.num_classes, len(picked))
        centres = kmeans(np.concatenate(pixels), self.num_classes, self.seed).round().astype(int)
        return {"centres": centres.tolist(), "seed": self.seed, "images": len(picked)}

    def describe(self, class_names: Sequence[str]) -> str:
        clusters = ", ".join(f"{c} -> {n}" for c, n in zip(self.palette or [], class_names, strict=False))
        return (
            f"colour masks: nearest of {self.num_classes} colour clusters of the training masks: {clusters}"
        )

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim != 3:
            raise DataError(f"mask {path} is single-channel; data/mask_format=kmeans needs colour masks")
        labels = nearest_colour(raw, np.asarray(self.palette), None, 0)
        return majority_filter(labels) if self.denoise else labels
