"""Frames as LitData shards, in a local folder or in S3 (or compatible) object storage.

``write_shards`` stores every decoded frame (image, class-index mask, name, size) losslessly as
numpy arrays in LitData chunks; ``StreamedFrames`` reads them back by index, so the training
order, augmentation seeds and mid-epoch resume stay those of ``SeededSampler``, and training
from shards sees the same arrays as training from the folder.

Endpoint and credentials are boto3's: the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION`` and ``AWS_PROFILE``
variables, or ``storage_options`` (keyword arguments of ``boto3.client("s3", ...)``, such as
``endpoint_url``), which take precedence.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from seg.data.frames import Frames
from seg.errors import DataError, install_hint

#: The item fields every shard holds, in this order.
FIELDS = ("index", "name", "height", "width", "image", "mask")


def _litdata() -> Any:
    try:
        import litdata
    except ImportError:
        raise DataError(f"streaming shards needs litdata: {install_hint('stream')}") from None
    return litdata


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names object storage (``s3://bucket/prefix``) rather than a local folder."""
    return urlparse(str(uri)).scheme == "s3"


def _frame_item(frames: Frames, index: int) -> dict[str, Any]:
    image, mask = frames.read(index)
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"frame {frames.name(index)}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
            f"{mask.shape[1]}x{mask.shape[0]}; they must have the same size"
        )
    return {
        "index": index,
        # as bytes: LitData stores a str ending in .png or .jpg as that file's contents
        "name": np.frombuffer(str(frames.name(index)).encode(), dtype=np.uint8).copy(),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "image": np.ascontiguousarray(image),
        "mask": np.ascontiguousarray(mask),
    }


def _s3_client(storage_options: dict[str, Any] | None) -> Any:
    import boto3

    return boto3.client("s3", **(storage_options or {}))


def _upload(folder: Path, uri: str, storage_options: dict[str, Any] | None) -> None:
    """Copy the shard files of ``folder`` to ``uri`` with boto3 (LitData 0.2.76's own uploader
    cannot reach a plain-http endpoint such as a local MinIO: its object store refuses http)."""
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    client = _s3_client(storage_options)
    try:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                client.upload_file(str(path), bucket, f"{prefix}/{path.name}" if prefix else path.name)
    except Exception as error:  # botocore's errors: no bucket, refused credentials, no endpoint
        raise DataError(
            f"cannot write shards to {uri}: {error}; check the bucket exists and AWS_ENDPOINT_URL, "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the storage options)"
        ) from None


def _worker_start_method() -> str | None:
    """How ``litdata.optimize`` starts its workers: forked where Linux allows it, so a worker
    starts at once with this process's imports (a spawned one imports torch and ``seg`` again,
    seconds per split); litdata's own choice (spawn) elsewhere, where forking is unsafe (macOS)
    or missing (Windows)."""
    return "fork" if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def _keeping_start_method() -> Any:
    """``litdata.optimize`` sets the process-wide multiprocessing start method to the one its
    workers use and leaves it so; put back the one before, which later dataloaders use."""
    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        if before is not None and multiprocessing.get_start_method(allow_none=True) != before:
            multiprocessing.set_start_method(before, force=True)


def write_shards(
    frames: Frames,
    output: str | os.PathLike[str],
    chunk_bytes: int | str = "64MB",
    num_workers: int = 1,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Write every frame of ``frames`` to ``output`` (a folder or ``s3://bucket/prefix``) as
    LitData shards, in index order; returns the number of frames written.

    ``num_workers`` processes decode frames (``frames`` must pickle when it is above 1); chunks
    hold about ``chunk_bytes`` each. An existing dataset at ``output`` is overwritten.
    """
    litdata = _litdata()
    if len(frames) == 0:
        raise DataError(f"no frames to write to {output}")
    uri = str(output)
    fn = functools.partial(_frame_item, frames)
    common = dict(fn=fn, inputs=list(range(len(frames))), chunk_bytes=chunk_bytes, verbose=False)
    common.update(num_workers=max(1, num_workers), keep_data_ordered=True, mode="overwrite")
    common.update(start_method=_worker_start_method())
    if is_remote(uri):
        with tempfile.TemporaryDirectory(prefix="seg-shards-") as tmp, _keeping_start_method():
            litdata.optimize(output_dir=tmp, **common)
            _upload(Path(tmp), uri, storage_options)
    else:
        Path(uri).mkdir(parents=True, exist_ok=True)
        with _keeping_start_method():
            litdata.optimize(output_dir=str(Path(uri).resolve()), **common)
    return len(frames)


class StreamedFrames:
    """Frames read by index from LitData shards written by ``write_shards``.

    Chunks are downloaded on first use into ``cache_dir`` (LitData's default,
    ``~/.lightning/chunks``, when ``None``), at most ``max_cache_size`` of them kept. Reading
    is random access: every rank and dataloader worker reads only the indices its sampler
    gives it, and ``len`` is the whole dataset's on every rank.
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        max_cache_size: int | str = "50GB",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        _litdata()
        self.uri = str(uri) if is_remote(str(uri)) else str(Path(uri).resolve())
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.max_cache_size = max_cache_size
        self.storage_options = dict(storage_options or {})
        self._dataset: Any = None
        self._length: int | None = None
        if not is_remote(self.uri) and not (Path(self.uri) / "index.json").is_file():
            raise DataError(f"no shards at {self.uri} (no index.json): write them with python -m seg.shard")

    def _open(self) -> Any:
        if self._dataset is None:
            litdata = _litdata()
            try:
                dataset = litdata.StreamingDataset(
                    self.uri,
                    cache_dir=self.cache_dir,
                    max_cache_size=self.max_cache_size,
                    storage_options=self.storage_options,
                )
                dataset[0]  # opens the index; its length is per rank under DDP, the cache's is not
                # whole chunks into the cache (random access reads each item's bytes by default),
                # except from a plain-http endpoint, which LitData's chunk downloader refuses
                dataset.on_demand_bytes = self.plain_http
            except DataError:
                raise
            except Exception as error:
                raise DataError(
                    f"cannot read shards at {self.uri}: {error}; check the URI and AWS_ENDPOINT_URL, "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the storage options)"
                ) from None
            self._length = len(dataset.cache)
            self._dataset = dataset
        return self._dataset

    @property
    def plain_http(self) -> bool:
        """Whether the shards come from an ``http://`` endpoint (a local MinIO, a test server):
        each frame's bytes are then fetched by range request and no chunk is cached."""
        endpoint = self.storage_options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL", "")
        return is_remote(self.uri) and str(endpoint).startswith("http://")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dataset"] = None  # each worker process opens its own reader
        return state

    def __len__(self) -> int:
        self._open()
        assert self._length is not None
        return self._length

    def item(self, index: int) -> dict[str, Any]:
        """The stored fields of frame ``index`` (see ``FIELDS``)."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames in {self.uri}")
        item = self._open()[index]
        if int(item["index"]) != index:
            raise DataError(
                f"shards at {self.uri} are out of order (frame {index} holds {item['index']}); rewrite them"
            )
        return item

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(H, W, C)`` uint8 image and ``(H, W)`` class-index mask, as written."""
        item = self.item(index)
        return item["image"], item["mask"]

    def mask(self, index: int) -> np.ndarray:
        """The ``(H, W)`` class-index mask of frame ``index``."""
        return self.item(index)["mask"]

    def size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of frame ``index``."""
        item = self.item(index)
        return int(item["height"]), int(item["width"])

    def name(self, index: int) -> str:
        """The name the source gave frame ``index`` (its image path for files)."""
        return bytes(np.asarray(self.item(index)["name"], dtype=np.uint8)).decode()


def shard_splits(cfg: Any) -> dict[str, int]:
    """Write every split the data config has (train, val, test) to ``<cfg.output>/<split>/``;
    returns the frames written per split. Frames are decoded as training decodes them."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from seg.errors import ConfigError, building

    output = str(cfg.get("output") or "").rstrip("/")
    if not output:
        raise ConfigError("output is not set: pass output=DIR or output=s3://bucket/prefix")
    with building("data"):
        datamodule = instantiate(cfg.data, cache=False)  # frames are read once each: no cache
    datamodule.prepare_data()
    datamodule.setup()
    options = OmegaConf.to_container(cfg.storage_options) if cfg.get("storage_options") else None
    written = {}
    for split in ("train", "val", "test"):
        if split in ("train", "val") or datamodule.has_split(split):
            frames = datamodule._dataset(split).frames
            where = f"{output}/{split}"
            written[split] = write_shards(frames, where, cfg.chunk_bytes, cfg.num_workers, options)
            print(f"{split}: {written[split]} frames -> {where}", flush=True)
    return written


def shards_exist(uri: str) -> bool:
    """Whether ``uri`` holds shards (an ``index.json``): optional splits (test) may be absent."""
    if not is_remote(uri):
        return (Path(uri) / "index.json").is_file()
    parsed = urlparse(uri)
    key = f"{parsed.path.strip('/')}/index.json".lstrip("/")
    try:
        _s3_client(None).head_object(Bucket=parsed.netloc, Key=key)
    except Exception:  # botocore's 404 (and any refusal): treated as no split
        return False
    return True
