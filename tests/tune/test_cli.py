"""`paratrain tune` end to end on a tiny MLP study, continuing it, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import regression_frame
from tests.tune.conftest import REPO, run_tune_cli

SMALL_SPACE = """\
n_layers: {type: int, low: 1, high: 3}
units: {type: int, low: 8, high: 32, log: true}
dropout: {type: float, low: 0.0, high: 0.3, when: "n_layers > 2"}
lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
"""


@pytest.mark.timeout(240)
def test_tune_cli_end_to_end_then_continue(tmp_path, tiny_csv):
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_SPACE)
    out = tmp_path / "search"
    args = ["tune", "--data", str(tiny_csv), "--target", "y", "--model", "mlp", "--space", str(space),
            "--sampler", "tpe", "--pruner", "asha", "--parallel", "2", "--epochs", "3", "--batch-size", "64",
            "--out", str(out)]
    done = run_tune_cli(*args, "--trials", "4")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_complete"] + summary["n_pruned"] == 4 and summary["n_failed"] == 0
    assert set(summary["best_params"]) <= {"n_layers", "units", "dropout", "lr"}
    for key in ("best_value", "best_params", "n_complete", "n_pruned", "n_failed", "wall_seconds"):
        assert key in summary
    # Start: the space and the plan; then one line per finished trial, with progress and ETA.
    assert "search space:" in done.stderr and "dropout" in done.stderr and "(when n_layers > 2)" in done.stderr
    assert "plan: 2 trial(s) at once x 1 worker(s) each, 1 thread(s) per worker" in done.stderr
    trial_lines = [line for line in done.stderr.splitlines() if "/4] trial" in line]
    assert len(trial_lines) == 4 and all("ETA" in line for line in trial_lines)
    assert json.loads((out / "best_params.json").read_text()) == summary["best_params"]
    assert json.loads((out / "study.json").read_text())["best_trial"] == summary["best_trial"]
    assert len(pd.read_csv(out / "trials.csv")) == 4
    # Trials are never resumed: no per-epoch checkpoint, just the model.
    trial_dirs = sorted((out / "trials").iterdir())
    assert trial_dirs and all((d / "model.pt").is_file() and not (d / "checkpoint.pt").exists() for d in trial_dirs)
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"optimization_history.png", "parallel_coordinate.png", "intermediate_values.png"} <= plots
    assert "param_importances.png" in plots or "skipped param_importances.png" in done.stderr
    tune_trial = json.loads((out / "best_model" / "tune_trial.json").read_text())
    assert tune_trial["trial"] == summary["best_trial"]

    # The best model is a run directory `paratrain predict` uses.
    new = tmp_path / "new.csv"
    regression_frame(rows=20, seed=3).drop(columns=["y"]).to_csv(new, index=False)
    predicted = subprocess.run([sys.executable, "-m", "paratrain", "predict", "--run", str(out / "best_model"),
                                "--data", str(new), "--out", str(tmp_path / "pred.csv")], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0, predicted.stderr
    assert len(pd.read_csv(tmp_path / "pred.csv")) == 20

    # The same command with a larger budget continues: earlier trials kept, not run again.
    before = pd.read_csv(out / "trials.csv")
    again = run_tune_cli(*args, "--trials", "6")
    assert again.returncode == 0, again.stderr
    assert "continuing the study: " in again.stderr
    after = pd.read_csv(out / "trials.csv")
    assert list(after["number"]) == list(range(len(after)))
    pd.testing.assert_frame_equal(after.iloc[:4][["number", "value", "state"]], before[["number", "value", "state"]])
    assert json.loads(again.stdout)["n_complete"] + json.loads(again.stdout)["n_pruned"] == 6


@pytest.mark.timeout(120)
@pytest.mark.parametrize("extra,message", [
    (["--sampler", "bayes"], "sampler='bayes' is not one of: grid, random, tpe, gp, cmaes, nsga2, qmc"),
    (["--pruner", "early"], "pruner='early' is not one of: asha, hyperband, median, none"),
    (["--trials", "0"], "trials=0 must be an integer >= 1"),
    (["--lr", "-1"], "lr=-1.0 must be > 0"),
    (["--resume", "x"], "tune has no --resume"),
])
def test_bad_input_is_one_line(tmp_path, tiny_csv, extra, message):
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y", "--out", str(tmp_path / "s"), *extra)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"paratrain: error: {done.stderr.split('error: ', 1)[1].strip()}"]
    assert message in done.stderr


@pytest.mark.timeout(120)
def test_bad_space_yaml_names_the_field(tmp_path, tiny_csv):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.1, high: 0.01, log: true}\n")
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y", "--space", str(space),
                        "--out", str(tmp_path / "s"))
    assert done.returncode == 1
    assert f"space file '{space}': space parameter 'lr': `low <= high` must hold" in done.stderr
    space.write_text("hidden_units: {type: int, low: 8, high: 64}\n")
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y", "--space", str(space),
                        "--out", str(tmp_path / "s"))
    assert done.returncode == 1 and "space parameter 'hidden_units' is not a parameter of model 'mlp'" in done.stderr


@pytest.mark.timeout(60)
def test_missing_data_and_out_are_errors(tmp_path, tiny_csv):
    done = run_tune_cli("tune", "--data", str(tmp_path / "nope.csv"), "--target", "y", "--out", str(tmp_path / "s"))
    assert done.returncode == 1 and "does not exist" in done.stderr
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y")
    assert done.returncode == 1 and "--out DIR is required" in done.stderr
