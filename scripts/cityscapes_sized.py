"""Write a Cityscapes-sized tree (2,975 train frames of 2048x1024 with labelId masks, in the layout
data=cityscapes reads) to measure memory and start-up at full size. Nothing it writes is
committed: ``python scripts/cityscapes_sized.py DIR [--train 2975] [--val 500]``.

Sixteen distinct frames are drawn (label blocks with noisy colours, so PNG compresses them about
as much as street photos) and copied under every name: decoding costs what real frames cost.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

DISTINCT = 16
LABEL_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 0, 1, 4])


def frame(seed: int) -> tuple[Image.Image, Image.Image]:
    """A 2048x1024 photo and its labelId mask: 64x64 blocks of random labels."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice(LABEL_IDS, size=(16, 32)).astype(np.uint8)
    labels = np.kron(blocks, np.ones((64, 64), dtype=np.uint8))
    colours = rng.integers(0, 200, size=(256, 3), dtype=np.uint8)[labels]
    photo = colours + rng.integers(0, 48, size=colours.shape, dtype=np.uint8)
    return Image.fromarray(photo), Image.fromarray(labels)


def write(root: Path, split: str, count: int, sources: list[tuple[Path, Path]]) -> None:
    for index in range(count):
        city = f"city{index % 18:02d}"
        stem = f"{city}_{index:06d}_000019"
        image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        mask = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        mask.parent.mkdir(parents=True, exist_ok=True)
        source_image, source_mask = sources[index % len(sources)]
        shutil.copyfile(source_image, image)
        shutil.copyfile(source_mask, mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=2975)
    parser.add_argument("--val", type=int, default=500)
    args = parser.parse_args()
    drawn = args.root / "drawn"
    drawn.mkdir(parents=True, exist_ok=True)
    sources = []
    for seed in range(DISTINCT):
        photo, labels = frame(seed)
        sources.append((drawn / f"{seed}.png", drawn / f"{seed}_mask.png"))
        photo.save(sources[-1][0], compress_level=1)
        labels.save(sources[-1][1])
    write(args.root, "train", args.train, sources)
    write(args.root, "val", args.val, sources)
    size = sum(p.stat().st_size for p in args.root.rglob("*.png")) / 2**30
    print(f"wrote {args.train} train and {args.val} val frames to {args.root} ({size:.1f} GiB)")


if __name__ == "__main__":
    main()
