"""Segmentation losses on logits ``(B, C, H, W)`` and integer targets ``(B, H, W)``.

Every loss takes ``ignore_index`` (pixels with that label contribute nothing) and
``class_weights`` (one weight per class), and computes in float32 whatever the logits' dtype.

- overlap.py: ``DiceLoss``, ``TverskyLoss`` (with the focal-Tversky exponent)
- pixelwise.py: ``CrossEntropyLoss``, ``FocalLoss``
- lovasz.py: ``LovaszSoftmaxLoss``
- combined.py: ``WeightedSum`` of any of them from config, and ``DiceCELoss``

Configs name them as ``seg.losses.<Name>`` (``conf/loss/``); checkpoints store that path.
"""

from seg.losses.combined import DiceCELoss, WeightedSum
from seg.losses.lovasz import LovaszSoftmaxLoss
from seg.losses.overlap import DiceLoss, TverskyLoss
from seg.losses.pixelwise import CrossEntropyLoss, FocalLoss

__all__ = [
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
    "WeightedSum",
]
