"""The standard dataset layouts (``data=cityscapes``, ``data=voc``, ``data=ade20k``) on small trees
written with the real file-name patterns: pairing, decoding to training classes, the ignore
labels, a tiny training, ``seg.evaluate`` and ``seg.check_data``, and one line for a wrong tree."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from support import CONF_DIR, ONE_EPOCH, compose_train, run_cli
from support.datasets import label_map, palette_png, photo_of

from seg.data.layouts import FolderLayout
from seg.errors import DataError
from seg.inference.evaluation import evaluate
from seg.reports.data_report import check_data
from seg.training.pipeline import train

SIZE = 48
#: Cityscapes label ids written into the masks, and the training class each must become:
#: road, car, sky, then "unlabeled", "ground" and "rail track", which are ignored.
CITYSCAPES_IDS = {7: 0, 26: 13, 23: 10, 0: 255, 6: 255, 10: 255}
#: VOC class indices written into the palette PNGs (255: the border band), read as they are.
VOC_VALUES = {0: 0, 15: 15, 12: 12, 255: 255}
#: ADE20K values 1..150 are classes 0..149; 0 ("other objects") is ignored.
ADE_VALUES = {1: 0, 3: 2, 150: 149, 0: 255}


def _masks(values: dict[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stored mask using the keys of ``values``, the class map it must decode to, and a photo."""
    labels = label_map(seed, SIZE, num_classes=len(values))
    stored = np.asarray(list(values), dtype=np.uint8)[labels]
    expected = np.asarray(list(values.values()), dtype=np.int64)[labels]
    return stored, expected, photo_of(labels, seed)


def write_cityscapes(root: Path, counts: dict[str, int]) -> dict[Path, np.ndarray]:
    """``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` with their
    ``gtFine/..._gtFine_labelIds.png``, and the colour, instance and polygon files beside them
    that are not masks. Returns the expected training classes of each image."""
    expected = {}
    for split, count in counts.items():
        for i in range(count):
            city = ("aachen", "bochum")[i % 2]
            stem = f"{city}_{i:06d}_000019"
            stored, classes, image = _masks(CITYSCAPES_IDS, i + 10 * len(split))
            image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            masks = root / "gtFine" / split / city
            for folder in (image_path.parent, masks):
                folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_path)
            Image.fromarray(stored).save(masks / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(np.full((SIZE, SIZE, 3), 9, np.uint8)).save(masks / f"{stem}_gtFine_color.png")
            Image.fromarray(stored.astype(np.uint16) * 1000).save(masks / f"{stem}_gtFine_instanceIds.png")
            (masks / f"{stem}_gtFine_polygons.json").write_text("{}")
            expected[image_path] = classes
    return expected


def write_voc(root: Path, counts: dict[str, int]) -> dict[Path, np.ndarray]:
    """``JPEGImages/<name>.jpg``, palette PNGs in ``SegmentationClass/`` and the split lists in
    ``ImageSets/Segmentation``; plus images that are in no list (VOC's detection-only ones)."""
    expected = {}
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    number = 0
    for split, count in counts.items():
        names = []
        for _ in range(count):
            name = f"2007_{number:06d}"
            stored, classes, image = _masks(VOC_VALUES, number)
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            palette_png(stored, [(0, 0, 0)] * 256).save(root / "SegmentationClass" / f"{name}.png")
            expected[root / "JPEGImages" / f"{name}.jpg"] = classes
            names.append(name)
            number += 1
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    Image.fromarray(photo_of(label_map(99, SIZE), 99)).save(root / "JPEGImages/2008_999999.jpg")
    return expected


def write_ade20k(root: Path, counts: dict[str, int]) -> dict[Path, np.ndarray]:
    """``images/<training|validation>/ADE_<split>_<n>.jpg`` with ``annotations/.../<same>.png``."""
    expected = {}
    for split, count in counts.items():
        folder = {"train": "training", "val": "validation"}[split]
        for i in range(count):
            name = f"ADE_{split}_{i + 1:08d}"
            stored, classes, image = _masks(ADE_VALUES, i + 10 * len(split))
            for kind in ("images", "annotations"):
                (root / kind / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "images" / folder / f"{name}.jpg", quality=95)
            Image.fromarray(stored).save(root / "annotations" / folder / f"{name}.png")
            expected[root / "images" / folder / f"{name}.jpg"] = classes
    return expected


WRITERS: dict[str, Callable[[Path, dict[str, int]], dict[Path, np.ndarray]]] = {
    "cityscapes": write_cityscapes,
    "voc": write_voc,
    "ade20k": write_ade20k,
}


@pytest.mark.parametrize("dataset", list(WRITERS))
def test_a_standard_layout_decodes_to_its_training_classes(tmp_path: Path, dataset: str) -> None:
    """Every image pairs with its own mask (never a colour, instance or unlisted file), and each
    stored value becomes the training class, or the ignore label, that the dataset defines."""
    expected = WRITERS[dataset](tmp_path / dataset, {"train": 4, "val": 2})
    cfg = compose_train([f"data={dataset}", f"data.root={tmp_path / dataset}", f"paths.data_dir={tmp_path}"])
    data = instantiate(cfg.data)
    data.prepare_data()
    samples, problems = data.samples()
    assert [len(samples[split]) for split in ("train", "val")] == [4, 2]
    assert not any(problems.values()), problems
    assert not data.has_split("test")
    for split in ("train", "val"):
        for sample in samples[split]:
            decoded = data.mask_format(np.asarray(Image.open(sample.mask)), sample.mask)
            np.testing.assert_array_equal(decoded, expected[sample.image])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(WRITERS))
def test_a_standard_layout_trains_evaluates_and_passes_check_data(
    tmp_path: Path, dataset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / dataset
    WRITERS[dataset](root, {"train": 4, "val": 2})
    args = [f"data={dataset}", f"data.root={root}", f"paths.data_dir={tmp_path}"]
    metrics = train(compose_train([*ONE_EPOCH, *args, f"paths.output_dir={tmp_path / 'run'}"]))
    assert metrics["status"] == "finished"
    num_classes = {"cityscapes": 19, "voc": 21, "ade20k": 150}[dataset]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        eval_cfg = compose("evaluate", [f"run={tmp_path / 'run'}", "split=val", "precision=32"])
        check_cfg = compose("check_data", args)
    report = evaluate(eval_cfg, tmp_path)
    assert report["images"] == 2 and len(report["confusion_matrix"]) == num_classes
    check_data(check_cfg, tmp_path / "check")  # raises SegError when the data cannot be trained on
    out = capsys.readouterr().out
    assert "== train: 4 samples" in out and "== val: 2 samples" in out and "PROBLEM" not in out
    pixels = json.loads((tmp_path / "check" / "report.json").read_text())["train"]["pixels"]
    assert sum(pixels.values()) < 4 * SIZE * SIZE  # the ignored values are not counted as a class


@pytest.mark.parametrize(
    ("dataset", "remove", "named"),
    [("cityscapes", "gtFine", "no mask folder {root}/gtFine/train"),
     ("voc", "ImageSets", "no split list {root}/ImageSets/Segmentation/train.txt"),
     ("ade20k", "annotations", "no mask folder {root}/annotations/training")],
)  # fmt: skip
def test_a_wrong_tree_is_one_line_naming_the_missing_folder(
    tmp_path: Path, dataset: str, remove: str, named: str
) -> None:
    root = tmp_path / dataset
    WRITERS[dataset](root, {"train": 2, "val": 1})
    shutil.rmtree(root / remove)
    args = [f"data={dataset}", f"data.root={root}", f"paths.data_dir={tmp_path}"]
    with pytest.raises(DataError) as refused:
        instantiate(compose_train(args).data).setup("fit")
    assert named.format(root=root) in str(refused.value) and "\n" not in str(refused.value)
    if dataset == "cityscapes":  # what the user sees: that line, from the command
        result = run_cli(["seg.train", *args, f"paths.log_dir={tmp_path}"], cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == f"error: {refused.value}"


def test_a_listed_name_without_an_image_is_a_problem(tmp_path: Path) -> None:
    write_voc(tmp_path, {"train": 2})
    listing = tmp_path / "ImageSets/Segmentation/train.txt"
    listing.write_text(listing.read_text() + "2012_123456\n")
    layout = FolderLayout(
        {
            "train": {
                "images": "JPEGImages",
                "masks": "SegmentationClass",
                "list": str(listing.relative_to(tmp_path)),
            }
        }
    )
    samples, problems = layout.samples(tmp_path, "train")
    assert [s.image.name for s in samples] == ["2007_000000.jpg", "2007_000001.jpg"]
    assert [(p.kind, p.message.split(",")[0]) for p in problems] == [
        ("listed image missing", f"{listing} names 2012_123456")
    ]
