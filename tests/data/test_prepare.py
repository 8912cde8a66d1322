"""prepare_data: each rank's tensors are its rows of the table, encoded as the encoder encodes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from paratrain.config import FitConfig
from paratrain.data.prepare import encode_table, prepare_data
from paratrain.data.split import shard_indices
from paratrain.errors import DataError


def _table(rows: int = 97) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "x": rng.normal(size=rows),
        "color": pd.Series(rng.choice(["red", "blue", " green "], size=rows), dtype=object),
        "flag": rng.random(rows) > 0.5,
        "y": rng.normal(size=rows),
    })


def _config() -> FitConfig:
    return FitConfig.from_dict({"path": "unused.csv", "target": "y", "val_fraction": 0.25, "seed": 3})


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_each_rank_gets_its_rows_encoded_as_the_encoder_encodes_them(world_size):
    frame, config = _table(), _config()
    table = encode_table(config, frame)
    seen_train, seen_val = [], []
    for rank in range(world_size):
        data = prepare_data(config, frame, rank, world_size, torch.device("cpu"))
        mine = shard_indices(table.train_idx, rank, world_size)
        val = table.val_idx[rank::world_size]
        # The rows sliced from the table equal encoding just those rows.
        np.testing.assert_array_equal(data.x_train.numpy(), data.encoder.transform_features(frame.iloc[mine]))
        np.testing.assert_array_equal(data.y_train.numpy(), data.encoder.transform_target(frame.iloc[mine]))
        np.testing.assert_array_equal(data.x_val.numpy(), data.encoder.transform_features(frame.iloc[val]))
        assert data.x_train.dtype == torch.float32 and data.x_train.is_contiguous()
        assert (data.n_train_total, data.n_val_total) == (len(table.train_idx), len(table.val_idx))
        seen_train.extend(mine.tolist())
        seen_val.extend(val.tolist())
    assert sorted(seen_val) == sorted(table.val_idx.tolist())
    assert set(seen_train) <= set(table.train_idx.tolist())


def test_a_bad_value_is_named_by_its_row_of_the_file():
    frame = _table()
    frame.loc[60, "x"] = np.inf
    with pytest.raises(DataError, match=r"column 'x' is infinite at row 61"):
        prepare_data(_config(), frame, 1, 2, torch.device("cpu"))
