"""Small datasets written to disk for tests, in every layout the project reads."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from seg.data.synthetic import TEXTURES, render_scene

CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]  # fmt: skip


def label_map(seed: int, size: int = 64, num_classes: int = 3) -> np.ndarray:
    """A label map of overlapping shapes with classes ``0..num_classes-1``."""
    rng = np.random.default_rng(seed)
    _, labels = render_scene(size, rng, list(TEXTURES.values()), max_shapes=6, noise=10.0)
    relabel = rng.integers(0, num_classes, size=labels.max() + 1)
    return relabel[labels].astype(np.uint8)


def photo(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, 256, (size, size, 3), dtype=np.uint8)


def photo_of(labels: np.ndarray, seed: int) -> np.ndarray:
    """A photo a model can learn the labels from: each class its own grey level, plus noise."""
    levels = np.linspace(40, 215, int(labels.max()) + 1 if labels.size else 1)
    noise = np.random.default_rng(seed + 2000).normal(0, 20, (*labels.shape, 3))
    return np.clip(levels[labels][..., None] + noise, 0, 255).astype(np.uint8)


#: How masks are stored: a label map in, the image file's content out.
Encoder = Callable[[np.ndarray], Image.Image]


def binary_255(labels: np.ndarray) -> Image.Image:
    """A 0/255 8-bit mask (Carvana, most medical sets): foreground 255."""
    return Image.fromarray((labels > 0).astype(np.uint8) * 255)


def palette_png(
    labels: np.ndarray, colours: Sequence[Sequence[int]] = ((0, 0, 0), (200, 0, 0), (0, 180, 60))
) -> Image.Image:
    """A palette ("P") PNG as VOC stores masks: the pixel is the class index, 255 is white."""
    image = Image.fromarray(labels.astype(np.uint8))
    table = np.full((256, 3), 255, dtype=np.uint8)
    table[: len(colours)] = colours
    image.putpalette(table.reshape(-1).tolist())  # an "L" image with a palette becomes "P"
    return image


def uint16_codes(codes: Sequence[int]) -> Encoder:
    """16-bit masks ("I;16") storing ``codes[label]`` for each pixel."""
    return lambda labels: Image.fromarray(np.asarray(codes, dtype=np.uint16)[labels])


def write_folder(
    root: Path,
    splits: dict[str, int],
    num_classes: int = 3,
    size: int = 64,
    images: str = "{split}/images",
    masks: str = "{split}/masks",
    palette: Sequence[Sequence[int]] | None = None,
    encode: Encoder | None = None,
    learnable: bool = False,
) -> Path:
    """Write ``count`` image/mask pairs per split. Masks are 8-bit class indices, colours when
    ``palette`` is given, or whatever ``encode`` makes of the label map; ``learnable`` photos
    show their labels (``photo_of``), the others are noise."""
    for split, count in splits.items():
        (root / images.format(split=split)).mkdir(parents=True, exist_ok=True)
        (root / masks.format(split=split)).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed = i + 100 * len(split)
            labels = label_map(seed, size, num_classes)
            image = photo_of(labels, seed) if learnable else photo(seed, size)
            Image.fromarray(image).save(root / images.format(split=split) / f"{i:03d}.png")
            if encode is not None:
                mask = encode(labels)
            else:
                mask = Image.fromarray(
                    labels if palette is None else np.asarray(palette, dtype=np.uint8)[labels]
                )
            mask.save(root / masks.format(split=split) / f"{i:03d}.png")
    return root


def jpeg_pair(labels: np.ndarray, palette: Sequence[Sequence[int]], seed: int, quality: int = 85) -> bytes:
    """A side-by-side JPEG: photo on the left, the colour-coded labels on the right."""
    colours = np.asarray(palette, dtype=np.uint8)[labels]
    pair = np.concatenate([photo(seed, labels.shape[0]), colours], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pair).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_pairs(
    root: Path, splits: dict[str, int], size: int = 128, quality: int = 85
) -> dict[str, list[np.ndarray]]:
    """Write JPEG pairs with Cityscapes colours; return the true label maps per split."""
    truth: dict[str, list[np.ndarray]] = {}
    for split, count in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        truth[split] = []
        for i in range(count):
            labels = label_map(7 * i + len(split), size, num_classes=19)
            (root / split / f"{i:03d}.jpg").write_bytes(jpeg_pair(labels, CITYSCAPES_PALETTE, i, quality))
            truth[split].append(labels)
    return truth


class NanAfter(torch.nn.Module):
    """A Dice loss that turns NaN after ``calls`` training steps (for the NaN-stop test)."""

    def __init__(self, calls: int, ignore_index: int | None = None) -> None:
        super().__init__()
        from seg.losses import DiceLoss

        self.loss = DiceLoss(smooth=1.0, ignore_index=ignore_index)
        self.calls = calls
        self.seen = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = self.loss(logits, target)
        if torch.is_grad_enabled():  # training steps only, not validation
            self.seen += 1
            if self.seen > self.calls:
                return value * float("nan")
        return value


class SlowSteps(pl.Callback):
    """Makes every training step ``seconds`` longer: a slower machine, for the budget tests."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: object) -> None:
        time.sleep(self.seconds)


class TruncateAtStep(pl.Callback):
    """Cuts the file at ``path`` to a third of its bytes as training step ``step`` begins: a file
    that breaks mid-run, long after the start-up header check (its header still reads)."""

    def __init__(self, path: str, step: int) -> None:
        self.path, self.step = Path(path), step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            data = self.path.read_bytes()
            self.path.write_bytes(data[: len(data) // 3])


class RecordLearningRate(pl.Callback):
    """Appends ``step lr`` to ``<path>.rank<global rank>`` at every training batch (after the
    callbacks before it have set the rate): one file per process, for the DDP budget test."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as out:
            out.write(f"{trainer.global_step} {lr!r}\n")


class RecordWeights(pl.Callback):
    """Saves to ``path`` the module's state after every training step, the state it validates
    with (outside the sanity check) and the state after the last validation, for the EMA tests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _state(module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self.steps.append(self._state(pl_module))

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object
    ) -> None:
        if not trainer.sanity_checking:
            self.validated.append(self._state(pl_module))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after = self._state(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save({"steps": self.steps, "validated": self.validated, "after": self.after}, self.path)


class DecodedMasks(pl.Callback):
    """Keeps the training split's masks as the run's own data module decoded them (at fit start),
    so format tests compare what training sees with the labels the files were made from."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = trainer.datamodule.datasets["train"]
        self.masks = [dataset.frames.read(i)[1] for i in range(len(dataset))]
