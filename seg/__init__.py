"""seg: U-Net semantic segmentation with PyTorch Lightning and Hydra."""

from seg.models.torchvision_compat import check_before_import

check_before_import()  # torchmetrics and smp import torchvision; torch is imported only then
