"""Validations inside an epoch (train.evals_per_epoch): recorded, and they do not change training."""

from __future__ import annotations

import json

import pytest

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.train.fit import fit
from tests.conftest import assert_states_close, model_state


def _fit(tmp_path, csv, name: str, **fields) -> list[dict]:
    values = {"path": str(csv), "target": "y", "hidden": [16], "epochs": 2, "batch_size": 32, "verbosity": 0,
              "checkpoint_every": 0, "out": str(tmp_path / name), **fields}
    fit(FitConfig.from_dict(values))
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strategy,workers", [("single", 1), ("ddp", 2), ("sparse:0.1", 2)])
def test_inner_validations_are_recorded_and_leave_training_unchanged(tmp_path, regression_csv, strategy, workers):
    plain = _fit(tmp_path, regression_csv, "plain", strategy=strategy, workers=workers)
    inner = _fit(tmp_path, regression_csv, "inner", strategy=strategy, workers=workers, evals_per_epoch=4)

    # Validating switches the model to eval mode and back; the sparse exchange in flight
    # shares the process group with the validation's all-reduce: neither may change a step.
    # (sparse overlaps its exchange with the next step, so its order of float additions is fixed too.)
    assert_states_close(model_state(tmp_path / "plain"), model_state(tmp_path / "inner"), atol=1e-6)
    assert [r["val_loss"] for r in inner] == pytest.approx([r["val_loss"] for r in plain], rel=1e-5)
    assert all("evals" not in record for record in plain)

    steps_per_epoch = inner[0]["evals"][-1]["step"] / inner[0]["evals"][-1]["epoch_fraction"]
    for epoch, record in enumerate(inner):
        evals = record["evals"]
        # Each at the step nearest to a quarter of the epoch.
        assert [e["epoch_fraction"] for e in evals] == pytest.approx([0.25, 0.5, 0.75], abs=0.5 / steps_per_epoch)
        assert [e["step"] for e in evals] == sorted(e["step"] for e in evals)
        assert all(epoch * steps_per_epoch < e["step"] < (epoch + 1) * steps_per_epoch for e in evals)
        assert all(e["val_loss"] > 0 and "val_r2" in e for e in evals)
        # Training seconds grow through the epoch and leave the validations out.
        times = [e["train_seconds"] for e in evals] + [record["train_seconds"]]
        assert times == sorted(times) and record["train_seconds"] <= record["seconds"]
        assert all(e["train_seconds"] <= e["seconds"] for e in evals)
    # Training improves the model: the first validation of the run is worse than the last.
    assert inner[0]["evals"][0]["val_loss"] > inner[-1]["val_loss"]


def test_more_validations_than_steps_collapse_onto_the_steps(tmp_path, regression_csv):
    records = _fit(tmp_path, regression_csv, "many", epochs=1, batch_size=64, evals_per_epoch=1000)
    steps = [e["step"] for e in records[0]["evals"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_evals_per_epoch_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match="evals_per_epoch"):
        FitConfig.from_dict({"target": "y", "evals_per_epoch": value})
