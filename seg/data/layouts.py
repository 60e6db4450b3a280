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


def _files(folder: Path, suffix: str = "", recursive: bool = False) -> dict[str, Path]:
    """The image files under ``folder`` whose stem ends in ``suffix``, by key: the path relative to
    ``folder`` without extension and suffix (``aachen/aachen_000000_000019`` for Cityscapes'
    ``aachen/aachen_000000_000019_leftImg8bit.png``), so that two folders pair file by file."""
    paths = folder.rglob("*") if recursive else folder.iterdir()
    found = {}
    for path in sorted(paths):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.stem.endswith(suffix):
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        found[key[: len(key) - len(suffix)]] = path
    return found


class FolderLayout:
    """Images and masks in two folders per split, paired by file name (``a.jpg`` with ``a.png``).

    Args:
        splits: for each split (``train``, ``val``, ``test``), its ``images`` and ``masks``
            folders relative to the dataset root, and optionally a ``list``: a text file (relative
            to the root) of the sample names that make up the split, one per line (Pascal VOC's
            ``ImageSets/Segmentation/train.txt``). Splits whose image folder (or list) does not
            exist are absent (``test`` is optional; ``val`` can be carved from ``train``).
        image_suffix: the end of every image file's stem, left out when pairing
            (Cityscapes: ``_leftImg8bit``); files whose stem does not end in it are not images.
        mask_suffix: the same for masks (Cityscapes: ``_gtFine_labelIds``, which leaves out the
            colour, instance and polygon files beside them).
        recursive: look in subfolders too (Cityscapes keeps each city in its own), pairing by
            the path below the split's folder.
    """

    def __init__(
        self,
        splits: Mapping[str, Mapping[str, str]],
        image_suffix: str = "",
        mask_suffix: str = "",
        recursive: bool = False,
    ) -> None:
        self.splits = {name: dict(folders) for name, folders in splits.items()}
        self.image_suffix = image_suffix
        self.mask_suffix = mask_suffix
        self.recursive = recursive

    def has_split(self, root: Path, split: str) -> bool:
        if split not in self.splits or not (root / self.splits[split]["images"]).is_dir():
            return False
        listed = self.splits[split].get("list")
        return listed is None or (root / listed).is_file()

    def describe(self, split: str) -> str:
        folders = self.splits[split]
        described = f"{self._pattern(folders['images'], self.image_suffix)} with masks in "
        described += self._pattern(folders["masks"], self.mask_suffix)
        return described + (f", the split's names in <root>/{folders['list']}" if "list" in folders else "")

    def _pattern(self, folder: str, suffix: str) -> str:
        """``<root>/<folder>/``, and the file names when they must end in ``suffix`` or sit deeper."""
        named = self.recursive or suffix
        return f"<root>/{folder}/" + (f"{'**/' if self.recursive else ''}*{suffix}.*" if named else "")

    def samples(self, root: Path, split: str) -> tuple[list[Sample], list[Problem]]:
        folders = self.splits[split]
        images_dir, masks_dir = root / folders["images"], root / folders["masks"]
        if not images_dir.is_dir():
            message = f"no image folder {images_dir} (expected {self.describe(split)})"
            return [], [Problem("missing folder", images_dir, message)]
        if not masks_dir.is_dir():
            message = f"no mask folder {masks_dir} for the images in {images_dir}"
            return [], [Problem("missing folder", masks_dir, message)]
        images = _files(images_dir, self.image_suffix, self.recursive)
        masks = _files(masks_dir, self.mask_suffix, self.recursive)
        problems: list[Problem] = []
        if "list" in folders:
            images, problems = self._listed(root / folders["list"], images, images_dir)
        problems += [
            Problem("image without mask", images[key], f"image {images[key]} has no mask in {masks_dir}")
            for key in sorted(set(images) - set(masks))
        ]
        if "list" not in folders:
            problems += [
                Problem("mask without image", masks[key], f"mask {masks[key]} has no image in {images_dir}")
                for key in sorted(set(masks) - set(images))
            ]
        samples = [Sample(images[key], masks[key]) for key in sorted(set(images) & set(masks))]
        if not images and not problems:
            problems.append(Problem("empty folder", images_dir, f"no images in {images_dir}"))
        return samples, problems

    @staticmethod
    def _listed(
        listing: Path, images: dict[str, Path], images_dir: Path
    ) -> tuple[dict[str, Path], list[Problem]]:
        """The images named in ``listing``, and a problem for each name with no image."""
        if not listing.is_file():
            return {}, [Problem("missing file", listing, f"no split list {listing}")]
        names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        problems = [
            Problem(
                "listed image missing", listing, f"{listing} names {name}, which has no image in {images_dir}"
            )
            for name in names
            if name not in images
        ]
        chosen = set(names)
        return {k: v for k, v in images.items() if k in chosen}, problems

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
