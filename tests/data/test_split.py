"""Train/validation split and per-rank sharding of row indices."""

from __future__ import annotations

import numpy as np
import pytest

from paratrain.data import shard_indices, train_val_split
from paratrain.errors import ConfigError, DataError


# -- train_val_split ----------------------------------------------------------------------


@pytest.mark.parametrize(("n_rows", "fraction", "n_val"),
                         [(100, 0.2, 20), (10, 0.25, 2), (7, 0.5, 4), (50, 0.0, 0)])
def test_split_sizes_and_partition(n_rows, fraction, n_val):
    train, val = train_val_split(n_rows, fraction, seed=0)
    assert len(val) == n_val and len(train) == n_rows - n_val
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n_rows))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats


def test_split_is_deterministic_per_seed():
    first = train_val_split(1000, 0.1, seed=7)
    again = train_val_split(1000, 0.1, seed=7)
    other = train_val_split(1000, 0.1, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


def test_split_shuffles_rather_than_taking_the_tail():
    _, val = train_val_split(1000, 0.1, seed=0)
    assert not np.array_equal(val, np.arange(900, 1000))
    assert val.min() < 500 < val.max()


def test_split_ignores_global_random_state():
    np.random.seed(1)
    first = train_val_split(100, 0.3, seed=3)
    np.random.seed(2)
    second = train_val_split(100, 0.3, seed=3)
    assert np.array_equal(first[1], second[1])


def test_split_keeps_a_training_row_and_a_validation_row():
    train, val = train_val_split(1, 0.5, seed=0)
    assert train.tolist() == [0] and val.tolist() == []
    train, val = train_val_split(2, 0.01, seed=0)  # rounds to 0 but a fraction was asked for
    assert len(train) == 1 and len(val) == 1
    train, val = train_val_split(3, 0.99, seed=0)
    assert len(train) == 1 and len(val) == 2


def test_split_with_zero_fraction_keeps_every_row_for_training():
    train, val = train_val_split(5, 0.0, seed=0)
    assert train.tolist() == [0, 1, 2, 3, 4] and val.size == 0


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, "0.2", None])
def test_split_refuses_bad_fraction(fraction):
    with pytest.raises(ConfigError) as caught:
        train_val_split(10, fraction, seed=0)
    assert f"val_fraction={fraction!r}" in str(caught.value) and "[0, 1)" in str(caught.value)


@pytest.mark.parametrize("n_rows", [0, -3])
def test_split_refuses_no_rows(n_rows):
    with pytest.raises(DataError) as caught:
        train_val_split(n_rows, 0.2, seed=0)
    assert f"{n_rows} rows" in str(caught.value)


# -- shard_indices ------------------------------------------------------------------------


@pytest.mark.parametrize(("n_rows", "world_size"), [(10, 3), (12, 4), (5, 5), (7, 1), (100, 8)])
def test_every_rank_gets_the_same_number_of_distinct_rows(n_rows, world_size):
    indices = np.arange(100, 100 + n_rows)
    shards = [shard_indices(indices, rank, world_size) for rank in range(world_size)]
    assert {len(shard) for shard in shards} == {n_rows // world_size}
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined)  # no row on two ranks
    assert set(joined) <= set(indices)
    assert len(joined) == n_rows - n_rows % world_size  # only the remainder is dropped


def test_shards_interleave():
    indices = np.array([5, 9, 2, 7, 1, 3, 8])
    assert shard_indices(indices, 0, 3).tolist() == [5, 7]
    assert shard_indices(indices, 1, 3).tolist() == [9, 1]
    assert shard_indices(indices, 2, 3).tolist() == [2, 3]


def test_single_worker_gets_everything():
    indices = np.array([4, 0, 2])
    assert shard_indices(indices, 0, 1).tolist() == [4, 0, 2]


def test_shard_is_a_copy():
    indices = np.arange(6)
    shard = shard_indices(indices, 0, 2)
    shard[:] = -1
    assert indices.tolist() == [0, 1, 2, 3, 4, 5]


def test_fewer_rows_than_workers_is_refused():
    with pytest.raises(DataError) as caught:
        shard_indices(np.arange(3), 0, 4)
    message = str(caught.value)
    assert "3 rows" in message and "workers=4" in message
    assert "need at least one row per worker" in message


@pytest.mark.parametrize(("rank", "world_size", "needle"),
                         [(2, 2, "rank=2"), (-1, 2, "rank=-1"), (0, 0, "workers=0")])
def test_bad_rank_or_world_size(rank, world_size, needle):
    with pytest.raises(ConfigError) as caught:
        shard_indices(np.arange(10), rank, world_size)
    assert needle in str(caught.value)


def test_split_then_shard_covers_training_rows_evenly():
    train, _ = train_val_split(103, 0.2, seed=4)
    shards = [shard_indices(train, rank, 4) for rank in range(4)]
    assert all(len(shard) == len(train) // 4 for shard in shards)
    assert not set(np.concatenate(shards)) & set(train_val_split(103, 0.2, seed=4)[1])
