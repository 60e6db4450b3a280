"""seg: U-Net semantic segmentation with PyTorch Lightning and Hydra."""

from seg.models.torchvision_compat import declare_missing_operators

declare_missing_operators()  # before torchmetrics or smp import torchvision
