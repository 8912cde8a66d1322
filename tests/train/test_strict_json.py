"""Every JSON file and printout is strict JSON: a number that is not finite is written as null."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from paratrain.cli import main
from paratrain.train.checkpoint import save_json_atomic
from paratrain.train.jsonsafe import dumps_strict, json_safe
from paratrain.train.metrics import R2_UNDEFINED


def _strict_loads(text: str):
    """json.loads that fails on NaN, Infinity and -Infinity instead of accepting them."""
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_safe_turns_non_finite_floats_into_null_recursively():
    data = {"a": math.nan, "b": [1.5, math.inf, {"c": -math.inf}], "d": (np.float64("nan"), 2), "e": "NaN"}
    assert json_safe(data) == {"a": None, "b": [1.5, None, {"c": None}], "d": [None, 2], "e": "NaN"}
    assert _strict_loads(dumps_strict(data))["b"] == [1.5, None, {"c": None}]


def test_save_json_atomic_writes_strict_json(tmp_path):
    save_json_atomic({"loss": math.nan, "rate": math.inf}, tmp_path / "out.json")
    assert _strict_loads((tmp_path / "out.json").read_text()) == {"loss": None, "rate": None}


@pytest.mark.timeout(120)
def test_a_constant_target_gives_null_r2_with_the_reason_everywhere(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "constant.csv"
    pd.DataFrame({"x": rng.uniform(size=100), "y": np.full(100, 3.0)}).to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["fit", "--data", str(path), "--target", "y", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    printed = _strict_loads(capsys.readouterr().out)
    summary = _strict_loads((out / "summary.json").read_text())
    records = [_strict_loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for values in (printed, summary, *records):
        assert values["val_r2"] is None
        assert values["val_r2_note"] == R2_UNDEFINED
        assert math.isfinite(values["val_loss"])
