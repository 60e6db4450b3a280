from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from PIL import Image
from support import compose_train, synthetic_class_names
from support.datasets import (
    CITYSCAPES_PALETTE,
    binary_255,
    label_map,
    palette_png,
    uint16_codes,
    write_folder,
    write_pairs,
)

from seg.data.checks import check_splits
from seg.data.datamodule import SegmentationDataModule
from seg.data.frames import MemoryFrames
from seg.data.layouts import FolderLayout, SideBySideLayout
from seg.data.masks import BinaryMask, KMeansColours, MaskFormat, majority_filter, nearest_colour
from seg.data.reading import read_sample
from seg.data.stats import median_frequency_from_masks
from seg.data.synthetic import SyntheticScenes, layout
from seg.data.transforms import Pipeline
from seg.errors import ConfigError, DataError, building

DEFAULT = layout()


def scenes(**values: Any) -> SyntheticScenes:
    """The generator of ``conf/data/synthetic.yaml`` with ``values`` changed."""
    return instantiate(compose_train(["paths.output_dir=unused"]).data.generator, **values)


def datamodule(root: Path, *overrides: str, data: str = "folder") -> SegmentationDataModule:
    """The data module of ``conf/data/<data>.yaml`` on ``root`` (3 classes for ``folder``), with
    ``overrides``; derived data is cached in ``<root>/../cache``."""
    folder = ["data.num_classes=3", "data.image_size=32"] if data == "folder" else []
    cfg = compose_train(
        [f"data={data}", f"data.root={root}", *folder, "data.num_workers=0", f"paths.data_dir={root.parent}",
         "paths.output_dir=unused", *overrides]
    )  # fmt: skip
    return instantiate(cfg.data)


# ----------------------------------------------------------------------------- synthetic data
def test_synthetic_is_reproducible_and_independent_of_count(tmp_path: Path) -> None:
    a = scenes(num_train=3, num_val=1, num_test=0, image_size=32).build(tmp_path / "a")
    b = scenes(num_train=5, num_val=1, num_test=0, image_size=32).build(tmp_path / "b")
    for name in ("00000.png", "00002.png"):
        for sub in ("images", "masks"):
            assert (a / "train" / sub / name).read_bytes() == (b / "train" / sub / name).read_bytes()
    c = scenes(num_train=3, num_val=1, num_test=0, image_size=32, seed=1).build(tmp_path / "a")
    assert c != a
    assert (c / "train/images/00000.png").read_bytes() != (a / "train/images/00000.png").read_bytes()


def test_synthetic_scenes_use_every_class_and_colour_does_not_give_them_away(tmp_path: Path) -> None:
    root = scenes(num_train=40, num_val=0, num_test=0, image_size=64).build(tmp_path)
    seen: set[int] = set()
    colours: dict[int, list[np.ndarray]] = {}
    for i in range(40):
        mask = np.asarray(Image.open(root / "train/masks" / f"{i:05d}.png"))
        image = np.asarray(Image.open(root / "train/images" / f"{i:05d}.png")).astype(float)
        for cls in np.unique(mask):
            seen.add(int(cls))
            colours.setdefault(int(cls), []).append(image[mask == cls].mean(0))
    assert seen == set(range(len(synthetic_class_names())))
    # The mean colour of one class varies a lot from shape to shape.
    spread = [np.std(np.stack(c), axis=0).mean() for k, c in colours.items() if k > 0 and len(c) > 3]
    assert min(spread) > 20


def test_synthetic_classes_are_chosen_by_name(tmp_path: Path) -> None:
    gen = scenes(num_train=10, num_val=0, num_test=0, image_size=32, class_names=["background", "dots"])
    masks = (gen.build(tmp_path) / "train/masks").iterdir()
    labels = {int(v) for p in masks for v in np.unique(np.asarray(Image.open(p)))}
    assert labels == {0, 1}
    message = r"data\.class_names=\['background', 'spots'\] cannot be generated"
    with pytest.raises(ConfigError, match=message), building("data"):
        scenes(class_names=["background", "spots"])


def test_build_is_reused_and_leaves_no_temporary_folders(tmp_path: Path) -> None:
    gen = scenes(num_train=2, num_val=1, num_test=1, image_size=32)
    root = gen.build(tmp_path)
    stamp = (root / "spec.json").stat().st_mtime_ns
    assert gen.build(tmp_path) == root
    assert (root / "spec.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


# ----------------------------------------------------------------------------- layouts and reading
def test_folder_layout_pairs_by_stem_and_reports_every_orphan(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": 3})
    Image.new("RGB", (64, 64)).save(tmp_path / "train/images/lonely.jpg")
    Image.new("L", (64, 64)).save(tmp_path / "train/masks/stray.png")
    samples, problems = DEFAULT.samples(tmp_path, "train")
    assert [s.image.name for s in samples] == ["000.png", "001.png", "002.png"]
    assert {(p.kind, p.path.name) for p in problems} == {
        ("image without mask", "lonely.jpg"),
        ("mask without image", "stray.png"),
    }


def test_camvid_style_layout(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": 2, "val": 1}, images="{split}", masks="{split}annot")
    layout = FolderLayout(
        {"train": {"images": "train", "masks": "trainannot"}, "val": {"images": "val", "masks": "valannot"}}
    )
    samples, problems = layout.samples(tmp_path, "train")
    assert len(samples) == 2 and not problems
    assert samples[0].mask == tmp_path / "trainannot/000.png"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is an empty file"),
        (b"this is not an image", "cannot read image"),
        ("truncated", "cannot read image"),
    ],
)
def test_unreadable_images_are_named(tmp_path: Path, content: bytes | str, message: str) -> None:
    write_folder(tmp_path, {"train": 1})
    bad = tmp_path / "train/images/000.png"
    if content == "truncated":
        content = bad.read_bytes()[:200]
    bad.write_bytes(content)  # type: ignore[arg-type]
    samples, _ = DEFAULT.samples(tmp_path, "train")
    with pytest.raises(DataError, match=f"{message}.*000.png|000.png.*{message}"):
        read_sample(samples[0])


def test_grayscale_rgba_and_16_bit_images_become_rgb(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": 3})
    images = sorted((tmp_path / "train/images").iterdir())
    Image.new("L", (64, 64), 7).save(images[0])
    Image.new("RGBA", (64, 64), (1, 2, 3, 4)).save(images[1])
    Image.fromarray(np.full((64, 64), 65535, dtype=np.uint16)).save(images[2])
    samples, _ = DEFAULT.samples(tmp_path, "train")
    arrays = [read_sample(s)[0] for s in samples]
    assert all(a.shape == (64, 64, 3) and a.dtype == np.uint8 for a in arrays)
    assert arrays[0][0, 0].tolist() == [7, 7, 7] and arrays[1][0, 0].tolist() == [1, 2, 3]
    assert arrays[2][0, 0].tolist() == [255, 255, 255]


def test_size_mismatch_is_named(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": 1})
    Image.new("L", (64, 32)).save(tmp_path / "train/masks/000.png")
    samples, _ = DEFAULT.samples(tmp_path, "train")
    with pytest.raises(DataError, match=r"000\.png is 64x64 but its mask .*000\.png is 64x32"):
        read_sample(samples[0])


def test_side_by_side_pairs_split_in_halves(tmp_path: Path) -> None:
    write_pairs(tmp_path, {"train": 1}, size=32)
    samples, _ = SideBySideLayout({"train": "train"}).samples(tmp_path, "train")
    image, raw = read_sample(samples[0])
    assert image.shape == (32, 32, 3) and raw.shape == (32, 32, 3)
    Image.new("RGB", (40, 32)).save(tmp_path / "train/bad.jpg")
    samples, _ = SideBySideLayout({"train": "train"}).samples(tmp_path, "train")
    with pytest.raises(DataError, match=r"bad\.jpg is 40x32; side-by-side pairs must be twice as wide"):
        read_sample(next(s for s in samples if s.image.name == "bad.jpg"))


# ----------------------------------------------------------------------------- mask decoding
def test_label_out_of_range_is_named_unless_ignored() -> None:
    mask = np.array([[0, 1], [2, 7]], dtype=np.uint8)
    with pytest.raises(DataError, match=r"m\.png holds label value\(s\) \[7\] but there are only 3"):
        MaskFormat(3, ignore_index=255)(mask, Path("m.png"))
    assert MaskFormat(3, ignore_index=7)(mask, Path("m.png")).tolist() == mask.tolist()


def test_16_bit_masks_with_large_labels() -> None:
    mask = np.array([[0, 300], [299, 1]], dtype=np.uint16)
    out = MaskFormat(301)(mask, Path("m.png"))
    assert out.dtype == np.int32 and out.tolist() == [[0, 300], [299, 1]]


def recording(encode):
    """``encode``, keeping every label map it stores (in writing order) in ``.labels``."""

    def store(labels: np.ndarray) -> Image.Image:
        store.labels.append(labels)
        return encode(labels)

    store.labels = []
    return store


def decoded_masks(dm: SegmentationDataModule, split: str) -> list[np.ndarray]:
    return [dm.datasets[split].frames.read(i)[1] for i in range(len(dm.datasets[split]))]


def test_palette_png_masks_are_read_by_index(tmp_path: Path) -> None:
    """VOC stores masks as palette PNGs: the pixel is the class index (255 the ignored border),
    the palette only colours them. They decode to the indices, not to colours."""

    def with_border(labels: np.ndarray) -> Image.Image:
        bordered = labels.copy()
        bordered[0, :] = 255
        return palette_png(bordered)

    encode = recording(with_border)
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 2}, size=32, encode=encode)
    with Image.open(root / "val/masks/000.png") as stored:
        assert stored.mode == "P" and stored.getpalette()[3:6] == [200, 0, 0]
    dm = datamodule(root, "data.ignore_index=255")
    dm.setup("fit")
    for decoded, labels in zip(
        decoded_masks(dm, "train") + decoded_masks(dm, "val"), encode.labels, strict=True
    ):
        expected = labels.copy()
        expected[0, :] = 255
        assert decoded.tolist() == expected.tolist()


def test_16_bit_masks_come_out_as_their_integers(tmp_path: Path) -> None:
    """16-bit PNG masks ("I;16") are read as integers: values above 255 are classes (or codes to
    map), never scaled to 8 bits."""
    encode = recording(uint16_codes([0, 1, 300]))
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 1}, size=32, encode=encode)
    with Image.open(root / "train/masks/000.png") as stored:
        assert stored.mode == "I;16"
    dm = datamodule(root, "data.num_classes=301", "data.batch_size=3")
    dm.setup("fit")
    codes = np.array([0, 1, 300])
    for decoded, labels in zip(decoded_masks(dm, "train"), encode.labels[:3], strict=True):
        assert decoded.tolist() == codes[labels].tolist()
    _, masks = next(iter(dm.train_dataloader()))  # through the augmentations too
    assert set(masks.unique().tolist()) == {0, 1, 300}
    # The same files through a value mapping: 16-bit codes -> classes.
    dm = datamodule(root, "data.mask_format.mask_values={0:0,1:2,300:1}")
    dm.setup("fit")
    for decoded, labels in zip(decoded_masks(dm, "train"), encode.labels[:3], strict=True):
        assert decoded.tolist() == np.array([0, 2, 1])[labels].tolist()


def test_0_255_masks_decode_through_a_mapping_or_the_binary_decoder(tmp_path: Path) -> None:
    encode = recording(binary_255)
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 1}, num_classes=2, size=32, encode=encode)
    for decoder in ("data.mask_format.mask_values={0:0,255:1}", "data/mask_format=binary"):
        dm = datamodule(root, "data.num_classes=2", decoder)
        dm.setup("fit")
        for decoded, labels in zip(decoded_masks(dm, "train"), encode.labels[:3], strict=True):
            assert decoded.tolist() == labels.tolist(), decoder
    # The binary decoder reads any coding: 0/1, 0/65535, white on black in RGB; and JPEG noise
    # with a threshold.
    binary = BinaryMask(num_classes=2)
    labels = np.array([[0, 1], [1, 0]])
    assert binary(labels.astype(np.uint16) * 65535, Path("m.png")).tolist() == labels.tolist()
    assert (
        binary(np.stack([labels * 255] * 3, -1).astype(np.uint8), Path("m.png")).tolist() == labels.tolist()
    )
    jpeg = np.array([[3, 250], [241, 12]], dtype=np.uint8)
    assert BinaryMask(num_classes=2, threshold=127)(jpeg, Path("m.png")).tolist() == labels.tolist()
    with pytest.raises(ConfigError, match=r"data/mask_format=binary makes 2 classes, but data.num_classes=3"):
        BinaryMask(num_classes=3)


def test_0_255_masks_are_refused_with_a_mapping_suggested_not_ignore_index() -> None:
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    with pytest.raises(DataError) as refused:
        MaskFormat(2)(mask, Path("m.png"))
    message = str(refused.value)
    assert "m.png holds label value(s) [255] but there are only 2 classes (0..1)" in message
    assert "'data.mask_format.mask_values={0:0,255:1}'" in message and "data/mask_format=binary" in message
    assert "ignore_index" not in message  # ignoring 255 would ignore the whole foreground
    # Three classes stored as 0/127/255: the example maps them in order.
    with pytest.raises(DataError, match=r"'data\.mask_format\.mask_values=\{0:0,127:1,255:2\}'"):
        MaskFormat(3)(np.array([[0, 127, 255]], dtype=np.uint8), Path("m.png"))


def test_values_missing_from_the_mapping_are_one_line_naming_file_values_and_key(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 1}, num_classes=2, size=32, encode=binary_255)
    stray = np.asarray(Image.open(root / "val/masks/000.png")).copy()
    stray[:4, :4] = 128
    Image.fromarray(stray).save(root / "val/masks/000.png")
    mapping = "data.mask_format.mask_values={0:0,255:1}"
    with pytest.raises(DataError) as refused:  # decoded before training when cached ...
        datamodule(root, "data.num_classes=2", mapping, "data.cache=true").setup("fit")
    message = str(refused.value)
    with pytest.raises(DataError) as read:  # ... else when the frame is read, in the same words
        dm = datamodule(root, "data.num_classes=2", mapping, "data.cache=false")
        dm.setup("fit")
        decoded_masks(dm, "val")
    assert str(read.value) == message
    assert "\n" not in message
    assert message.startswith(f"mask {root / 'val/masks/000.png'} holds values [0, 128, 255], of which [128]")
    assert "not in data.mask_format.mask_values={0: 0, 255: 1}" in message
    assert "data.mask_format.ignore_unmapped=true" in message
    # Asked to, the decoder ignores them instead.
    dm = datamodule(
        root, "data.num_classes=2", mapping, "data.mask_format.ignore_unmapped=true", "data.ignore_index=9"
    )
    dm.setup("fit")
    decoded = decoded_masks(dm, "val")[0]
    assert (decoded[:4, :4] == 9).all() and set(np.unique(decoded).tolist()) <= {0, 1, 9}
    # A mapping to a class that does not exist is a config error naming the key.
    with pytest.raises(
        ConfigError, match=r"data\.mask_format\.mask_values maps 255 to 2, but classes are 0\.\.1"
    ):
        MaskFormat(2, mask_values={0: 0, 255: 2})
    with pytest.raises(ConfigError, match=r"ignore_unmapped=true needs .*data\.ignore_index"):
        MaskFormat(2, mask_values={0: 0, 255: 1}, ignore_unmapped=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.mask_format.mask_values={0:0,255:5}",
            r"data\.mask_format\.mask_values maps 255 to 5, but classes are 0\.\.1",
        ),
        (
            "data/mask_format=binary",
            r"data/mask_format=binary makes 2 classes, but data\.num_classes=3; set it to 2",
        ),
    ],
)
def test_a_decoder_config_mistake_stops_training_and_check_data_as_itself(
    tmp_path: Path, override: str, message: str
) -> None:
    """Raised inside Hydra's instantiate, the decoder's ``ConfigError`` still reaches the command
    as itself (one line), not wrapped in Hydra's multi-line error."""
    from seg.reports.data_report import check_data
    from seg.training.pipeline import train

    root = write_folder(tmp_path / "ds", {"train": 2, "val": 1}, num_classes=2, size=32, encode=binary_255)
    num_classes = "data.num_classes=2" if "mask_values" in override else "data.num_classes=3"
    cfg = compose_train(
        ["data=folder", f"data.root={root}", num_classes, override, f"paths.data_dir={tmp_path}",
         f"paths.output_dir={tmp_path / 'run'}", "trainer=cpu"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    with pytest.raises(ConfigError, match=message):
        check_data(cfg, tmp_path / "report")


def test_colour_masks_decode_exactly_even_with_near_duplicate_colours() -> None:
    palette = [[0, 0, 0], [128, 64, 128], [130, 64, 128], [0, 0, 142], [0, 0, 140]]
    labels = label_map(3, 64, num_classes=5)
    colours = np.asarray(palette, dtype=np.uint8)[labels]
    decoded = MaskFormat(5, ignore_index=255, palette=palette, denoise=False)(colours, Path("m.png"))
    assert (decoded == labels).all()


def test_colour_far_from_every_palette_colour_is_ignored_or_refused() -> None:
    palette = [[0, 0, 0], [255, 255, 255]]
    mask = np.array([[[0, 0, 0], [255, 255, 255], [0, 255, 0]]], dtype=np.uint8)
    out = MaskFormat(2, ignore_index=9, palette=palette, denoise=False)(mask, Path("m.png"))
    assert out.tolist() == [[0, 1, 9]]
    with pytest.raises(DataError, match=r"m\.png has colours farther than .*max_distance"):
        MaskFormat(2, palette=palette, denoise=False)(mask, Path("m.png"))


def test_colour_mask_without_palette_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"m\.png is a colour image but data.palette is not set"):
        MaskFormat(2)(np.zeros((2, 2, 3), dtype=np.uint8), Path("m.png"))


def test_jpeg_pairs_decode_to_at_least_99_percent_of_the_true_labels(tmp_path: Path) -> None:
    truth = write_pairs(tmp_path, {"train": 6}, size=256, quality=75)["train"]
    decoder = MaskFormat(19, ignore_index=255, palette=CITYSCAPES_PALETTE)
    samples, _ = SideBySideLayout({"train": "train"}).samples(tmp_path, "train")
    correct = total = 0
    for sample, labels in zip(samples, truth, strict=True):
        decoded = decoder(read_sample(sample)[1], sample.image)
        correct += int((decoded == labels).sum())
        total += labels.size
    assert correct / total >= 0.99, correct / total


def test_majority_filter_removes_isolated_pixels_and_keeps_edges() -> None:
    labels = np.zeros((6, 6), dtype=np.uint8)
    labels[:, 3:] = 1
    noisy = labels.copy()
    noisy[2, 1] = 5
    assert (majority_filter(noisy) == labels).all()


def test_nearest_colour_matches_each_colour_once() -> None:
    rgb = np.array([[[10, 10, 10], [250, 250, 250]]], dtype=np.uint8)
    assert nearest_colour(rgb, np.array([[0, 0, 0], [255, 255, 255]]), None, 0).tolist() == [[0, 1]]


def test_kmeans_recovers_the_colours_and_caches_them(tmp_path: Path) -> None:
    palette = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 220]]
    truth = write_folder(tmp_path / "ds", {"train": 8}, num_classes=4, palette=palette)
    samples, _ = DEFAULT.samples(truth, "train")

    def read(sample):
        return read_sample(sample)[1]

    decoder = KMeansColours(num_classes=4, seed=0)
    decoder.prepare(samples, read, tmp_path / "cache")
    assert sorted(map(tuple, decoder.palette)) == sorted(map(tuple, palette))
    assert len(list((tmp_path / "cache").glob("kmeans-*.json"))) == 1
    again = KMeansColours(num_classes=4, seed=0)
    again.prepare(samples, lambda s: pytest.fail("refitted instead of reading the cache"), tmp_path / "cache")
    assert again.palette == decoder.palette
    mask = read(samples[0])
    labels = decoder(mask, samples[0].mask)
    colours = np.asarray(decoder.palette)[labels]
    assert (np.abs(colours - mask).max(-1) < 2).mean() > 0.99


def test_kmeans_refits_when_a_training_mask_changes_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The clusters follow the masks they were fitted on: recolouring one mask (same path, its
    time moved on explicitly) refits them and says why; touching a mask without changing it
    keeps the cached clusters and fits nothing."""
    palette = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 220]]
    root = write_folder(tmp_path / "ds", {"train": 4}, num_classes=4, palette=palette)
    samples, _ = DEFAULT.samples(root, "train")
    fits = []

    def read(sample):
        fits.append(sample)
        return read_sample(sample)[1]

    def fitted() -> list[list[int]]:
        decoder = KMeansColours(num_classes=4, seed=0)
        decoder.prepare(samples, read, tmp_path / "cache")
        return decoder.palette

    first = fitted()
    assert len(fits) == 4
    edited = root / "train/masks/002.png"
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, not changed
    with caplog.at_level(logging.INFO, logger="seg.data.cache"):
        assert fitted() == first
    assert len(fits) == 4 and not _cache_lines(caplog)
    mask = np.asarray(Image.open(edited)).copy()
    mask[:32] = [250, 250, 0]  # a new colour on the top half of one mask
    Image.fromarray(mask).save(edited)
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    with caplog.at_level(logging.INFO, logger="seg.data.cache"):
        second = fitted()
    assert len(fits) == 8 and second != first
    assert _cache_lines(caplog) == [
        "colour clusters: 1 of 4 training masks changed since they were cached (masks/002.png); recomputing"
    ]


def _cache_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The cache's own log lines (other loggers may log at INFO too once a run set the level)."""
    return [r.getMessage() for r in caplog.records if r.name == "seg.data.cache"]


def test_without_digests_a_new_time_recomputes_the_class_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Above ``DIGEST_LIMIT`` files are compared by size and time alone: a mask whose time moved
    on is taken as changed. Below it, the digest says a touched mask is unchanged."""
    import seg.data.cache

    write_folder(tmp_path / "ds", {"train": 4, "val": 1}, size=32)
    mask = tmp_path / "ds/train/masks/001.png"
    for limit, recomputes in ((0, True), (seg.data.cache.DIGEST_LIMIT, False)):
        monkeypatch.setattr(seg.data.cache, "DIGEST_LIMIT", limit)
        dm = datamodule(tmp_path / "ds", f"data.cache_dir={tmp_path / f'cache-{limit}'}")
        dm.setup("fit")
        weights = dm.median_frequency_weights()
        stat = mask.stat()
        os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        reads: list[int] = []
        original = dm.datasets["train"].frames.read
        dm.datasets["train"].frames.read = lambda i, reads=reads, read=original: reads.append(i) or read(i)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="seg.data.cache"):
            assert dm.median_frequency_weights() == weights
        assert bool(reads) == recomputes
        assert bool(_cache_lines(caplog)) == recomputes


# ----------------------------------------------------------------------------- transforms
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


# ----------------------------------------------------------------------------- datamodule
def test_datamodule_batches(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", {"train": 5, "val": 3}, size=32)
    dm = datamodule(tmp_path / "ds", "data.batch_size=2")
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert masks.shape == (2, 32, 32) and masks.dtype == torch.int64
    assert len(dm.val_dataloader()) == 2  # 3 images, batch 2, nothing dropped
    assert not dm.has_split("test")
    assert dm.class_names == ["class_0", "class_1", "class_2"]
    assert len(dm.palette) == 3


def test_missing_root_says_what_layout_is_expected(tmp_path: Path) -> None:
    dm = datamodule(tmp_path / "nowhere", data="camvid")
    with pytest.raises(
        DataError,
        match=r"data.root .*nowhere does not exist: expected <root>/train/ with masks in <root>/trainannot/",
    ):
        dm.setup("fit")


def test_missing_val_split_suggests_val_fraction(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", {"train": 4}, size=32)
    with pytest.raises(DataError, match=r"data\.val_fraction"):
        datamodule(tmp_path / "ds").setup("fit")


def test_val_fraction_holds_out_part_of_train_reproducibly(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", {"train": 10}, size=32)

    def split(seed: int) -> tuple[set[str], set[str]]:
        dm = datamodule(tmp_path / "ds", "data.val_fraction=0.3", f"data.split_seed={seed}")
        dm.setup("fit")
        names = {k: {s.image.name for s in dm.datasets[k].frames.samples} for k in ("train", "val")}
        return names["train"], names["val"]

    train, val = split(0)
    assert len(val) == 3 and len(train) == 7 and not train & val
    assert split(0) == (train, val)
    assert split(1)[1] != val


def test_first_data_problem_stops_setup_with_the_file_name(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", {"train": 2, "val": 1}, size=32)
    Image.new("RGB", (32, 32)).save(tmp_path / "ds/val/images/extra.png")
    with pytest.raises(DataError, match=r"image .*val/images/extra\.png has no mask"):
        datamodule(tmp_path / "ds").setup("fit")


def test_eval_batches_group_full_frames_by_size(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_folder(root, {"train": 2}, size=32)
    write_folder(root, {"val": 3}, size=48)
    write_folder(tmp_path / "more", {"val": 2}, size=64)
    for p in (tmp_path / "more/val/images").iterdir():
        p.rename(root / "val/images" / f"x{p.name}")
    for p in (tmp_path / "more/val/masks").iterdir():
        p.rename(root / "val/masks" / f"x{p.name}")
    dm = datamodule(root, "data.batch_size=4")
    dm.setup("fit")
    shapes = sorted(tuple(masks.shape) for _, masks in dm.val_dataloader())
    assert shapes == [(2, 64, 64), (3, 48, 48)]


def test_median_frequency_weights_by_hand(tmp_path: Path) -> None:
    # Image A: 3 px class 0, 1 px class 1. Image B: 2 px class 0, 2 px ignored (9).
    # freq0 = 5 / (4 + 2) = 5/6; freq1 = 1 / 4; median = (5/6 + 1/4) / 2 = 13/24.
    masks = [np.array([[0, 0], [0, 1]]), np.array([[0, 9], [9, 0]])]
    weights = median_frequency_from_masks(masks, num_classes=2, ignore_index=9)
    assert weights == pytest.approx([(13 / 24) / (5 / 6), (13 / 24) / (1 / 4)], abs=1e-4)


def test_datamodule_caches_class_weights(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", {"train": 4, "val": 1}, size=32)
    dm = datamodule(tmp_path / "ds")
    dm.setup("fit")
    weights = dm.median_frequency_weights()
    assert len(weights) == 3 and all(w > 0 for w in weights)
    assert dm.cache_dir == tmp_path / "cache"
    assert len(list((tmp_path / "cache").glob("median-frequency-*.json"))) == 1
    dm.datasets["train"].frames.read = lambda i: pytest.fail("recomputed instead of reading the cache")
    assert dm.median_frequency_weights() == weights


@pytest.mark.parametrize(("rule", "power"), [("median_frequency", 1.0), ("sqrt_median_frequency", 0.5)])
def test_class_weight_rules_reach_the_loss(tmp_path: Path, rule: str, power: float) -> None:
    from seg.training.pipeline import build_module

    write_folder(tmp_path / "ds", {"train": 4, "val": 1}, size=32)
    cfg = compose_train(
        ["data=folder", f"data.root={tmp_path / 'ds'}", "data.num_classes=3", "data.num_workers=0",
         f"paths.data_dir={tmp_path}", "paths.output_dir=unused", "loss=ce", f"loss.class_weights={rule}"]
    )  # fmt: skip
    dm = instantiate(cfg.data)
    dm.setup("fit")
    module = build_module(cfg, dm)
    expected = [w**power for w in dm.median_frequency_weights()]
    assert len(set(expected)) > 1  # the rule has something to change
    torch.testing.assert_close(module.loss_fn.class_weights, torch.tensor(expected), atol=1e-4, rtol=0)


def test_without_the_image_cache_batches_and_class_weights_are_the_same(tmp_path: Path) -> None:
    """``data.cache=false`` reads every file when it is needed instead of once at setup: nothing
    is kept in memory, and what training sees is unchanged."""
    write_folder(tmp_path / "ds", {"train": 6, "val": 3}, size=32)
    loaded = {}
    for cache in ("true", "false"):
        # Each computes the class weights itself, in its own cache folder.
        cache_dir = f"data.cache_dir={tmp_path / f'weights-{cache}'}"
        dm = datamodule(tmp_path / "ds", f"data.cache={cache}", "data.batch_size=2", cache_dir)
        dm.setup("fit")
        assert isinstance(dm.datasets["train"].frames, MemoryFrames) == (cache == "true")
        loaded[cache] = (
            list(dm.train_dataloader()),
            list(dm.val_dataloader()),
            dm.median_frequency_weights(),
        )
    (cached_train, cached_val, cached_weights), (train, val, weights) = loaded["true"], loaded["false"]
    assert len(train) == 3 and len(val) == 2
    for (a_image, a_mask), (b_image, b_mask) in zip(cached_train + cached_val, train + val, strict=True):
        assert torch.equal(a_image, b_image) and torch.equal(a_mask, b_mask)
    assert weights == cached_weights


def test_check_reports_every_problem(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", {"train": 3, "val": 2}, size=32)
    (root / "train/images/001.png").write_bytes(b"")
    Image.fromarray(np.full((32, 32), 9, dtype=np.uint8)).save(root / "val/masks/000.png")
    Image.new("L", (32, 32)).save(root / "val/masks/stray.png")
    reports = {r.split: r for r in check_splits(datamodule(root))}
    assert reports["train"].samples == 3 and reports["val"].samples == 2
    kinds = sorted((r.split, p.kind, p.path.name) for r in reports.values() for p in r.problems)
    assert kinds == [
        ("train", "unreadable or invalid", "001.png"),
        ("val", "mask without image", "stray.png"),
        ("val", "unreadable or invalid", "000.png"),
    ]
    assert reports["train"].sizes == {(32, 32): 2}
    assert int(reports["train"].pixels.sum()) == 2 * 32 * 32


def test_cityscapes_pairs_datamodule(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", {"train": 3, "val": 2}, size=64)
    dm = datamodule(tmp_path / "pairs", data="cityscapes_pairs")
    dm.setup("fit")
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64)
    assert dm.palette == CITYSCAPES_PALETTE


@pytest.mark.slow
def test_a_run_reads_files_as_needed_at_a_size_the_unet_pads(make_cfg: Any, tmp_path: Path) -> None:
    """``data.cache=false`` trains as the default does: the same seed gives the same losses and
    scores (the same batches, in the same order, through the same arithmetic), with nothing kept
    in memory; and 40 px (not a multiple of 16) is a valid size: the U-Net pads it."""
    from seg.training.pipeline import train

    kept: dict[str, bool] = {}

    class Cached(pl.Callback):
        def __init__(self, cache: str) -> None:
            self.cache = cache

        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            kept[self.cache] = isinstance(trainer.datamodule.datasets["train"].frames, MemoryFrames)

    runs = {}
    for cache in ("true", "false"):
        cfg = make_cfg(f"data.cache={cache}", "data.image_size=40", "data.generator.num_train=16",
                       "trainer.max_epochs=1", output_dir=tmp_path / f"cache-{cache}")  # fmt: skip
        runs[cache] = train(cfg, callbacks=[Cached(cache)])
    assert kept == {"true": True, "false": False}
    default, as_needed = runs["true"], runs["false"]
    assert as_needed["status"] == "finished" and len(as_needed["epochs"]) == 1
    for key in ("val/loss", "val/dice"):
        assert [e[key] for e in as_needed["epochs"]] == pytest.approx(
            [e[key] for e in default["epochs"]], abs=1e-6
        )
    assert as_needed["test"]["test/dice"] == pytest.approx(default["test"]["test/dice"], abs=1e-6)
