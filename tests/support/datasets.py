"""Small datasets written to disk for tests, in every layout the project reads."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.data.synthetic import TEXTURES, render_scene

#: The real CamVid tree beside the checkout (../shared/datasets, see its README); tests that read
#: it skip when it is absent.
CAMVID = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "camvid"
needs_camvid = pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason=f"CamVid not found at {CAMVID}")

CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]  # fmt: skip


def label_map(seed: int, size: int = 64, num_classes: int = 3) -> np.ndarray:
    """A label map of overlapping shapes with classes ``0..num_classes-1``."""
    rng = np.random.default_rng(seed)
    _, labels = render_scene(size, rng, list(TEXTURES.values()), max_shapes=6, noise=10.0)
    relabel = rng.integers(0, num_classes, size=labels.max() + 1)
    return relabel[labels].astype(np.uint8)


def photo(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, 256, (size, size, 3), dtype=np.uint8)


def photo_of(labels: np.ndarray, seed: int) -> np.ndarray:
    """A photo a model can learn the labels from: each class its own grey level, plus noise."""
    levels = np.linspace(40, 215, int(labels.max()) + 1 if labels.size else 1)
    noise = np.random.default_rng(seed + 2000).normal(0, 20, (*labels.shape, 3))
    return np.clip(levels[labels][..., None] + noise, 0, 255).astype(np.uint8)


#: How masks are stored: a label map in, the image file's content out.
Encoder = Callable[[np.ndarray], Image.Image]


def binary_255(labels: np.ndarray) -> Image.Image:
    """A 0/255 8-bit mask (Carvana, most medical sets): foreground 255."""
    return Image.fromarray((labels > 0).astype(np.uint8) * 255)


def palette_png(
    labels: np.ndarray, colours: Sequence[Sequence[int]] = ((0, 0, 0), (200, 0, 0), (0, 180, 60))
) -> Image.Image:
    """A palette ("P") PNG as VOC stores masks: the pixel is the class index, 255 is white."""
    image = Image.fromarray(labels.astype(np.uint8))
    table = np.full((256, 3), 255, dtype=np.uint8)
    table[: len(colours)] = colours
    image.putpalette(table.reshape(-1).tolist())  # an "L" image with a palette becomes "P"
    return image


def uint16_codes(codes: Sequence[int]) -> Encoder:
    """16-bit masks ("I;16") storing ``codes[label]`` for each pixel."""
    return lambda labels: Image.fromarray(np.asarray(codes, dtype=np.uint16)[labels])


def write_folder(
    root: Path,
    splits: dict[str, int],
    num_classes: int = 3,
    size: int = 64,
    images: str = "{split}/images",
    masks: str = "{split}/masks",
    palette: Sequence[Sequence[int]] | None = None,
    encode: Encoder | None = None,
    learnable: bool = False,
) -> Path:
    """Write ``count`` image/mask pairs per split. Masks are 8-bit class indices, colours when
    ``palette`` is given, or whatever ``encode`` makes of the label map; ``learnable`` photos
    show their labels (``photo_of``), the others are noise."""
    for split, count in splits.items():
        (root / images.format(split=split)).mkdir(parents=True, exist_ok=True)
        (root / masks.format(split=split)).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed = i + 100 * len(split)
            labels = label_map(seed, size, num_classes)
            image = photo_of(labels, seed) if learnable else photo(seed, size)
            Image.fromarray(image).save(root / images.format(split=split) / f"{i:03d}.png")
            if encode is not None:
                mask = encode(labels)
            else:
                mask = Image.fromarray(
                    labels if palette is None else np.asarray(palette, dtype=np.uint8)[labels]
                )
            mask.save(root / masks.format(split=split) / f"{i:03d}.png")
    return root


def jpeg_pair(labels: np.ndarray, palette: Sequence[Sequence[int]], seed: int, quality: int = 85) -> bytes:
    """A side-by-side JPEG: photo on the left, the colour-coded labels on the right."""
    colours = np.asarray(palette, dtype=np.uint8)[labels]
    pair = np.concatenate([photo(seed, labels.shape[0]), colours], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pair).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_pairs(
    root: Path, splits: dict[str, int], size: int = 128, quality: int = 85
) -> dict[str, list[np.ndarray]]:
    """Write JPEG pairs with Cityscapes colours; return the true label maps per split."""
    truth: dict[str, list[np.ndarray]] = {}
    for split, count in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        truth[split] = []
        for i in range(count):
            labels = label_map(7 * i + len(split), size, num_classes=19)
            (root / split / f"{i:03d}.jpg").write_bytes(jpeg_pair(labels, CITYSCAPES_PALETTE, i, quality))
            truth[split].append(labels)
    return truth
