"""A numeric target of a few whole numbers is trained as regression, with a hint."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from paratrain.cli import main
from paratrain.data.encoding import EncodingOptions, TableEncoder


def _frame(target: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(len(target), dtype=float), "y": target})


@pytest.mark.parametrize("target", [np.tile([0, 1, 2], 20), np.tile([1.0, 5.0], 30), np.arange(60) % 20])
def test_few_whole_numbers_give_a_hint(target):
    encoder = TableEncoder(EncodingOptions(target="y")).fit(_frame(target))
    assert encoder.task == "regression"
    assert len(encoder.hints) == 1 and "--task classification" in encoder.hints[0]


@pytest.mark.parametrize("target,task", [
    (np.arange(60) % 21, "auto"),  # 21 distinct values: a count, not labels
    (np.linspace(0, 1, 60), "auto"),  # fractions
    (np.tile([0, 1, 2], 20), "regression"),  # the user chose
    (np.tile([0, 1, 2], 20), "classification"),
    (np.full(60, 4), "auto"),  # one value: nothing to classify
])
def test_no_hint_otherwise(target, task):
    assert TableEncoder(EncodingOptions(target="y", task=task)).fit(_frame(target)).hints == []


def test_the_cli_warns_once_in_one_line(tmp_path, capsys, caplog):
    path = tmp_path / "labels.csv"
    _frame(np.tile([0, 1, 2], 40)).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="paratrain"):
        assert main(["fit", "--data", str(path), "--target", "y", "--epochs", "1", "--quiet",
                     "--out", str(tmp_path / "run")]) == 0
    hints = [record.getMessage() for record in caplog.records if "--task classification" in record.getMessage()]
    assert hints == ["target column 'y' holds only 3 distinct whole numbers (0, 1, 2) and is trained as "
                     "regression; if they are class labels, use --task classification (--task regression "
                     "silences this)"]
