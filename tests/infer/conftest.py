"""Tiny finished runs shared by the tests of ONNX export and int8 inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paratrain.cli import main


def mixed_frame(rows: int, seed: int, classes: bool = False) -> pd.DataFrame:
    """Numeric columns, a text category and a boolean: every kind of encoded feature."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(rows, 4))
    color = rng.choice(["red", "green", "blue"], size=rows)
    flag = rng.random(rows) > 0.5
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + (color == "red") - 0.5 * flag + 0.05 * rng.normal(size=rows)
    frame = pd.DataFrame(x * 10 + 3, columns=["a", "b", "c", "d"])  # raw units far from 0 +- 1: scaling matters
    frame["color"], frame["flag"] = color, flag
    frame["y"] = np.array(["low", "mid", "high"])[np.digitize(y, [0.3, 1.0])] if classes else y * 100 + 50
    return frame


def _fit(root: Path, name: str, frame: pd.DataFrame, *flags: str) -> tuple[Path, Path]:
    data = root / f"{name}.csv"
    frame.to_csv(data, index=False)
    run = root / name
    assert main(["fit", "--data", str(data), "--target", "y", "--epochs", "3", "--quiet", "--out", str(run),
                 "--precision", "fp32", *flags]) == 0
    return run, data


@pytest.fixture(scope="package")
def regression_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished MLP regression run (300 rows, 240 of them training rows) and its data file."""
    return _fit(tmp_path_factory.mktemp("infer"), "regression", mixed_frame(300, 0), "--hidden", "32,32")


@pytest.fixture(scope="package")
def class_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 3-class MLP run with text labels."""
    return _fit(tmp_path_factory.mktemp("infer"), "classes", mixed_frame(300, 1, classes=True), "--hidden", "32,32")


@pytest.fixture(scope="package")
def formula_run(tmp_path_factory) -> tuple[Path, Path]:
    frame = mixed_frame(100, 2)[["a", "y"]]
    return _fit(tmp_path_factory.mktemp("infer"), "formula", frame, "--model", "formula", "--formula", "b1*a + b2")
