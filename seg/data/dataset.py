"""A map-style dataset of transformed (image, mask) tensors, read from a frames source."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from seg.data.frames import Frames

Transform = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(Dataset):
    """Decoded frames (from files, memory or shards: ``seg.data.frames``) through a transform.

    Args:
        frames: where the decoded images and class-index masks come from.
        transform: called with ``(image, mask)`` arrays and a ``seed`` (or ``None``), returns tensors.
    """

    def __init__(self, frames: Frames, transform: Transform) -> None:
        self.frames = frames
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed pair; ``key`` is an index, or ``(index, augmentation seed)``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        return self.transform(*self.frames.read(index), seed=seed)
