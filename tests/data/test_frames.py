"""seg.data.frames: what data.cache=auto chooses and why, the in-memory store, header checks,
and the memory a forked loader worker copies."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from support.datasets import write_folder

from seg.data import frames as frames_module
from seg.data.frames import (
    DiskFrames,
    MemoryBudget,
    MemoryFrames,
    check_cache_setting,
    frames_for,
    read_headers,
)
from seg.data.layouts import FolderLayout, Sample
from seg.data.masks import MaskFormat
from seg.errors import ConfigError, DataError

LAYOUT = FolderLayout({"train": {"images": "train/images", "masks": "train/masks"}})


def samples_of(root: Path) -> list[Sample]:
    samples, problems = LAYOUT.samples(root, "train")
    assert not problems
    return samples


def mixed_sizes(root: Path) -> list[Sample]:
    """Four frames of three sizes, RGB images with 8-bit class-index masks (3 classes)."""
    rng = np.random.default_rng(0)
    (root / "train/images").mkdir(parents=True)
    (root / "train/masks").mkdir(parents=True)
    for i, (height, width) in enumerate([(24, 40), (32, 32), (24, 40), (17, 9)]):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"train/images/{i}.png")
        mask = rng.integers(0, 3, (height, width), dtype=np.uint8)
        Image.fromarray(mask).save(root / f"train/masks/{i}.png")
    return samples_of(root)


def test_memory_frames_equal_the_files_for_every_size_and_channel_count(tmp_path: Path) -> None:
    samples = mixed_sizes(tmp_path)
    for channels in (3, 1):
        disk = DiskFrames(samples, MaskFormat(3), channels, read_headers(samples))
        memory = MemoryFrames(disk, np.dtype(np.uint8), threads=2)
        assert len(memory) == 4
        for i in range(4):
            (a_image, a_mask), (b_image, b_mask) = disk.read(i), memory.read(i)
            assert a_image.shape == b_image.shape and a_image.shape[2] == channels
            np.testing.assert_array_equal(a_image, b_image)
            np.testing.assert_array_equal(a_mask, b_mask)
            assert memory.size(i) == a_mask.shape and memory.name(i) == str(samples[i].image)


def test_decoded_bytes_are_read_from_headers(tmp_path: Path) -> None:
    samples = mixed_sizes(tmp_path)
    disk = DiskFrames(samples, MaskFormat(3), 3, read_headers(samples))
    pixels = 24 * 40 * 2 + 32 * 32 + 17 * 9
    assert [disk.size(i) for i in range(4)] == [(24, 40), (32, 32), (24, 40), (17, 9)]
    assert disk.decoded_bytes(np.dtype(np.uint8)) == pixels * (3 + 1)
    assert disk.decoded_bytes(np.dtype(np.int32)) == pixels * (3 + 4)


def test_auto_keeps_frames_in_memory_only_when_they_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    samples = mixed_sizes(tmp_path)
    needed = (24 * 40 * 2 + 32 * 32 + 17 * 9) * 4
    caplog.set_level(logging.INFO, logger="seg.data.frames")
    budget = MemoryBudget(share=0.5, num_workers=0)
    monkeypatch.setattr(frames_module, "available_memory", lambda: 2 * needed)  # exactly half
    kept = frames_for("train", samples, MaskFormat(3), 3, np.dtype(np.uint8), "auto", budget, training=True)
    assert isinstance(kept, MemoryFrames)
    assert "keeping the decoded frames in memory" in caplog.text
    caplog.clear()
    monkeypatch.setattr(frames_module, "available_memory", lambda: 2 * needed - 1)
    streamed = frames_for(
        "train", samples, MaskFormat(3), 3, np.dtype(np.uint8), "auto", budget, training=True
    )
    assert isinstance(streamed, DiskFrames)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "data.cache=auto, 4 frames of train: decoding in the loader workers" in line
    # evaluation splits are decoded at every read, however much memory there is ...
    monkeypatch.setattr(frames_module, "available_memory", lambda: 10**15)
    caplog.clear()
    evaluated = frames_for(
        "val", samples, MaskFormat(3), 3, np.dtype(np.uint8), "auto", budget, training=False
    )
    assert isinstance(evaluated, DiskFrames)
    assert "data.cache=auto, 4 frames of val: decoding in the loader workers" in caplog.text
    # ... and true and false keep their meaning whatever the memory
    monkeypatch.setattr(frames_module, "available_memory", lambda: 2 * needed - 1)
    assert isinstance(
        frames_for("train", samples, MaskFormat(3), 3, np.uint8, True, budget, training=True), MemoryFrames
    )
    monkeypatch.setattr(frames_module, "available_memory", lambda: 10**15)
    assert isinstance(
        frames_for("train", samples, MaskFormat(3), 3, np.uint8, False, budget, training=True), DiskFrames
    )


def test_true_refuses_frames_larger_than_all_available_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = mixed_sizes(tmp_path)
    needed = (24 * 40 * 2 + 32 * 32 + 17 * 9) * 4
    budget = MemoryBudget(share=0.5, num_workers=0)
    monkeypatch.setattr(frames_module, "available_memory", lambda: needed)  # all of it: still kept
    assert isinstance(
        frames_for("train", samples, MaskFormat(3), 3, np.uint8, True, budget, training=True), MemoryFrames
    )
    monkeypatch.setattr(frames_module, "available_memory", lambda: needed - 1)
    with pytest.raises(
        ConfigError, match=r"data\.cache=true: the 4 decoded frames of train do not fit.*data\.cache=auto"
    ):
        frames_for("train", samples, MaskFormat(3), 3, np.uint8, True, budget, training=True)


def test_spawned_workers_count_as_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames_module, "available_memory", lambda: 1000)
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert MemoryBudget(0.5, num_workers=3).copies() == 4
    fits, reason = MemoryBudget(0.5, num_workers=3).fits(125)
    assert fits and "4 copies: one per spawned loader worker" in reason
    assert not MemoryBudget(0.5, num_workers=3).fits(126)[0]  # 4 copies of 126 B > 500 B
    assert MemoryBudget(0.5, num_workers=0).copies() == 1
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    assert MemoryBudget(0.5, num_workers=3).copies() == 1  # forked workers share the pages
    assert MemoryBudget(0.5, num_workers=3).fits(500)[0]


@pytest.mark.parametrize(("cache", "share"), [("yes", 0.5), (1, 0.5), (True, 0.0), ("auto", 1.5)])
def test_cache_settings_that_cannot_work_name_the_key(cache: object, share: float) -> None:
    with pytest.raises(ConfigError, match=r"data\.cache"):
        check_cache_setting(cache, share)  # type: ignore[arg-type]


def test_headers_refuse_mismatched_sizes_and_non_images_without_decoding(tmp_path: Path) -> None:
    samples = mixed_sizes(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(samples[1].mask)
    with pytest.raises(DataError, match=r"image .*1\.png is 32x32 but its mask .*1\.png is 5x5"):
        read_headers(samples)
    samples[1].mask.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read mask .*masks/1\.png"):
        read_headers(samples)


def test_a_file_corrupted_after_the_header_check_is_named_when_read(tmp_path: Path) -> None:
    samples = mixed_sizes(tmp_path)
    disk = DiskFrames(samples, MaskFormat(3), 3, read_headers(samples))
    data = samples[2].image.read_bytes()
    samples[2].image.write_bytes(data[: len(data) // 2])  # truncated: the header still reads
    read_headers(samples)
    with pytest.raises(DataError, match=r"cannot read image .*images/2\.png"):
        disk.read(2)


def _unique_memory_growth(read: Callable[[int], object], count: int, queue: multiprocessing.Queue) -> None:
    process = psutil.Process()
    before = process.memory_full_info().uss
    for _ in range(2):
        for i in range(count):
            read(i)
    queue.put(process.memory_full_info().uss - before)


def _growth_in_forked_worker(read: Callable[[int], object], count: int) -> int:
    """Bytes of private memory a forked process gains by calling ``read`` on every index."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_unique_memory_growth, args=(read, count, queue))
    worker.start()
    growth = queue.get(timeout=60)
    worker.join(timeout=60)
    return growth


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_worker_copies_no_pages_of_the_frame_lists(tmp_path: Path) -> None:
    """A list of Python objects is copied page by page into every worker that reads it (each
    read bumps reference counts stored in the objects), so per-worker memory grows with the
    dataset. Frames keep file names and pixels in numpy buffers instead."""
    write_folder(tmp_path, {"train": 1}, size=16)
    samples = samples_of(tmp_path) * 20_000
    disk = DiskFrames(samples, MaskFormat(3), 3, read_headers(samples))
    memory = MemoryFrames(disk, np.dtype(np.uint8), threads=2)
    copies = [Sample(Path(str(s.image)), Path(str(s.mask))) for s in samples]
    pixels = [tuple(np.array(a) for a in memory.read(i)) for i in range(len(memory))]
    list_growth = {
        "samples": _growth_in_forked_worker(lambda i: str(copies[i].image), len(copies)),
        "pixels": _growth_in_forked_worker(lambda i: pixels[i][0].sum(), len(pixels)),
    }
    frames_growth = {
        "samples": _growth_in_forked_worker(lambda i: disk.name(i), len(disk)),
        "pixels": _growth_in_forked_worker(lambda i: memory.read(i)[0].sum(), len(memory)),
    }
    print(list_growth, frames_growth)
    for kind in ("samples", "pixels"):
        assert list_growth[kind] > 2 * 2**20, (kind, list_growth)  # the pitfall is real here
        assert frames_growth[kind] < 2**20, (kind, frames_growth)
