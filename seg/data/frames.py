"""Where a dataset's decoded frames come from: its files at every read, or memory.

A *frames* object is what ``SegmentationDataset`` reads: ``len()``, ``read(i)`` (the decoded
``(H, W, C)`` uint8 image and ``(H, W)`` class-index mask, before transforms), ``mask(i)`` (the
mask alone), ``size(i)`` (``(height, width)``) and ``name(i)`` (what a message calls the frame).

``data.cache`` picks between them (``frames_for``):

- ``true``: decode every frame once, in parallel threads, into two contiguous buffers;
- ``false``: decode in the loader workers at every read;
- ``auto`` (the default): keep the training split in memory when its decoded size, read from
  the file headers, fits ``data.cache_memory_share`` of the memory available, counting one copy
  per loader worker where workers do not share the parent's pages (spawn, the default outside
  Linux); decode evaluation splits at every read. One log line per split says which and why.

Either way every file's header is read first (``read_headers``): a frame whose image and mask
sizes differ, or a file that is empty or not an image, stops the run before training starts.

Per-worker memory does not grow with the dataset: file names and cached pixels are numpy
buffers, not lists of Python objects, so a forked worker touching them copies no pages.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from seg.data.layouts import Sample
from seg.data.masks import MaskFormat
from seg.data.reading import image_size, open_image, read_mask_array, read_sample
from seg.errors import ConfigError, DataError
from seg.hardware import usable_cores

log = logging.getLogger(__name__)

#: The values of ``data.cache``.
CACHE_CHOICES = (True, False, "auto")
#: Why ``data.cache=auto`` decodes evaluation splits at every read: a validation pass sends whole
#: frames through the network, which costs many times their decoding, while a training step on a
#: crop is cheap enough for decoding to matter. Memory goes where it buys speed.
EVALUATION_DECODES = (
    "decoding in the loader workers at every read: evaluation runs whole frames through the "
    "network, which costs far more than decoding them (data.cache=true keeps them in memory)"
)


class Frames(Protocol):
    """Decoded frames by index (see the module docstring)."""

    def __len__(self) -> int: ...

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    def mask(self, index: int) -> np.ndarray: ...

    def size(self, index: int) -> tuple[int, int]: ...

    def name(self, index: int) -> str: ...


class DiskFrames:
    """Frames decoded from their files at every read (what loader workers do without a cache).

    Args:
        samples: the image/mask files.
        mask_format: turns raw masks into class indices and checks their values.
        in_channels: 3 for RGB, 1 for grayscale.
        sizes: ``(height, width)`` of every frame, from ``read_headers``.
    """

    def __init__(
        self, samples: Sequence[Sample], mask_format: MaskFormat, in_channels: int, sizes: np.ndarray
    ) -> None:
        self._images = np.array([str(s.image) for s in samples])
        self._masks = np.array([str(s.mask) if s.mask is not None else "" for s in samples])
        self.mask_format = mask_format
        self.in_channels = in_channels
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(len(samples), 2)

    def __len__(self) -> int:
        return len(self._images)

    def sample(self, index: int) -> Sample:
        """The files of frame ``index``."""
        mask = str(self._masks[index])
        return Sample(Path(str(self._images[index])), Path(mask) if mask else None)

    @property
    def samples(self) -> list[Sample]:
        """Every frame's files, in order."""
        return [self.sample(i) for i in range(len(self))]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.sample(index)
        image, raw = read_sample(sample, self.in_channels)
        return image, self.mask_format(raw, sample.mask or sample.image)

    def mask(self, index: int) -> np.ndarray:
        """The class-index mask of frame ``index``, without decoding its image where it has a
        file of its own."""
        sample = self.sample(index)
        if sample.mask is None:
            return self.read(index)[1]
        return self.mask_format(read_mask_array(open_image(sample.mask, "mask")), sample.mask)

    def size(self, index: int) -> tuple[int, int]:
        height, width = self.sizes[index]
        return int(height), int(width)

    def name(self, index: int) -> str:
        return str(self._images[index])

    def decoded_bytes(self, mask_dtype: np.dtype) -> int:
        """Bytes the decoded images and masks of every frame take in memory."""
        pixels = int((self.sizes[:, 0] * self.sizes[:, 1]).sum())
        return pixels * (self.in_channels + np.dtype(mask_dtype).itemsize)


class MemoryFrames:
    """Every frame of ``source`` decoded once, in ``threads`` parallel threads, into one image
    buffer and one mask buffer; ``read`` returns views into them (epochs cost no decoding)."""

    def __init__(self, source: DiskFrames, mask_dtype: np.dtype, threads: int) -> None:
        self.source = source
        self.sizes = source.sizes
        pixels = self.sizes[:, 0] * self.sizes[:, 1]
        self._offsets = np.concatenate([[0], np.cumsum(pixels)])
        channels = source.in_channels
        self._images = np.empty(int(self._offsets[-1]) * channels, dtype=np.uint8)
        self._masks = np.empty(int(self._offsets[-1]), dtype=mask_dtype)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for _ in pool.map(self._decode, range(len(source))):
                pass

    def _decode(self, index: int) -> None:
        image, mask = self.source.read(index)
        start, end = self._offsets[index], self._offsets[index + 1]
        channels = self.source.in_channels
        self._images[start * channels : end * channels] = image.reshape(-1)
        self._masks[start:end] = mask.reshape(-1)

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.size(index)
        start, end = self._offsets[index], self._offsets[index + 1]
        channels = self.source.in_channels
        image = self._images[start * channels : end * channels].reshape(height, width, channels)
        return image, self._masks[start:end].reshape(height, width)

    def mask(self, index: int) -> np.ndarray:
        return self.read(index)[1]

    def size(self, index: int) -> tuple[int, int]:
        return self.source.size(index)

    def name(self, index: int) -> str:
        return self.source.name(index)

    @property
    def samples(self) -> list[Sample]:
        return self.source.samples


def read_headers(samples: Sequence[Sample]) -> np.ndarray:
    """``(height, width)`` of every frame from its files' headers, without decoding pixels.

    Raises ``DataError`` naming the file for an empty or unreadable file, an image whose mask
    has another size, or a side-by-side file that is not twice as wide as high.
    """
    sizes = np.empty((len(samples), 2), dtype=np.int64)
    for index, sample in enumerate(samples):
        for what, path in (("image", sample.image), ("mask", sample.mask)):
            if path is not None and path.stat().st_size == 0:
                raise DataError(f"{what} {path} is an empty file")
        width, height = image_size(sample.image, "image")
        if sample.mask is None:
            if width != 2 * height:
                read_sample(sample)  # raises the side-by-side message
            width //= 2
        elif image_size(sample.mask, "mask") != (width, height):
            read_sample(sample)  # raises with both sizes
        sizes[index] = height, width
    return sizes


@dataclass(frozen=True)
class MemoryBudget:
    """How much decoded data ``data.cache=auto`` may keep in memory.

    Args:
        share: the fraction of available memory the cache may take.
        num_workers: loader worker processes; each holds its own copy unless workers are forked.
    """

    share: float
    num_workers: int

    def copies(self) -> int:
        """Copies of a cached split in memory: forked workers share the parent's pages."""
        forked = multiprocessing.get_start_method() == "fork"
        return 1 if forked or self.num_workers == 0 else 1 + self.num_workers

    def fits(self, nbytes: int) -> tuple[bool, str]:
        """Whether ``nbytes`` of decoded frames fit in the share, and the reason in words."""
        fits, numbers = self._weigh(nbytes, self.share)
        if fits:
            return True, f"keeping the decoded frames in memory: {numbers}, share {self.share:g}"
        reason = f"decoding in the loader workers at every read: in memory they would take {numbers}"
        return False, f"{reason}, share {self.share:g}"

    def fits_at_all(self, nbytes: int) -> tuple[bool, str]:
        """Whether ``nbytes`` of decoded frames fit in all the memory available, and the numbers."""
        return self._weigh(nbytes, 1.0)

    def _weigh(self, nbytes: int, share: float) -> tuple[bool, str]:
        available, copies = available_memory(), self.copies()
        needed = nbytes * copies
        copies_said = f" ({copies} copies: one per spawned loader worker, one here)" if copies > 1 else ""
        return needed <= share * available, f"{gib(needed)}{copies_said} of the {gib(available)} available"


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB, as log lines show sizes."""
    return f"{nbytes / 2**30:.2f} GiB"


def available_memory() -> int:
    """Bytes of memory available to new allocations without swapping (all OSes, via psutil)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_cache_setting(cache: bool | str, share: float) -> None:
    """Refuse a ``data.cache`` or ``data.cache_memory_share`` that cannot work, naming the key."""
    if cache not in CACHE_CHOICES or (isinstance(cache, int) and not isinstance(cache, bool)):
        raise ConfigError(f"data.cache={cache!r}: choose true, false or auto")
    if not 0 < share <= 1:
        raise ConfigError(f"data.cache_memory_share={share!r}: give a fraction of memory in (0, 1]")


def frames_for(
    split: str,
    samples: Sequence[Sample],
    mask_format: MaskFormat,
    in_channels: int,
    mask_dtype: np.dtype,
    cache: bool | str,
    budget: MemoryBudget,
    training: bool,
) -> DiskFrames | MemoryFrames:
    """The frames of ``split`` as ``cache`` says, after reading every file's header. ``auto``
    keeps only a ``training`` split in memory (see ``EVALUATION_DECODES``)."""
    disk = DiskFrames(samples, mask_format, in_channels, read_headers(samples))
    keep = bool(cache)
    if cache == "auto":
        keep, reason = budget.fits(disk.decoded_bytes(mask_dtype)) if training else (False, EVALUATION_DECODES)
        log.info("data.cache=auto, %s frames of %s: %s", len(disk), split, reason)
    elif cache is True:
        fits, numbers = budget.fits_at_all(disk.decoded_bytes(mask_dtype))
        if not fits:
            raise ConfigError(
                f"data.cache=true: the {len(disk)} decoded frames of {split} do not fit in memory "
                f"({numbers}); use data.cache=auto to keep only what fits, or data.cache=false"
            )
    if not keep:
        return disk
    return MemoryFrames(disk, mask_dtype, threads=usable_cores())
