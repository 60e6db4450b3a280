from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg.data.datamodule import SegmentationDataModule
from seg.data.folder import SegmentationDataset, find_pairs
from seg.data.synthetic import CLASS_NAMES, SyntheticScenes
from seg.data.transforms import Pipeline
from seg.errors import DataError


def _write_pair(root: Path, split: str, stem: str, size=(32, 32), mask_size=None, labels=(0, 1)) -> None:
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
    mh, mw = mask_size or size
    mask = np.full((mh, mw), labels[0], dtype=np.uint8)
    mask[: mh // 2] = labels[1]
    Image.fromarray(mask).save(root / split / "masks" / f"{stem}.png")


def test_synthetic_is_reproducible_and_independent_of_count(tmp_path: Path) -> None:
    a = SyntheticScenes(num_train=3, num_val=1, num_test=0, image_size=32).build(tmp_path / "a")
    b = SyntheticScenes(num_train=5, num_val=1, num_test=0, image_size=32).build(tmp_path / "b")
    for name in ("00000.png", "00002.png"):
        for sub in ("images", "masks"):
            assert (a / "train" / sub / name).read_bytes() == (b / "train" / sub / name).read_bytes()
    c = SyntheticScenes(num_train=3, num_val=1, num_test=0, image_size=32, seed=1).build(tmp_path / "a")
    assert c != a
    assert (c / "train/images/00000.png").read_bytes() != (a / "train/images/00000.png").read_bytes()


def test_synthetic_scenes_use_many_classes_and_colour_does_not_give_them_away(tmp_path: Path) -> None:
    root = SyntheticScenes(num_train=40, num_val=0, num_test=0, image_size=64).build(tmp_path)
    seen: set[int] = set()
    colours: dict[int, list[np.ndarray]] = {}
    for i in range(40):
        mask = np.asarray(Image.open(root / "train/masks" / f"{i:05d}.png"))
        image = np.asarray(Image.open(root / "train/images" / f"{i:05d}.png")).astype(float)
        for cls in np.unique(mask):
            seen.add(int(cls))
            colours.setdefault(int(cls), []).append(image[mask == cls].mean(0))
    assert seen == set(range(len(CLASS_NAMES)))
    # The mean colour of one class varies a lot from shape to shape.
    spread = [np.std(np.stack(c), axis=0).mean() for k, c in colours.items() if k > 0 and len(c) > 3]
    assert min(spread) > 20


def test_build_is_reused_and_leaves_no_temporary_folders(tmp_path: Path) -> None:
    gen = SyntheticScenes(num_train=2, num_val=1, num_test=1, image_size=32)
    root = gen.build(tmp_path)
    stamp = (root / "spec.json").stat().st_mtime_ns
    assert gen.build(tmp_path) == root
    assert (root / "spec.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_folder_pairs_and_reads(tmp_path: Path) -> None:
    _write_pair(tmp_path, "train", "b")
    _write_pair(tmp_path, "train", "a")
    pairs = find_pairs(tmp_path, "train")
    assert [p[0].name for p in pairs] == ["a.png", "b.png"]
    ds = SegmentationDataset(pairs, num_classes=2, ignore_index=None, transform=Pipeline())
    image, mask = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) == {0, 1}


def test_image_without_mask_is_named(tmp_path: Path) -> None:
    _write_pair(tmp_path, "train", "a")
    Image.new("RGB", (32, 32)).save(tmp_path / "train/images/lonely.png")
    with pytest.raises(DataError, match=r"lonely\.png"):
        find_pairs(tmp_path, "train")


def test_size_mismatch_is_named(tmp_path: Path) -> None:
    _write_pair(tmp_path, "train", "a", size=(32, 32), mask_size=(16, 32))
    dm = SegmentationDataModule(root=tmp_path, num_classes=2, num_workers=0)
    with pytest.raises(DataError, match=r"a\.png is 32x32 but its mask .*a\.png is 32x16"):
        dm.setup("fit")


def test_label_out_of_range_is_named(tmp_path: Path) -> None:
    _write_pair(tmp_path, "train", "a", labels=(0, 7))
    pairs = find_pairs(tmp_path, "train")
    with pytest.raises(DataError, match=r"a\.png holds label value\(s\) \[7\]"):
        SegmentationDataset(pairs, num_classes=3, ignore_index=255, transform=Pipeline())
    # ...unless it is the ignore index.
    SegmentationDataset(pairs, num_classes=3, ignore_index=7, transform=Pipeline())


def test_missing_root_is_named(tmp_path: Path) -> None:
    dm = SegmentationDataModule(root=tmp_path / "nowhere", num_classes=2)
    with pytest.raises(DataError, match="nowhere does not exist"):
        dm.setup("fit")


def test_transforms_move_image_and_mask_together() -> None:
    import albumentations as A

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, :4] = 200
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 1
    out_image, out_mask = Pipeline([A.HorizontalFlip(p=1.0)])(image, mask)
    assert (out_mask[:, 4:] == 1).all() and (out_mask[:, :4] == 0).all()
    assert (out_image[:, :, 4:] == 200).all()


def test_resize_never_blends_labels() -> None:
    import albumentations as A

    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 5, 9], dtype=np.uint8), size=(37, 41))
    image = rng.integers(0, 255, (37, 41, 3), dtype=np.uint8)
    _, out = Pipeline([A.Resize(64, 64)])(image, mask)
    assert set(out.unique().tolist()) <= {0, 5, 9}


def test_datamodule_batches(tmp_path: Path) -> None:
    for i in range(5):
        _write_pair(tmp_path, "train", f"t{i}")
    for i in range(3):
        _write_pair(tmp_path, "val", f"v{i}")
    dm = SegmentationDataModule(root=tmp_path, num_classes=2, batch_size=2, num_workers=0)
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    assert len(dm.val_dataloader()) == 2  # 3 images, batch 2, nothing dropped
    assert not dm.has_split("test")
    assert dm.class_names == ["class_0", "class_1"]
