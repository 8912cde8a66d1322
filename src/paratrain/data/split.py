"""Which rows train, which validate, and which training rows each rank takes.

Both functions work on row indices, not data, so every rank can compute the same
split from the same seed without communicating.
"""

from __future__ import annotations

import numbers

import numpy as np

from paratrain.errors import ConfigError, DataError


def train_val_split(n_rows: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle row indices with ``seed`` and split off a validation set.

    The validation set has ``round(n_rows * val_fraction)`` rows, at least one when
    ``val_fraction > 0`` and at most ``n_rows - 1``, so there is always a training
    row. Both index arrays are returned sorted, so rows keep their file order.

    Args:
        n_rows: Number of rows in the table (at least 1).
        val_fraction: Share of rows for validation, in ``[0, 1)``; 0 gives an empty
            validation set.
        seed: Seed of the shuffle; the same seed always gives the same split.

    Returns:
        ``(train_indices, val_indices)``: disjoint int64 arrays covering ``range(n_rows)``.

    Raises:
        ConfigError: ``val_fraction`` is outside ``[0, 1)``.
        DataError: ``n_rows`` is below 1.

    Example:
        >>> train, val = train_val_split(10, 0.2, seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    if not isinstance(val_fraction, numbers.Real) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction={val_fraction!r} must be in [0, 1): the share of rows held out "
            "for validation"
        )
    if isinstance(n_rows, bool) or not isinstance(n_rows, numbers.Integral) or n_rows < 1:
        raise DataError(f"the table has {n_rows} rows; need at least one row to train on")
    n_rows = int(n_rows)
    n_val = int(round(n_rows * val_fraction))
    if val_fraction > 0:
        # A positive fraction asks for validation: give it at least one row, but
        # never take the last training row.
        n_val = max(n_val, 1)
    n_val = min(n_val, n_rows - 1)
    # A private Generator, not np.random.seed: the split must not depend on (or
    # disturb) any other random state in the process.
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def shard_indices(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The interleaved share of ``indices`` that worker ``rank`` trains on.

    Every rank gets exactly ``len(indices) // world_size`` rows: with data
    parallelism each step ends in a collective that all ranks must join, so a
    rank with one more batch would wait forever. The last ``len(indices) %
    world_size`` rows of the interleaving are therefore dropped.

    Args:
        indices: Row indices to share out (typically the training indices).
        rank: This worker's rank, in ``[0, world_size)``.
        world_size: Number of workers (at least 1).

    Returns:
        ``indices[rank::world_size]`` cut to ``len(indices) // world_size`` entries.

    Raises:
        ConfigError: ``world_size`` below 1 or ``rank`` outside ``[0, world_size)``.
        DataError: Fewer rows than workers.

    Example:
        >>> shard_indices(np.arange(7), rank=1, world_size=3)
        array([1, 4])
    """
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral) \
            or world_size < 1:
        raise ConfigError(f"workers={world_size!r} must be an integer >= 1")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) \
            or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank!r} must be an integer in [0, {world_size - 1}]")
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise DataError(f"row indices must be 1-D, got shape {indices.shape}")
    if len(indices) < world_size:
        raise DataError(
            f"the training set has {len(indices)} rows but workers={world_size}: need at "
            "least one row per worker; use fewer workers or more data"
        )
    per_rank = len(indices) // world_size
    # A copy, so a caller that shuffles its shard in place leaves the split intact.
    return indices[rank::world_size][:per_rank].copy()
