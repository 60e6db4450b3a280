"""Procedural, seeded scenes for trying the framework without downloading anything.

Each image is a smoothly varying background (class 0, ``background``) with a few overlapping
shapes painted on top. A shape's class is its *texture* (stripes, checks, dots, rings, ...);
its outline (ellipse, rectangle, polygon), size, orientation and two colours are random, so
colour alone never gives the class away and the network has to look at local structure.
Pixel noise is added last. Every image is generated from ``(seed, split, index)`` alone, so
the data are identical on every machine and do not depend on how many images are asked for.

The generator writes the generic folder layout (``<split>/images/*.png`` and
``<split>/masks/*.png``), which is then read by the same loader as real data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from seg.data.cache import fingerprint
from seg.data.layouts import FolderLayout
from seg.errors import ConfigError

#: Bump when the generator's output changes, so old caches are not reused.
GENERATOR_VERSION = 1

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _stripes(period: tuple[float, float]) -> Texture:
    def texture(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u, _ = _rotated(x, y, rng.uniform(0, np.pi))
        p = rng.uniform(*period)
        return ((u / p) % 1.0 < 0.5).astype(np.float32)

    return texture


def _checks(cell: tuple[float, float]) -> Texture:
    def texture(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = rng.uniform(*cell)
        return ((np.floor(x / c) + np.floor(y / c)) % 2).astype(np.float32)

    return texture


def _flat(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.zeros_like(x)


def _dots(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    spacing = rng.uniform(5.5, 7.0)
    dx = (x / spacing) % 1.0 - 0.5
    dy = (y / spacing) % 1.0 - 0.5
    return (dx**2 + dy**2 < 0.09).astype(np.float32)


def _rings(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cx, cy = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
    r = np.hypot(x - cx, y - cy)
    return ((r / rng.uniform(5.0, 7.0)) % 1.0 < 0.5).astype(np.float32)


def _grid(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    spacing = rng.uniform(6.0, 8.0)
    return (((x / spacing) % 1.0 < 0.22) | ((y / spacing) % 1.0 < 0.22)).astype(np.float32)


def _bricks(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height = rng.uniform(6.0, 8.0)
    row = np.floor(y / height)
    mortar_h = (y / height) % 1.0 < 0.25
    mortar_v = ((x / (2 * height) + 0.5 * row) % 1.0) < 0.125
    return (mortar_h | mortar_v).astype(np.float32)


def _speckle(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(x.shape) < 0.5).astype(np.float32)


def _waves(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u, v = _rotated(x, y, rng.uniform(0, np.pi))
    p = rng.uniform(9.0, 12.0)
    return (0.5 + 0.5 * np.sin(2 * np.pi * (u + 3.0 * np.sin(v / 6.0)) / p)).astype(np.float32)


def _crosshatch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    spacing = rng.uniform(6.0, 8.0)
    a = ((x + y) / spacing) % 1.0 < 0.25
    b = ((x - y) / spacing) % 1.0 < 0.25
    return (a | b).astype(np.float32)


#: What the generator can paint, by class name. Class 0 is always ``background``; the data config
#: (``conf/data/synthetic.yaml``) chooses the other classes by name, in label order. Flips and
#: 90-degree rotations keep every texture the same texture.
TEXTURES: dict[str, Texture] = {
    "flat": _flat,
    "thin_stripes": _stripes((3.5, 4.5)),
    "wide_stripes": _stripes((10.0, 13.0)),
    "small_checks": _checks((3.0, 4.0)),
    "large_checks": _checks((8.0, 10.0)),
    "dots": _dots,
    "rings": _rings,
    "grid": _grid,
    "bricks": _bricks,
    "speckle": _speckle,
    "waves": _waves,
    "crosshatch": _crosshatch,
}
BACKGROUND = "background"


def layout() -> FolderLayout:
    """Where ``SyntheticScenes.build`` writes images and masks, for the loader to read them back."""
    return FolderLayout({split: {"images": f"{split}/images", "masks": f"{split}/masks"} for split in _SPLIT_IDS})


def _shape_mask(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ellipse, rectangle or convex polygon, as a boolean mask."""
    cx, cy = rng.uniform(0.1, 0.9, size=2) * size
    ra, rb = rng.uniform(0.12, 0.3, size=2) * size
    u, v = _rotated(x - cx, y - cy, rng.uniform(0, np.pi))
    kind = rng.integers(3)
    if kind == 0:
        return (u / ra) ** 2 + (v / rb) ** 2 <= 1.0
    if kind == 1:
        return (np.abs(u) <= ra) & (np.abs(v) <= rb * 0.8)
    sides = int(rng.integers(3, 7))
    inside = np.ones_like(x, dtype=bool)
    for k in range(sides):
        theta = 2 * np.pi * k / sides
        inside &= np.cos(theta) * u + np.sin(theta) * v <= ra * np.cos(np.pi / sides)
    return inside


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours far enough apart for a pattern to show."""
    while True:
        a, b = rng.uniform(0, 255, size=(2, 3))
        if np.abs(a - b).sum() > 150:
            return a, b


def render_scene(
    size: int, rng: np.random.Generator, textures: Sequence[Texture], max_shapes: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render one ``(size, size, 3)`` uint8 image and its ``(size, size)`` uint8 label map, whose
    class ``i >= 1`` is painted with ``textures[i - 1]``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
    background = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    image = np.asarray(background, dtype=np.float32).copy()
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(2, max_shapes + 1))):
        mask = _shape_mask(x, y, size, rng)
        if not mask.any():
            continue
        cls = int(rng.integers(1, len(textures) + 1))
        pattern = textures[cls - 1](x, y, rng)[..., None]
        a, b = _two_colours(rng)
        image[mask] = ((1 - pattern) * a + pattern * b)[mask]
        label[mask] = cls
    image += rng.normal(0, noise, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), label


class SyntheticScenes:
    """Writes a seeded synthetic dataset in the folder layout, once, and reuses it.

    The values are set in ``conf/data/synthetic.yaml``.

    Args:
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        image_size: side of the square images, in pixels.
        max_shapes: at most this many shapes per image (at least two).
        noise: standard deviation of the Gaussian pixel noise, in 0..255 units.
        seed: base seed; image ``i`` of a split depends only on ``(seed, split, i)``.
        class_names: ``background``, then names from ``TEXTURES``; label ``i`` is class ``i``.
    """

    def __init__(
        self,
        *,
        num_train: int,
        num_val: int,
        num_test: int,
        image_size: int,
        max_shapes: int,
        noise: float,
        seed: int,
        class_names: Sequence[str],
    ) -> None:
        names = list(class_names)
        unknown = [name for name in names[1:] if name not in TEXTURES]
        if not names or names[0] != BACKGROUND or unknown:
            raise ConfigError(
                f"data.class_names={names} cannot be generated: the synthetic classes are {BACKGROUND} "
                f"first, then any of {', '.join(TEXTURES)}"
            )
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size = image_size
        self.max_shapes = max_shapes
        self.noise = noise
        self.seed = seed
        self.class_names = names
        self.textures = [TEXTURES[name] for name in names[1:]]

    def spec(self) -> dict[str, object]:
        """Everything that determines the generated files."""
        return {
            "version": GENERATOR_VERSION,
            "counts": self.counts,
            "image_size": self.image_size,
            "max_shapes": self.max_shapes,
            "noise": self.noise,
            "seed": self.seed,
            "class_names": self.class_names,
        }

    def path(self, cache_dir: str | os.PathLike[str]) -> Path:
        """The folder this dataset lives in: a fingerprint of its spec under ``cache_dir``."""
        return Path(cache_dir) / f"synthetic-{fingerprint(self.spec(), length=10)}"

    def build(self, cache_dir: str | os.PathLike[str]) -> Path:
        """Generate the dataset under ``cache_dir`` unless it is already there; return its root.

        Files are written into a temporary folder that is renamed into place at the end, so an
        interrupted or concurrent build never leaves a half-written dataset behind.
        """
        root = self.path(cache_dir)
        if (root / "spec.json").is_file():
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            for split, count in self.counts.items():
                folders = {kind: tmp / folder for kind, folder in layout().splits[split].items()}
                for folder in folders.values():
                    folder.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([self.seed, _SPLIT_IDS[split], i])
                    image, label = render_scene(self.image_size, rng, self.textures, self.max_shapes, self.noise)
                    Image.fromarray(image).save(folders["images"] / f"{i:05d}.png")
                    Image.fromarray(label).save(folders["masks"] / f"{i:05d}.png")
            (tmp / "spec.json").write_text(json.dumps(self.spec(), indent=2) + "\n")
            try:
                tmp.rename(root)
            except OSError:
                if not (root / "spec.json").is_file():  # nobody else finished it either
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return root
