"""The generic folder layout: ``<root>/<split>/images/*`` with masks at ``<root>/<split>/masks/<stem>.png``.

Masks hold one class index per pixel (8- or 16-bit single-channel PNG). Images are read as
RGB (grayscale and RGBA are converted) or as grayscale when ``in_channels`` is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from seg.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def find_pairs(
    root: Path, split: str, image_dir: str = "images", mask_dir: str = "masks"
) -> list[tuple[Path, Path]]:
    """Pair every image of ``root/split/image_dir`` with its mask, or raise ``DataError``."""
    images_path = root / split / image_dir
    masks_path = root / split / mask_dir
    if not images_path.is_dir():
        raise DataError(f"no image folder {images_path} (expected <root>/{split}/{image_dir}/)")
    if not masks_path.is_dir():
        raise DataError(f"no mask folder {masks_path} for the images in {images_path}")
    images = {p.stem: p for p in sorted(images_path.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    masks = {p.stem: p for p in sorted(masks_path.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_path}")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise DataError(
            f"{len(missing)} image(s) in {images_path} have no mask in {masks_path}, "
            f"e.g. {images[missing[0]].name} (expected {missing[0]}.png)"
        )
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(
            f"{len(orphans)} mask(s) in {masks_path} have no image in {images_path}, "
            f"e.g. {masks[orphans[0]].name}"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def check_sizes(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Raise ``DataError`` for the first image whose mask has a different size."""
    for image_path, mask_path in pairs:
        image_wh, mask_wh = image_size(image_path), image_size(mask_path)
        if image_wh != mask_wh:
            raise DataError(
                f"image {image_path} is {image_wh[0]}x{image_wh[1]} but its mask {mask_path} "
                f"is {mask_wh[0]}x{mask_wh[1]}; they must have the same size"
            )


def read_image(path: Path, in_channels: int = 3) -> np.ndarray:
    """Decode an image as ``(H, W, 3)`` RGB or ``(H, W, 1)`` grayscale uint8."""
    mode = "RGB" if in_channels == 3 else "L"
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return array if array.ndim == 3 else array[..., None]


def read_mask(path: Path, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Decode a class-index mask as ``(H, W)`` and check every value is a class or ignored."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I;16", "I;16B", "I", "1"):
                raise DataError(
                    f"mask {path} is a {im.mode} image; masks must be single-channel PNGs "
                    "holding one class index per pixel"
                )
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read mask {path}: {e}") from None
    values = np.unique(array)
    bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if bad:
        raise DataError(
            f"mask {path} holds label value(s) {bad[:5]} but there are only {num_classes} "
            f"classes (0..{num_classes - 1}) and ignore_index is {ignore_index}; "
            "fix the mask or set data.num_classes / data.ignore_index"
        )
    # uint8 when the labels fit (fast augmentation), int32 for 16-bit masks with large labels.
    return array.astype(np.uint8 if values[-1] < 256 else np.int32, copy=False)


class SegmentationDataset(Dataset):
    """Image/mask pairs read from disk, optionally decoded once and kept in memory.

    Args:
        pairs: ``(image_path, mask_path)`` tuples.
        num_classes: number of classes; mask values must be below it (or ``ignore_index``).
        ignore_index: mask value to ignore, or ``None``.
        transform: called with ``(image, mask)`` arrays, returns tensors.
        in_channels: 3 for RGB, 1 for grayscale.
        cache: decode every pair now and keep the arrays (fast epochs, errors found up front).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        num_classes: int,
        ignore_index: int | None,
        transform: Transform,
        in_channels: int = 3,
        cache: bool = True,
    ) -> None:
        self.pairs = list(pairs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transform = transform
        self.in_channels = in_channels
        self._cache = [self._read(i) for i in range(len(self.pairs))] if cache else None

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.in_channels)
        mask = read_mask(mask_path, self.num_classes, self.ignore_index)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}; they must have the same size"
            )
        return image, mask

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self._cache[index] if self._cache is not None else self._read(index)
        return self.transform(image, mask)
