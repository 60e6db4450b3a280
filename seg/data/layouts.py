"""Where a dataset's images and masks are on disk: one class per layout.

A layout lists the samples of a split and reports the files it cannot pair (an image with no
mask, a mask with no image) as problems instead of stopping at the first, so that
``seg.check_data`` can show them all and training can refuse to start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One training example: an image file and its mask file.

    ``mask`` is ``None`` for side-by-side files, whose right half is the colour label.
    """

    image: Path
    mask: Path | None = None


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset file, with the file and a message that says what."""

    kind: str
    path: Path
    message: str


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


class FolderLayout:
    """Images and masks in two folders per split, paired by file stem (``a.jpg`` with ``a.png``).

    Args:
        splits: for each split (``train``, ``val``, ``test``), its ``images`` and ``masks``
            folders relative to the dataset root. Splits whose image folder does not exist
            are absent (``test`` is optional; ``val`` can be carved from ``train``).
    """

    def __init__(self, splits: Mapping[str, Mapping[str, str]]) -> None:
        self.splits = {name: dict(folders) for name, folders in splits.items()}

    def has_split(self, root: Path, split: str) -> bool:
        return split in self.splits and (root / self.splits[split]["images"]).is_dir()

    def describe(self, split: str) -> str:
        folders = self.splits[split]
        return f"<root>/{folders['images']}/ with masks in <root>/{folders['masks']}/"

    def samples(self, root: Path, split: str) -> tuple[list[Sample], list[Problem]]:
        images_dir = root / self.splits[split]["images"]
        masks_dir = root / self.splits[split]["masks"]
        if not images_dir.is_dir():
            message = f"no image folder {images_dir} (expected {self.describe(split)})"
            return [], [Problem("missing folder", images_dir, message)]
        if not masks_dir.is_dir():
            message = f"no mask folder {masks_dir} for the images in {images_dir}"
            return [], [Problem("missing folder", masks_dir, message)]
        images, masks = _files(images_dir), _files(masks_dir)
        problems = [
            Problem("image without mask", images[stem], f"image {images[stem]} has no mask in {masks_dir}")
            for stem in sorted(set(images) - set(masks))
        ]
        problems += [
            Problem("mask without image", masks[stem], f"mask {masks[stem]} has no image in {images_dir}")
            for stem in sorted(set(masks) - set(images))
        ]
        samples = [Sample(images[stem], masks[stem]) for stem in sorted(set(images) & set(masks))]
        if not images:
            problems.append(Problem("empty folder", images_dir, f"no images in {images_dir}"))
        return samples, problems

    def __repr__(self) -> str:
        return f"FolderLayout({self.splits})"


class SideBySideLayout:
    """One file per sample, the photo on the left half and its colour label on the right half.

    This is the layout of the "Cityscapes image pairs" data (256x512 JPEGs).

    Args:
        splits: for each split, its folder relative to the dataset root.
    """

    def __init__(self, splits: Mapping[str, str]) -> None:
        self.splits = dict(splits)

    def has_split(self, root: Path, split: str) -> bool:
        return split in self.splits and (root / self.splits[split]).is_dir()

    def describe(self, split: str) -> str:
        return f"<root>/{self.splits[split]}/*.jpg (photo left, label right)"

    def samples(self, root: Path, split: str) -> tuple[list[Sample], list[Problem]]:
        folder = root / self.splits[split]
        if not folder.is_dir():
            return [], [Problem("missing folder", folder, f"no folder {folder}")]
        files = _files(folder)
        if not files:
            return [], [Problem("empty folder", folder, f"no images in {folder}")]
        return [Sample(path) for path in files.values()], []

    def __repr__(self) -> str:
        return f"SideBySideLayout({self.splits})"
