"""Decoding image and mask files into arrays, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seg.data.layouts import Sample
from seg.errors import DataError

_READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


def open_image(path: Path, what: str) -> Image.Image:
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd metadata; we only need pixels
            image = Image.open(path)
            image.load()
        return image
    except _READ_ERRORS as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None


def image_size(path: Path, what: str = "file") -> tuple[int, int]:
    """``(width, height)`` from the header of ``what`` (image, mask), without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except _READ_ERRORS as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None


def to_channels(image: Image.Image, in_channels: int) -> np.ndarray:
    """``(H, W, in_channels)`` uint8: grayscale, RGBA, palette and 16-bit images are converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().astype(np.uint8))
    array = np.asarray(image.convert("RGB" if in_channels == 3 else "L"))
    return array if array.ndim == 3 else array[..., None]


def read_mask_array(image: Image.Image) -> np.ndarray:
    """The raw mask: ``(H, W)`` class indices, or ``(H, W, 3)`` colours for RGB(A) masks."""
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB"))
    if image.mode == "LA":
        return np.asarray(image.getchannel("L"))
    return np.asarray(image)


def read_sample(sample: Sample, in_channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Decode a sample into an ``(H, W, C)`` uint8 image and its raw mask array."""
    if sample.mask is None:  # side by side: photo | label
        both = open_image(sample.image, "image")
        width, height = both.size
        if width != 2 * height:
            raise DataError(
                f"image {sample.image} is {width}x{height}; side-by-side pairs must be twice as "
                "wide as high (photo on the left, label on the right)"
            )
        half = width // 2
        image = to_channels(both.crop((0, 0, half, height)), in_channels)
        mask = read_mask_array(both.crop((half, 0, width, height)).convert("RGB"))
        return image, mask
    image = to_channels(open_image(sample.image, "image"), in_channels)
    mask = read_mask_array(open_image(sample.mask, "mask"))
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"image {sample.image} is {image.shape[1]}x{image.shape[0]} but its mask {sample.mask} "
            f"is {mask.shape[1]}x{mask.shape[0]}; they must have the same size"
        )
    return image, mask
