"""Data in: read tables, encode them into arrays, split and shard the rows.

Example:
    >>> import pandas as pd
    >>> from paratrain.data import EncodingOptions, TableEncoder, train_val_split
    >>> df = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 3.0, 5.0, 7.0]})
    >>> train, val = train_val_split(len(df), 0.25, seed=0)
    >>> encoder = TableEncoder(EncodingOptions(target="y")).fit(df.iloc[train])
    >>> encoder.transform_features(df.iloc[val]).shape
    (1, 1)
"""

from paratrain.data.encoding import EncodingOptions, TableEncoder
from paratrain.data.split import shard_indices, train_val_split
from paratrain.data.tables import SUPPORTED_EXTENSIONS, read_table

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "EncodingOptions",
    "TableEncoder",
    "read_table",
    "shard_indices",
    "train_val_split",
]
