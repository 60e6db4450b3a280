"""The LightningDataModule: splits, datasets and dataloaders for any folder-layout dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from seg.data.folder import SegmentationDataset, check_sizes, find_pairs
from seg.data.synthetic import SyntheticScenes
from seg.data.transforms import Pipeline
from seg.errors import DataError


class SegmentationDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders over ``<root>/<split>/{images,masks}``.

    Args:
        root: dataset folder; for generated data, the cache folder it is written into.
        num_classes: number of classes (the model and metrics read it from the data config).
        class_names: one name per class, used in metric names; ``class_<i>`` when omitted.
        ignore_index: mask value excluded from loss and metrics, or ``None``.
        batch_size: images per training batch (validation and test use the same).
        num_workers: dataloader worker processes (0 loads in the training process).
        pin_memory: page-locked batches for faster GPU copies; ``None`` pins when CUDA is used.
        persistent_workers: keep workers alive between epochs.
        train_transforms: augmentation transforms for training (albumentations objects).
        eval_transforms: deterministic transforms for validation and test.
        in_channels: 3 for RGB images, 1 for grayscale.
        image_size: side of the square training batches; the transform configs refer to it.
        cache: decode all images once at setup and keep them in memory.
        splits: folder names of the ``train``, ``val`` and ``test`` splits; test is optional.
        image_dir: image subfolder of each split.
        mask_dir: mask subfolder of each split.
        generator: writes the dataset under ``root`` first (e.g. ``SyntheticScenes``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transforms: Sequence[Any] | None = None,
        eval_transforms: Sequence[Any] | None = None,
        in_channels: int = 3,
        image_size: int | None = None,
        cache: bool = True,
        splits: dict[str, str] | None = None,
        image_dir: str = "images",
        mask_dir: str = "masks",
        generator: SyntheticScenes | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.root = generator.path(root) if generator is not None else Path(root)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.ignore_index = ignore_index
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.train_pipeline = Pipeline(train_transforms)
        self.eval_pipeline = Pipeline(eval_transforms)
        self.in_channels = in_channels
        self.image_size = image_size
        self.cache = cache
        self.splits = {"train": "train", "val": "val", "test": "test", **(splits or {})}
        self.image_dir = image_dir
        self.mask_dir = mask_dir
        self.datasets: dict[str, SegmentationDataset] = {}

    def prepare_data(self) -> None:
        if self.generator is not None:
            self.generator.build(self.root.parent)

    def has_split(self, split: str) -> bool:
        """Whether ``split`` (train, val or test) exists on disk."""
        return (self.root / self.splits[split] / self.image_dir).is_dir()

    def _dataset(self, split: str) -> SegmentationDataset:
        if split not in self.datasets:
            if not self.root.is_dir():
                raise DataError(f"data.root {self.root} does not exist; point data.root at your dataset")
            pairs = find_pairs(self.root, self.splits[split], self.image_dir, self.mask_dir)
            check_sizes(pairs)
            pipeline = self.train_pipeline if split == "train" else self.eval_pipeline
            self.datasets[split] = SegmentationDataset(
                pairs, self.num_classes, self.ignore_index, pipeline, self.in_channels, self.cache
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None):
            self._dataset("train")
            self._dataset("val")
        if stage == "validate":
            self._dataset("val")
        if stage == "test" or (stage is None and self.has_split("test")):
            self._dataset("test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self._dataset(split)
        pin = self.pin_memory
        if pin is None:
            trainer = self.trainer
            pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
