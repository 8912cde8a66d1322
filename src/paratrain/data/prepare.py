"""From a table to this rank's tensors: split, encode, shard.

Every rank splits the rows with the same seed and fits the encoder on the
same rows (cheap column statistics), so all ranks agree on the encoding
without talking. Each rank encodes the table once and keeps only its own
shard of the training rows and its slice of the validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from paratrain.config import FitConfig
from paratrain.data.encoding import EncodingOptions, TableEncoder
from paratrain.data.split import shard_indices, train_val_split
from paratrain.data.tables import read_table
from paratrain.errors import DataError


@dataclass
class PreparedData:
    """This rank's share of the encoded data, plus what the model and metrics need."""

    encoder: TableEncoder
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_train_total: int
    n_val_total: int

    @property
    def task(self) -> str:
        return self.encoder.task

    @property
    def feature_names(self) -> list[str]:
        return list(self.encoder.feature_names_out)

    @property
    def n_outputs(self) -> int:
        return len(self.encoder.classes) if self.task == "classification" else 1

    @property
    def target_scale(self) -> float:
        """Target units per standardized unit (1 for classification)."""
        if self.task == "classification":
            return 1.0
        ends = self.encoder.inverse_target(np.array([0.0, 1.0], dtype=np.float32))
        return float(ends[1] - ends[0])


def encoding_options(config: FitConfig) -> EncodingOptions:
    """Formula models keep raw units so that their parameters mean what the formula says."""
    scale = config.model.model == "mlp"
    return EncodingOptions(
        target=config.data.target,
        task=config.data.task,
        drop=tuple(config.data.drop),
        impute=config.data.impute,
        max_categories=config.data.max_categories,
        standardize_inputs=scale,
        standardize_target=scale,
        unseen_category=config.data.unseen_category,
    )


def load_frame(source: Any) -> pd.DataFrame:
    """A path is read from disk; a DataFrame (from the Python API) is used as is."""
    if isinstance(source, pd.DataFrame):
        return source
    if source is None:
        raise DataError("no training data given: pass --data FILE")
    return read_table(source)


@dataclass
class EncodedTable:
    """Every row of a table encoded once, with the split; ``x[train_idx]`` are the training rows."""

    encoder: TableEncoder
    x: np.ndarray
    """Features, float32, one row per row of the table."""
    y: np.ndarray
    """Encoded target, one per row."""
    train_idx: np.ndarray
    val_idx: np.ndarray


def fit_encoder(config: FitConfig, frame: pd.DataFrame) -> tuple[TableEncoder, np.ndarray, np.ndarray]:
    """Split rows and fit the encoder; returns (encoder, train_idx, val_idx)."""
    table = encode_table(config, frame)
    return table.encoder, table.train_idx, table.val_idx


def encode_table(config: FitConfig, frame: pd.DataFrame) -> EncodedTable:
    """Split rows, fit the encoder and encode every row once."""
    if not config.data.target:
        raise DataError("no target column given: pass --target COLUMN")
    train_idx, val_idx = train_val_split(len(frame), config.data.val_fraction, config.train.seed)
    # The encoder learns from every row of the file, validation rows included:
    # a category that happens to fall only in validation rows must still get a
    # code, and errors (a missing value, say) then name the row of the file.
    # Means and scales thus include validation rows: a shift and scale, not labels to learn from.
    encoder = TableEncoder(encoding_options(config)).fit(frame)
    if config.model.model == "formula":
        _check_formula_uses_columns(config, encoder)
    # Every row is encoded here, in file order, so that a bad value anywhere (an
    # infinite value, say) fails naming its row of the file, and callers take
    # their rows from these arrays instead of encoding again.
    return EncodedTable(encoder, encoder.transform_features(frame), encoder.transform_target(frame),
                        train_idx, val_idx)


def _check_formula_uses_columns(config: FitConfig, encoder: TableEncoder) -> None:
    from paratrain.models.families import family_formula
    from paratrain.models.formula import parse_formula

    text = config.model.formula or family_formula(config.model.family, config.model.degree)[0]
    variables, _ = parse_formula(text).split_names(encoder.feature_names_out)
    if not variables and config.model.family:
        raise DataError(
            f"the {config.model.family} family is a function of a column named 'x', and the data has none "
            f"(columns: {', '.join(encoder.feature_names_out)}); rename your input column to x or give --formula"
        )
    if not variables:
        raise DataError(
            f"formula {text!r} uses none of the data columns ({', '.join(encoder.feature_names_out)}); "
            "name a column in the formula, e.g. x"
        )


def prepare_data(config: FitConfig, source: Any, rank: int, world_size: int, device: torch.device) -> PreparedData:
    """Read, split, encode and shard the data for one rank."""
    table = encode_table(config, load_frame(source))
    mine = shard_indices(table.train_idx, rank, world_size)
    # Validation rows need not be equal per rank: metrics are reduced as sums.
    my_val = table.val_idx[rank::world_size]

    def tensors(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Fancy indexing copies: the tensors own their rows, and the full table can go.
        x = torch.from_numpy(np.ascontiguousarray(table.x[rows], dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(table.y[rows]))
        return x.to(device), y.to(device)

    x_train, y_train = tensors(mine)
    x_val, y_val = tensors(my_val)
    return PreparedData(table.encoder, x_train, y_train, x_val, y_val, len(table.train_idx), len(table.val_idx))
