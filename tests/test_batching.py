"""Length-bucketed batching: coverage, limits, determinism and sharding across processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridgetune.data.batching import PAD_MULTIPLE, eval_batches, pack, padded, shard, train_batches


def random_lengths(n: int, seed: int = 0, low: int = 1, high: int = 200) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]


def flatten(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


def assert_within_budget(
    batches: list[list[int]], lengths: list[int], batch_size: int, batch_tokens: int | None
) -> None:
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        if batch_tokens is not None and len(batch) > 1:
            width = padded(max(lengths[i] for i in batch))
            assert width * len(batch) <= batch_tokens, (batch, width)


def test_padded_rounds_up_to_multiple_of_8() -> None:
    assert PAD_MULTIPLE == 8
    assert [padded(n) for n in (1, 7, 8, 9, 16, 17)] == [8, 8, 8, 16, 16, 24]


def test_pack_hand_example() -> None:
    lengths = [3, 5, 9, 10, 30]
    # budget 32: [3,5] -> width 8 x 2 = 16; adding 9 -> 16 x 3 = 48 > 32
    assert pack([0, 1, 2, 3, 4], lengths, 10, 32) == [[0, 1], [2, 3], [4]]
    assert pack([0, 1, 2, 3, 4], lengths, 2, None) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("batch_tokens", [None, 256, 1000, 4096])
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_train_batches_cover_every_index_once(batch_size: int, batch_tokens: int | None) -> None:
    lengths = random_lengths(500, seed=batch_size)
    batches = train_batches(lengths, batch_size, batch_tokens, seed=3, epoch=0)
    assert sorted(flatten(batches)) == list(range(len(lengths)))
    assert_within_budget(batches, lengths, batch_size, batch_tokens)


def test_train_batches_fill_up_to_batch_size() -> None:
    lengths = [10] * 100
    batches = train_batches(lengths, 8, None, seed=0, epoch=0)
    sizes = sorted(len(batch) for batch in batches)
    assert sizes == [4] + [8] * 12


def test_over_long_example_goes_alone() -> None:
    lengths = [10] * 20 + [500] + [12] * 20
    batches = train_batches(lengths, 16, 128, seed=1, epoch=2)
    assert sorted(flatten(batches)) == list(range(len(lengths)))
    assert [20] in batches
    assert_within_budget(batches, lengths, 16, 128)
    # eval batches follow the same rule
    batches = eval_batches(lengths, 16, 128)
    assert batches[-1] == [20]
    assert_within_budget(batches, lengths, 16, 128)


def test_token_budget_uses_padded_width() -> None:
    # 9 tokens pad to 16: 16 x 4 = 64 fits, 16 x 5 = 80 does not
    lengths = [9] * 10
    batches = eval_batches(lengths, 100, 64)
    assert [len(batch) for batch in batches] == [4, 4, 2]


def test_train_batches_deterministic_per_seed_and_epoch() -> None:
    lengths = random_lengths(300, seed=5)
    first = train_batches(lengths, 16, 2048, seed=11, epoch=0)
    assert train_batches(lengths, 16, 2048, seed=11, epoch=0) == first
    assert train_batches(lengths, 16, 2048, seed=11, epoch=1) != first
    assert train_batches(lengths, 16, 2048, seed=12, epoch=0) != first
    epochs = [train_batches(lengths, 16, 2048, seed=11, epoch=e) for e in range(4)]
    assert len({tuple(map(tuple, b)) for b in epochs}) == 4


def test_train_batches_bucket_similar_lengths() -> None:
    # within a chunk, batches are cut from length-sorted order: little padding overall
    lengths = random_lengths(1000, seed=9, low=1, high=512)
    batches = train_batches(lengths, 32, None, seed=0, epoch=0)
    padded_tokens = sum(padded(max(lengths[i] for i in b)) * len(b) for b in batches)
    assert padded_tokens < 1.2 * sum(lengths)


def test_train_batches_empty() -> None:
    assert train_batches([], 8, None, seed=0, epoch=0) == []
    assert eval_batches([], 8) == []


def test_eval_batches_sorted_by_length() -> None:
    lengths = random_lengths(257, seed=4)
    batches = eval_batches(lengths, 16)
    order = flatten(batches)
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths)
    assert all(len(batch) == 16 for batch in batches[:-1])
    assert len(batches[-1]) == 257 - 16 * 16
    batches = eval_batches(lengths, 64, 1024)
    assert [lengths[i] for i in flatten(batches)] == sorted(lengths)
    assert_within_budget(batches, lengths, 64, 1024)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shard_same_count_and_disjoint(world: int) -> None:
    lengths = random_lengths(203, seed=world)
    batches = train_batches(lengths, 8, None, seed=0, epoch=0)
    shards = [shard(batches, rank, world) for rank in range(world)]
    counts = {len(s) for s in shards}
    assert len(counts) == 1
    assert counts.pop() == len(batches) // world
    seen: list[int] = []
    for part in shards:
        for batch in part:
            assert batch in batches
        seen.extend(flatten(part))
    assert len(seen) == len(set(seen))  # no example in two processes
    if world == 1:
        assert shards[0] == batches


def test_shard_fewer_batches_than_processes() -> None:
    batches = [[0], [1], [2]]
    assert [shard(batches, rank, 4) for rank in range(4)] == [[], [], [], []]
    assert [shard(batches, rank, 2) for rank in range(2)] == [[[0]], [[1]]]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    lengths=st.lists(st.integers(0, 300), max_size=200),
    batch_size=st.integers(1, 40),
    batch_tokens=st.one_of(st.none(), st.integers(8, 3000)),
    seed=st.integers(0, 100),
    epoch=st.integers(0, 5),
)
def test_train_batches_properties(
    lengths: list[int], batch_size: int, batch_tokens: int | None, seed: int, epoch: int
) -> None:
    batches = train_batches(lengths, batch_size, batch_tokens, seed, epoch)
    assert sorted(flatten(batches)) == list(range(len(lengths)))
    assert_within_budget(batches, lengths, batch_size, batch_tokens)
    assert train_batches(lengths, batch_size, batch_tokens, seed, epoch) == batches
