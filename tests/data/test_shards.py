"""Frames written as LitData shards, to a folder and to a real S3-compatible server, read back
exactly; the sampler over streamed frames splits ranks as over files."""

from __future__ import annotations

import json
import multiprocessing
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support import RESUMABLE, TINY, assert_continues_like, cli_ok, run_cli, start_cli, wait_for_checkpoint
from support.datasets import write_folder
from support.s3_server import s3_server

from seg.data.sampling import SeededSampler
from seg.errors import DataError, install_hint

pytest.importorskip("litdata", reason=f"litdata is not installed: {install_hint('stream')}")

from seg.data.shards import StreamedFrames, write_shards


class PngFrames:
    """The frames of one split written by ``support.datasets.write_folder``: PNG images and 8-bit
    class-index masks, decoded as the folder loader decodes them."""

    def __init__(self, root: Path, split: str) -> None:
        self.images = sorted((root / split / "images").glob("*.png"))
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(Image.open(self.images[index]).convert("RGB"))
        mask = np.asarray(Image.open(self.images[index].parent.parent / "masks" / self.images[index].name))
        return image, mask

    def size(self, index: int) -> tuple[int, int]:
        width, height = Image.open(self.images[index]).size
        return height, width

    def name(self, index: int) -> str:
        return str(self.images[index])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> PngFrames:
    """21 frames of 40x40 with 5 classes (frames of another size are in ``other_size``)."""
    root = write_folder(tmp_path_factory.mktemp("folder"), {"train": 21}, num_classes=5, size=40)
    return PngFrames(root, "train")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A moto S3 server with bucket ``shards``, its endpoint and credentials in this test's env."""
    with s3_server("shards", timeout_s=300) as server:
        for key, value in server["env"].items():
            monkeypatch.setenv(key, value)
        yield server


def assert_same_frames(streamed: StreamedFrames, source: PngFrames) -> None:
    assert len(streamed) == len(source)
    for i in range(len(source)):
        image, mask = source.read(i)
        got_image, got_mask = streamed.read(i)
        assert got_image.dtype == image.dtype and got_mask.dtype == mask.dtype, i
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_mask, mask)
        assert streamed.name(i) == source.name(i)
        assert streamed.size(i) == source.size(i) == image.shape[:2]


def test_local_shards_read_back_exactly(source: PngFrames, tmp_path: Path) -> None:
    # 4 KB chunks: each frame (4.8 KB image + 1.6 KB mask) is a chunk of its own, so reading
    # crosses chunks; two writer processes must still keep the index order
    start_method = multiprocessing.get_start_method()
    written = write_shards(source, tmp_path / "shards", chunk_bytes="4KB", num_workers=2)
    assert multiprocessing.get_start_method() == start_method  # LitData sets its own; put back
    assert written == len(source)
    assert len(list((tmp_path / "shards").glob("chunk-*.bin"))) > 1
    assert_same_frames(StreamedFrames(tmp_path / "shards", cache_dir=tmp_path / "cache"), source)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_linux_writers_are_forked_so_frames_of_any_module_work(source: PngFrames, tmp_path: Path) -> None:
    # A frames class from a module no fresh interpreter can import (a notebook's, a script's):
    # forked writers have it already, spawned ones would fail to unpickle it (and import torch
    # and seg again, seconds per split).
    scratch = types.ModuleType("scratch_frames_nowhere_on_disk")
    scratch.Frames = type("Frames", (PngFrames,), {"__module__": scratch.__name__})
    sys.modules[scratch.__name__] = scratch
    try:
        frames = scratch.Frames(source.images[0].parent.parent.parent, "train")
        assert write_shards(frames, tmp_path / "shards", chunk_bytes="16KB", num_workers=2) == len(source)
    finally:
        del sys.modules[scratch.__name__]
    assert_same_frames(StreamedFrames(tmp_path / "shards", cache_dir=tmp_path / "cache"), source)


def test_s3_shards_read_back_exactly(source: PngFrames, s3: dict[str, Any], tmp_path: Path) -> None:
    uri = f"s3://{s3['bucket']}/synthetic/train"
    assert write_shards(source, uri, chunk_bytes="16KB", num_workers=1) == len(source)
    streamed = StreamedFrames(uri, cache_dir=tmp_path / "cache")
    assert_same_frames(streamed, source)
    # LitData downloads whole chunks through a client that refuses http://: read by range instead
    assert streamed.plain_http and not any((tmp_path / "cache").rglob("chunk-*.bin"))


def test_s3_endpoint_from_storage_options(source: PngFrames, s3: dict[str, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = {"endpoint_url": s3["endpoint"]}
    uri = f"s3://{s3['bucket']}/by-option"
    write_shards(source, uri, chunk_bytes="64KB", storage_options=options)
    streamed = StreamedFrames(uri, cache_dir=tmp_path / "cache", storage_options=options)
    np.testing.assert_array_equal(streamed.read(7)[1], source.read(7)[1])


def test_missing_shards_name_the_uri(tmp_path: Path, s3: dict[str, Any]) -> None:
    with pytest.raises(DataError, match=r"no shards at .*nowhere"):
        StreamedFrames(tmp_path / "nowhere")
    streamed = StreamedFrames(f"s3://{s3['bucket']}/nothing-here", cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="cannot read shards at s3://shards/nothing-here"):
        len(streamed)


class CountingFrames(StreamedFrames):
    """StreamedFrames that records which frames were read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_indices: list[int] = []

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        self.read_indices.append(index)
        return super().read(index)


def test_two_ranks_read_disjoint_frames(
    source: PngFrames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_shards(source, tmp_path / "shards", chunk_bytes="4KB")
    # as under DDP (LitData reads WORLD_SIZE and GLOBAL_RANK): the length is still the whole dataset's
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank in range(2):
        monkeypatch.setenv("GLOBAL_RANK", str(rank))
        frames = CountingFrames(tmp_path / "shards", cache_dir=tmp_path / f"cache{rank}")
        assert len(frames) == len(source)
        sampler = SeededSampler(len(frames), seed=3, num_replicas=2, rank=rank)
        sampler.set_epoch(1)
        indices = [index for index, _ in sampler]
        for index in indices:
            np.testing.assert_array_equal(frames.read(index)[1], source.read(index)[1])
        assert frames.read_indices == indices
        seen.append(indices)
    # 21 frames over 2 ranks: 11 each, the one padded item repeats a frame of the other rank
    assert len(seen[0]) == len(seen[1]) == 11
    assert len(set(seen[0]) & set(seen[1])) == 1
    assert set(seen[0]) | set(seen[1]) == set(range(len(source)))


def test_shard_command_writes_every_split_to_s3(s3: dict[str, Any], tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", {"train": 6, "val": 3}, num_classes=3, size=32)
    uri = f"s3://{s3['bucket']}/folder"
    args = ["seg.shard", "data=folder", f"data.root={root}", "data.num_classes=3", f"output={uri}"]
    result = cli_ok(
        [*args, f"paths.log_dir={tmp_path / 'logs'}", "chunk_bytes=8KB"], cwd=tmp_path, env=s3["env"]
    )
    assert f"train: 6 frames -> {uri}/train" in result.stdout
    assert f"val: 3 frames -> {uri}/val" in result.stdout
    assert "test:" not in result.stdout  # no test split in the folder
    for split in ("train", "val"):
        assert_same_frames(
            StreamedFrames(f"{uri}/{split}", cache_dir=tmp_path / "cache"), PngFrames(root, split)
        )


def test_shard_command_needs_an_output(tmp_path: Path) -> None:
    result = run_cli(
        ["seg.shard", "data=folder", f"data.root={tmp_path}", "data.num_classes=3"], cwd=tmp_path
    )
    assert result.returncode != 0 and "output" in result.stderr


def _timing(name: str) -> bool:
    return "time" in name or "seconds" in name


def _numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in a run's metrics, by dotted key, leaving out times and paths."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not _timing(name):
            found[name] = float(value)
    return found


@pytest.mark.slow
def test_training_from_s3_shards_equals_training_from_the_folder(
    make_cfg: Any, s3: dict[str, Any], tmp_path: Path
) -> None:
    from hydra.utils import instantiate

    from seg.training.pipeline import train

    uri = f"s3://{s3['bucket']}/synthetic"
    two_epochs = ["trainer.max_epochs=2", "data.cache=false"]
    datamodule = instantiate(make_cfg(*two_epochs).data)
    datamodule.prepare_data()
    datamodule.setup()
    for split in ("train", "val", "test"):
        write_shards(datamodule._dataset(split).frames, f"{uri}/{split}", chunk_bytes="256KB")
    folder = train(make_cfg(*two_epochs, output_dir=tmp_path / "folder"))
    streamed = train(make_cfg(*two_epochs, f"data.stream={uri}", output_dir=tmp_path / "stream"))
    folder_numbers, streamed_numbers = _numbers(folder), _numbers(streamed)
    assert any("val" in key and "dice" in key for key in folder_numbers), folder_numbers
    assert folder_numbers.keys() == streamed_numbers.keys()
    for key, value in folder_numbers.items():
        assert streamed_numbers[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


@pytest.mark.slow
def test_a_run_from_shards_stopped_mid_epoch_resumes_like_an_uninterrupted_folder_run(
    tmp_path: Path, data_cache: Path, uninterrupted: dict[str, Any]
) -> None:
    data = [f"paths.data_dir={data_cache}", f"paths.log_dir={tmp_path / 'logs'}"]
    shards = tmp_path / "shards"
    cli_ok(
        ["seg.shard", *[o for o in RESUMABLE if o.startswith("data.")], *data, f"output={shards}"],
        cwd=tmp_path,
    )
    process = start_cli(["seg.train", *RESUMABLE, *data, f"data.stream={shards}"], tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "logs" / "train" / "runs", process)
    time.sleep(0.2)  # into the second epoch
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]

    cli_ok(["seg.train", f"resume={run_dir}"], cwd=tmp_path)
    # the streamed order, augmentation seeds and loader position are those of the folder run
    assert_continues_like(run_dir, uninterrupted)


@pytest.mark.slow
def test_two_process_ddp_from_shards_trains_as_ddp_from_the_folder(tmp_path: Path, data_cache: Path) -> None:
    # Two real ranks (gloo): each streams only the frames its sampler gives it, so every number of
    # the run is the folder run's. Reading the whole dataset, or another rank's part, would change them.
    overrides = [
        *[o for o in TINY if not o.startswith(("trainer=", "trainer.max_epochs", "data.generator"))],
        "data.generator.num_train=32", "data.generator.num_val=17", "data.generator.num_test=8",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.max_epochs=2", f"paths.data_dir={data_cache}",
    ]  # fmt: skip
    shards = tmp_path / "shards"
    cli_ok(
        ["seg.shard", *[o for o in overrides if o.startswith(("data.", "paths."))], f"output={shards}",
         f"paths.log_dir={tmp_path / 'shard-logs'}"],
        cwd=tmp_path,
    )  # fmt: skip
    metrics = {}
    for source, extra in (("folder", []), ("stream", [f"data.stream={shards}"])):
        logs = f"paths.log_dir={tmp_path / source}"
        cli_ok(["seg.train", *overrides, *extra, logs], cwd=tmp_path)
        (run_dir,) = (tmp_path / source / "train" / "runs").iterdir()
        metrics[source] = _numbers(json.loads((run_dir / "metrics.json").read_text()))
    assert any(key.startswith("test") and "dice" in key for key in metrics["folder"]), metrics["folder"]
    assert metrics["folder"].keys() == metrics["stream"].keys()
    for key, value in metrics["folder"].items():
        assert metrics["stream"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
