"""A map-style dataset of (image, mask) tensors, decoded once and kept in memory by default."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from seg.data.layouts import Sample
from seg.data.masks import MaskDecoder
from seg.data.reading import read_sample

Transform = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(Dataset):
    """Samples read from disk and decoded into class-index masks.

    Args:
        samples: the image/mask files.
        decoder: turns raw masks into class indices and checks their values.
        transform: called with ``(image, mask)`` arrays and a ``seed`` (or ``None``), returns tensors.
        in_channels: 3 for RGB, 1 for grayscale.
        cache: decode every sample now and keep the arrays: epochs then cost no decoding, and a
            broken file stops the run before training starts, with its name.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        decoder: MaskDecoder,
        transform: Transform,
        in_channels: int = 3,
        cache: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.decoder = decoder
        self.transform = transform
        self.in_channels = in_channels
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self._cache = [self.read(i) for i in range(len(self.samples))]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded ``(H, W, C)`` image and ``(H, W)`` class-index mask, before transforms."""
        if self._cache is not None:
            return self._cache[index]
        sample = self.samples[index]
        image, raw = read_sample(sample, self.in_channels)
        return image, self.decoder(raw, sample.mask or sample.image)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed pair; ``key`` is an index, or ``(index, augmentation seed)``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        return self.transform(*self.read(index), seed=seed)
