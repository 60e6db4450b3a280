"""Which samples a loader reads, and in what order: seeded, resumable training order and
evaluation batches of equally sized frames."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Sampler

from seg.errors import DataError
from seg.hardware import untune_allocator


class SizeGroupedBatches(Sampler[list[int]]):
    """Evaluation batches of equally sized images, so full frames of mixed sizes need no padding.

    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th batch: every image is
    evaluated exactly once across ranks (no padding, no duplicates), so metrics synchronised
    across ranks equal those of a single process. A split of fewer batches than ranks is cut into
    smaller batches, so that every rank has one (Lightning stops a rank given none).
    """

    def __init__(
        self, sizes: Sequence[tuple[int, int]], batch_size: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault(size, []).append(index)
        batches = [
            indices[i : i + batch_size] for indices in groups.values() for i in range(0, len(indices), batch_size)
        ]
        while len(batches) < num_replicas and any(len(batch) > 1 for batch in batches):
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches.pop(largest)
            half = (len(batch) + 1) // 2
            batches[largest:largest] = [batch[:half], batch[half:]]
        if batches and len(batches) < num_replicas:
            raise DataError(
                f"{len(sizes)} evaluation frame(s) cannot give each of the {num_replicas} processes one; "
                "evaluate with fewer devices (trainer.devices=...)"
            )
        self.batches = batches[rank::num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class SeededSampler(Sampler[tuple[int, int]]):
    """Training order and augmentation seeds that depend on ``(seed, epoch)`` alone.

    Yields ``(index, augmentation seed)``. A run resumed from a checkpoint therefore sees the
    same images in the same order with the same augmentations as a run never stopped, whatever
    the number of dataloader workers. With ``num_replicas > 1`` each rank takes every
    ``num_replicas``-th item (the epoch is padded to a multiple of ``num_replicas``).
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0  # items of this epoch already consumed (set when resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size)
        seeds = rng.integers(0, 2**31 - 1, size=self.size)
        per_rank = -(-self.size // self.num_replicas)
        padded = np.resize(np.arange(self.size), per_rank * self.num_replicas)  # repeats the start
        start, self.start = self.start, 0
        for position in padded[self.rank :: self.num_replicas][start:]:
            yield int(order[position]), int(seeds[position])

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas)


def init_worker(worker_id: int) -> None:
    """Dataloader workers leave Ctrl-C and SIGTERM to the training process, which stops cleanly
    and shuts them down; they return freed memory to the system (a worker forked from a training
    process with a tuned allocator would keep the peak of every frame it decoded); then
    Lightning's per-worker seeding."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    untune_allocator()
    pl_worker_init_function(worker_id)


class ResumableLoader(DataLoader):
    """A training DataLoader that checkpoints where it is in the epoch.

    Lightning saves ``state_dict()`` in every checkpoint and, when a run resumes in the middle
    of an epoch, calls ``load_state_dict``: the next epoch iterator then starts after the
    batches already trained on, in the same order, so a resumed run sees exactly the data an
    uninterrupted one would.

    Lightning swaps the sampler for a sequential one when overfitting (``trainer.overfit_batches``);
    the loader then always starts at the beginning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches = 0

    def __iter__(self) -> Iterator[Any]:
        self._batches = getattr(self.sampler, "start", 0) // (self.batch_size or 1)
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, SeededSampler):
            self.sampler.epoch = int(state["epoch"])
            self.sampler.start = int(state["batches"]) * (self.batch_size or 1)
