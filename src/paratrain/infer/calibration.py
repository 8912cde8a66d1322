"""Rows that static quantization measures activation ranges on: a sample of the training rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from paratrain.errors import ConfigError


def calibration_features(run_dir: str | os.PathLike, trained: Any, data: str | os.PathLike | None,
                         rows: int, seed: int = 0) -> np.ndarray:
    """Encoded features of up to ``rows`` rows, drawn without replacement.

    Without ``data``, the rows come from the run's own training table (``data.path`` in its
    config.yaml), and only from its training split: the same seeded split as ``fit``, so the
    validation rows stay unseen. With ``data``, any of its rows may be drawn.

    Raises:
        ConfigError: No table recorded or found; the message says to pass ``--data``.
        DataError: The table does not fit the run's encoding (a column absent, say).
    """
    from paratrain.data.split import train_val_split
    from paratrain.data.tables import read_table
    from paratrain.train import rundir

    config = rundir.read_config(Path(run_dir))
    path = data if data is not None else config.data.path
    if path is None:
        raise ConfigError(f"static quantization calibrates on training rows, but run '{run_dir}' records no data "
                          "path (it was trained from a DataFrame); pass --data FILE with rows like the training data")
    if not Path(path).is_file():
        where = "--data" if data is not None else f"data.path in {Path(run_dir) / rundir.CONFIG_FILE}"
        raise ConfigError(f"calibration table '{path}' ({where}) does not exist; "
                          "pass --data FILE with rows like the training data")
    frame = read_table(path)
    candidates = np.arange(len(frame))
    if data is None:
        candidates, _ = train_val_split(len(frame), config.data.val_fraction, config.train.seed)
    picked = np.sort(np.random.default_rng(seed).choice(candidates, size=min(rows, len(candidates)), replace=False))
    return trained.encoder.transform_features(frame.iloc[picked])
