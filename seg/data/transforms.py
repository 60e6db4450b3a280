"""Joint image/mask augmentation. The only module that imports albumentations.

Configs list albumentations transforms by ``_target_``; Hydra instantiates them and this
module composes them and turns the result into tensors. Replacing the augmentation library
means changing this file and the ``_target_`` lines of ``conf/data/*.yaml``, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch


class Pipeline:
    """Applies a list of transforms to an ``(H, W, C)`` uint8 image and its ``(H, W)`` mask.

    Returns a ``(C, H, W)`` uint8 image tensor and an ``(H, W)`` int64 mask tensor. Masks are
    always resampled with nearest-neighbour interpolation, so labels are never blended.
    Scaling to ``[0, 1]`` and normalisation happen in the model, not here.
    """

    def __init__(self, transforms: Sequence[Any] | None = None) -> None:
        self.transforms = list(transforms or [])
        self._compose = (
            A.Compose(self.transforms, mask_interpolation=0) if self.transforms else None
        )

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one pair; with ``seed``, the random choices depend on it alone."""
        if self._compose is not None:
            if seed is not None:
                self._compose.set_random_seed(seed)
            out = self._compose(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        if image.ndim == 2:
            image = image[..., None]
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        mask_t = torch.from_numpy(mask.astype(np.int64))
        return image_t, mask_t

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms) or "none"
        return f"Pipeline({names})"
