"""Training order, resuming mid-epoch and evaluation batches (seg.data.sampling)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from seg.data.sampling import ResumableLoader, SeededSampler, SizeGroupedBatches
from seg.errors import DataError


class _Keys(Dataset):
    """Returns the key it is asked for: ``(index, augmentation seed)``."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(key)


def _loader(epoch: int = 0) -> ResumableLoader:
    sampler = SeededSampler(10, seed=3)
    sampler.set_epoch(epoch)
    return ResumableLoader(_Keys(), batch_size=3, sampler=sampler, drop_last=True)


def test_order_and_seeds_depend_on_seed_and_epoch_only() -> None:
    a, b = SeededSampler(10, seed=3), SeededSampler(10, seed=3)
    assert list(a) == list(b)
    assert sorted(index for index, _ in a) == list(range(10))
    b.set_epoch(1)
    assert list(b) != list(a)
    assert list(SeededSampler(10, seed=4)) != list(a)


def test_ranks_share_the_epoch_padded_to_equal_lengths() -> None:
    ranks = [list(SeededSampler(5, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(r) for r in ranks] == [3, 3]
    assert {index for rank in ranks for index, _ in rank} == set(range(5))
    single = list(SeededSampler(5, seed=0))
    assert ranks[0] == single[0::2] and ranks[1] == [*single[1::2], single[0]]


def test_a_resumed_loader_continues_where_the_epoch_stopped() -> None:
    uninterrupted = [batch.tolist() for batch in _loader(epoch=2)]
    assert len(uninterrupted) == 3  # 10 samples, batches of 3, the last one dropped
    stopped = _loader(epoch=2)
    batches = iter(stopped)
    seen = [next(batches).tolist()]
    state = stopped.state_dict()
    assert state == {"epoch": 2, "batches": 1}
    resumed = _loader()
    resumed.load_state_dict(state)
    assert seen + [batch.tolist() for batch in resumed] == uninterrupted
    assert [batch.tolist() for batch in resumed] == uninterrupted  # the next epoch starts at 0


def test_eval_batches_hold_one_size_and_ranks_split_them() -> None:
    sizes = [(1, 1), (2, 2), (1, 1), (1, 1), (2, 2)]
    assert SizeGroupedBatches(sizes, 2).batches == [[0, 2], [3], [1, 4]]
    ranks = [SizeGroupedBatches(sizes, 2, num_replicas=2, rank=r).batches for r in range(2)]
    assert ranks == [[[0, 2], [1, 4]], [[3]]]


def test_a_split_of_fewer_batches_than_ranks_is_cut_so_that_every_rank_has_one() -> None:
    # 8 test frames in one batch of 8, on 2 ranks: 4 each, every frame once (Lightning stops a
    # rank whose loader is empty)
    ranks = [SizeGroupedBatches([(4, 4)] * 8, 8, num_replicas=2, rank=r).batches for r in range(2)]
    assert ranks == [[[0, 1, 2, 3]], [[4, 5, 6, 7]]]
    three = [SizeGroupedBatches([(4, 4)] * 3, 8, num_replicas=3, rank=r).batches for r in range(3)]
    assert sorted(i for batches in three for batch in batches for i in batch) == [0, 1, 2]
    assert all(len(batches) == 1 for batches in three)
    with pytest.raises(DataError, match="2 evaluation frame"):
        SizeGroupedBatches([(4, 4)] * 2, 8, num_replicas=3, rank=0)
    assert SizeGroupedBatches([], 8, num_replicas=2, rank=1).batches == []
