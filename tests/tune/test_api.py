"""The Python API: scikit-learn models, DataFrames, data-parallel trials."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from paratrain.tune import SklearnRun, tune
from tests.conftest import regression_frame


@pytest.mark.timeout(180)
def test_sklearn_model_with_its_default_space_and_a_dataframe(tmp_path):
    frame = regression_frame(rows=200)
    log = io.StringIO()
    result = tune(data=frame, target="y", model="random_forest", sampler="random", trials=3, parallel=1,
                  out=tmp_path / "rf", fixed={"seed": 1}, stream=log)
    text = log.getvalue()
    assert "search space (default for random_forest):" in text and "n_estimators" in text
    assert "pruner 'asha' is off: scikit-learn models fit in one call" in text
    assert result.summary["n_complete"] == 3 and result.best_value is not None
    assert "skipped intermediate_values.png" in text  # no epochs, nothing per epoch to plot
    study = result.load_study()
    assert all("val_r2" in t.user_attrs for t in study.trials)
    run = SklearnRun.load(result.best_model_dir)
    predicted = run.predict(frame.drop(columns=["y"]))
    assert predicted.shape == (200,) and np.corrcoef(predicted, frame["y"])[0, 1] > 0.8
    # `paratrain predict` reads the scikit-learn best model too.
    from paratrain.cli import main

    features = tmp_path / "features.csv"
    frame.drop(columns=["y"]).to_csv(features, index=False)
    assert main(["predict", "--run", str(result.best_model_dir), "--data", str(features),
                 "--out", str(tmp_path / "pred.csv")]) == 0
    assert np.allclose(pd.read_csv(tmp_path / "pred.csv")["prediction"], predicted, rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "rf" / "best_params.json").read_text()) == result.best_params
    # Called as paratrain.tune(...) too: the package forwards to the function.
    import paratrain.tune

    assert callable(paratrain.tune)


@pytest.mark.timeout(240)
def test_data_parallel_trials_are_pruned_through_rank_0(tmp_path, tiny_csv):
    """workers_per_trial=2: each trial is a ddp run; the pruning callback reopens the storage in rank 0."""
    space = {"lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}
    result = tune(data=tiny_csv, target="y", model="mlp", space=space, sampler="random", pruner="median",
                  trials=2, parallel=1, workers_per_trial=2, out=tmp_path / "ddp", retrain=False,
                  fixed={"epochs": 3, "hidden": [16], "batch_size": 32}, pruner_options={"n_startup_trials": 1},
                  verbosity=0)
    study = result.load_study()
    assert result.summary["n_complete"] + result.summary["n_pruned"] == 2
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == list(range(1, len(trial.intermediate_values) + 1))
        if trial.state.name == "COMPLETE":
            assert len(trial.intermediate_values) == 3
    config = (tmp_path / "ddp" / "trials" / "trial-00000" / "config.yaml").read_text()
    assert "strategy: ddp" in config and "workers: 2" in config
    assert result.best_model_dir is None


@pytest.mark.parametrize("fixed,expected", [
    ({}, 0),
    ({"checkpoint_every": 2}, 2),
    ({"train": {"checkpoint_every": 3}}, 3),
])
def test_trials_skip_checkpoints_unless_asked(tiny_csv, fixed, expected):
    from paratrain.tune.api import _fixed_config
    from paratrain.tune.models import get_model

    resolved = _fixed_config(fixed, str(tiny_csv), "y", get_model("mlp"), workers_per_trial=1)
    assert resolved["train"]["checkpoint_every"] == expected


@pytest.mark.timeout(180)
def test_fewer_trials_than_parallel_slots_get_every_core(tmp_path, tiny_csv):
    """One trial with --parallel 2: one slot with all the cores, not two slots of which one idles."""
    from paratrain.launch.resources import usable_cores

    cores = usable_cores()
    log = io.StringIO()
    result = tune(data=tiny_csv, target="y", model="mlp", sampler="random", trials=1, parallel=2,
                  out=tmp_path / "one", retrain=False, fixed={"epochs": 1, "hidden": [8], "batch_size": 32},
                  stream=log)
    text = log.getvalue()
    assert result.summary["n_complete"] == 1
    assert f"plan: 1 trial(s) at once x 1 worker(s) each, {cores} thread(s) per worker" in text, text
    assert "--parallel 2 is more than the 1 trial(s) to run" in text
