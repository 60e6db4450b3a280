"""The LightningDataModule: splits, checks, datasets and dataloaders for every data format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from seg.data.cache import Sources, cached_json
from seg.data.dataset import SegmentationDataset
from seg.data.frames import MemoryBudget, check_cache_setting, frames_for
from seg.data.layouts import FolderLayout, Problem, Sample, SideBySideLayout
from seg.data.masks import MaskFormat
from seg.data.reading import read_sample
from seg.data.sampling import ResumableLoader, SeededSampler, SizeGroupedBatches, init_worker
from seg.data.shards import StreamedFrames, shards_exist
from seg.data.splits import ValidationSplit
from seg.data.stats import class_histogram, median_frequency_from_masks
from seg.data.synthetic import SyntheticScenes
from seg.data.transforms import Pipeline
from seg.errors import ConfigError, DataError
from seg.classes import ClassInfo, default_names, default_palette

SPLITS = ("train", "val", "test")


class SegmentationDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders for a dataset described by a layout and a mask format.

    Every argument but ``generator`` is required: their defaults are the data configs
    (``conf/data/_loader.yaml`` and each dataset's file), and nowhere else.

    Args:
        root: dataset folder; for generated data, the cache folder it is written into.
        num_classes: number of classes (the model and metrics read it from the data config).
        class_names: one name per class, used in metric names; ``class_<i>`` when ``None``.
        ignore_index: mask value excluded from loss and metrics, or ``None``.
        palette: one ``[r, g, b]`` per class, to decode colour masks and to draw predictions.
        layout: where images and masks are.
        mask_format: turns mask files into class indices.
        mean: per-channel mean of the images in ``[0, 1]`` units (the model normalises with it).
        std: per-channel standard deviation of the images in ``[0, 1]`` units.
        image_size: side of the square training images or crops; the transform configs refer to it.
        batch_size: images per training batch.
        eval_batch_size: images per validation/test batch (``None``: ``batch_size``).
        num_workers: dataloader worker processes (0 loads in the training process).
        pin_memory: page-locked batches for faster GPU copies; ``None`` pins when CUDA is used.
        persistent_workers: keep workers alive between epochs.
        train_transforms: augmentation transforms for training (albumentations objects).
        eval_transforms: deterministic transforms for validation and test.
        in_channels: 3 for RGB images, 1 for grayscale.
        cache: ``True`` decodes every frame once at setup and keeps it in memory, ``False``
            decodes at every read, ``"auto"`` keeps them when they fit (``seg.data.frames``).
        cache_memory_share: the fraction of available memory ``cache="auto"`` may fill.
        val_fraction: when the dataset has no validation split, hold out this fraction of train.
        val_sequences: validate on the training frames of these sequences (file name up to the
            first ``_``), held out of train, instead of on the val split (see ``seg.data.splits``).
        split_seed: seed of the ``val_fraction`` hold-out.
        seed: seed of the training order and augmentations (see ``SeededSampler``).
        cache_dir: where derived data (class weights, colour clusters) is cached.
        generator: writes the dataset under ``root`` first (e.g. ``SyntheticScenes``).
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str],
        num_classes: int,
        class_names: Sequence[str] | None,
        ignore_index: int | None,
        palette: Sequence[Sequence[int]] | None,
        layout: FolderLayout | SideBySideLayout,
        mask_format: MaskFormat,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        image_size: int | None,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        pin_memory: bool | None,
        persistent_workers: bool,
        train_transforms: Sequence[Any],
        eval_transforms: Sequence[Any],
        in_channels: int,
        cache: bool | str,
        cache_memory_share: float,
        val_fraction: float | None,
        val_sequences: str | Sequence[str] | None,
        split_seed: int,
        seed: int,
        cache_dir: str | os.PathLike[str],
        generator: SyntheticScenes | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.root = generator.path(root) if generator is not None else Path(root)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else default_names(num_classes)
        self.ignore_index = ignore_index
        self.layout = layout
        self.mask_format = mask_format
        self._palette = [list(map(int, c)) for c in palette] if palette is not None else None
        self.mean, self.std = mean, std
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.train_pipeline = Pipeline(train_transforms)
        self.eval_pipeline = Pipeline(eval_transforms)
        self.in_channels = in_channels
        check_cache_setting(cache, cache_memory_share)
        self.cache = cache
        self.cache_budget = MemoryBudget(cache_memory_share, num_workers)
        self.validation = ValidationSplit.from_config(val_fraction, val_sequences, split_seed)
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.datasets: dict[str, SegmentationDataset] = {}
        self.stream = str(stream).rstrip("/") if stream else None  # shards at <stream>/<split>/
        self._samples: dict[str, list[Sample]] | None = None
        self._val_source = "split"

    # ----------------------------------------------------------------------------- metadata
    @property
    def mask_dtype(self) -> np.dtype:
        """The smallest integer type that holds every class index and the ignore label."""
        largest = max(self.num_classes - 1, self.ignore_index if self.ignore_index is not None else 0)
        return np.dtype(np.uint8 if largest < 256 else np.int32)

    @property
    def palette(self) -> list[list[int]]:
        """One ``[r, g, b]`` per class: configured, fitted by the mask format, or generated."""
        return self.mask_format.palette or self._palette or default_palette(self.num_classes)

    @property
    def classes(self) -> ClassInfo:
        """What a model trained on this data predicts: names, colours, ignored label, input channels."""
        return ClassInfo(list(self.class_names), self.palette, self.ignore_index, self.in_channels)

    def has_split(self, split: str) -> bool:
        """Whether ``split`` (train, val or test) has data, on disk or carved from train."""
        if self.stream is not None:
            return split in ("train", "val") or shards_exist(f"{self.stream}/{split}")
        if split == "val" and self.validation.takes_val_from_train(self.layout.has_split(self.root, "val")):
            return self.layout.has_split(self.root, "train")
        return self.layout.has_split(self.root, split)

    def split_sizes(self) -> dict[str, int]:
        """Number of samples in each split present."""
        if self.stream is not None:
            return {split: len(self._dataset(split)) for split in SPLITS if self.has_split(split)}
        return {split: len(samples) for split, samples in self._split_samples().items()}

    def validation_summary(self) -> dict[str, Any]:
        """Which frames validate (the val split, or frames held out of train) and the split
        sizes, with a one-line ``description``: runs write it so their numbers can be told apart."""
        return self.validation.summary(self._val_source, self.split_sizes())

    # ----------------------------------------------------------------------------- samples
    def prepare_data(self) -> None:
        if self.generator is not None:
            self.generator.build(self.root.parent)

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise DataError(
                f"data.root {self.root} does not exist: expected {self.layout.describe('train')}; "
                "put the dataset there or pass data.root=DIR"
            )

    def samples(self) -> tuple[dict[str, list[Sample]], dict[str, list[Problem]]]:
        """Samples of every split present (val carved from train if asked), and pairing problems."""
        self._check_root()
        found: dict[str, list[Sample]] = {}
        problems: dict[str, list[Problem]] = {}
        for split in SPLITS:
            if split == "val" and self.validation.replaces_val_split():
                continue
            if self.layout.has_split(self.root, split) or split == "train":
                found[split], problems[split] = self.layout.samples(self.root, split)
        found, self._val_source = self.validation.carve(found)
        return found, problems

    def _split_samples(self) -> dict[str, list[Sample]]:
        if self._samples is None:
            found, by_split = self.samples()
            problems = [problem for split_problems in by_split.values() for problem in split_problems]
            if problems:
                more = f" (and {len(problems) - 1} more: python -m seg.check_data with the same data options lists them)"
                raise DataError(problems[0].message + (more if len(problems) > 1 else ""))
            if "val" not in found:
                raise DataError(
                    f"no validation split: expected {self.layout.describe('val')}, or set "
                    "data.val_fraction=0.1 to hold out part of train"
                )
            self.mask_format.prepare(found["train"], self.read_raw_mask, self.cache_dir)
            self._samples = found
        return self._samples

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """The mask of ``sample`` as stored, before decoding (what mask formats are fitted on)."""
        return read_sample(sample, self.in_channels)[1]

    def _dataset(self, split: str) -> SegmentationDataset:
        if split not in self.datasets and self.stream is not None:
            frames = StreamedFrames(f"{self.stream}/{split}", self.cache_dir / "shards")
            self.datasets[split] = SegmentationDataset(
                frames, self.train_pipeline if split == "train" else self.eval_pipeline
            )
        if split not in self.datasets:
            samples = self._split_samples()[split]
            training = split == "train"
            frames = frames_for(
                split, samples, self.mask_format, self.in_channels, self.mask_dtype, self.cache,
                self.cache_budget, training,
            )  # fmt: skip
            pipeline = self.train_pipeline if training else self.eval_pipeline
            self.datasets[split] = SegmentationDataset(frames, pipeline)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None):
            self._dataset("train")
            self._dataset("val")
        if stage == "validate":
            self._dataset("val")
        if stage == "test" or (stage is None and self.has_split("test")):
            self._dataset("test")

    # ----------------------------------------------------------------------------- loaders
    def eval_dataloader(self, split: str) -> DataLoader:
        """Full-frame, unshuffled batches of any split (as validation uses), for evaluation."""
        return self._loader(split, train=False)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self._dataset(split)
        pin = self.pin_memory
        if pin is None:
            trainer = self.trainer
            pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        common: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": pin,
            "persistent_workers": self.persistent_workers and self.num_workers > 0,
            "worker_init_fn": init_worker if self.num_workers > 0 else None,
        }
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if train:
            sampler = SeededSampler(len(dataset), self.seed, world, rank)
            drop_last = len(sampler) > self.batch_size
            return ResumableLoader(
                dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last, **common
            )
        sizes = [self._frame_size(dataset, i) for i in range(len(dataset))]
        batches = SizeGroupedBatches(sizes, self.eval_batch_size, world, rank)
        return DataLoader(dataset, batch_sampler=batches, **common)

    def _frame_size(self, dataset: SegmentationDataset, index: int) -> tuple[int, int]:
        if self.eval_pipeline.transforms:  # transforms may resize; ask the pipeline
            return tuple(dataset[index][1].shape)  # type: ignore[return-value]
        return dataset.frames.size(index)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    # ----------------------------------------------------------------------------- statistics
    def class_pixels(self, split: str) -> dict[str, Any]:
        """Decoded pixels of each class in ``split`` (``pixels``, in class order) and the ignored
        ones (``ignored``): what the model card shows of the training data."""
        dataset = self._dataset(split)
        masks = (dataset.frames.mask(i) for i in range(len(dataset)))
        pixels, _, ignored = class_histogram(masks, self.num_classes, self.ignore_index)
        return {"split": split, "pixels": [int(p) for p in pixels], "ignored": int(ignored)}

    def median_frequency_weights(self) -> list[float]:
        """SegNet-style class weights from the training masks, computed once and cached (again
        when a training mask changes: see ``seg.data.cache``)."""
        if self.stream is not None:
            raise ConfigError(
                f"loss.class_weights=median_frequency reads the mask files, not data.stream={self.stream}; "
                "pass the weights as a list (loss.class_weights=[...])"
            )
        dataset = self._dataset("train")
        samples = dataset.frames.samples
        key = [str(self.root.resolve()), [str(s.image) for s in samples], repr(self.mask_format),
               self.mask_format.palette, self.num_classes, self.ignore_index]  # fmt: skip

        def compute() -> dict[str, Any]:
            masks = (dataset.frames.mask(i) for i in range(len(dataset)))
            weights = median_frequency_from_masks(masks, self.num_classes, self.ignore_index)
            return {"weights": weights, "class_names": self.class_names}

        masks = Sources([s.mask or s.image for s in samples], "training masks", self.root)
        cached = cached_json(self.cache_dir, "median-frequency", key, compute, masks, "class weights")
        return cached["weights"]
