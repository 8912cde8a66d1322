"""The command line end to end: fit from flags and YAML, the run directory, predict."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.conftest import regression_frame, run_cli


@pytest.mark.timeout(120)
def test_fit_writes_the_run_directory_and_predict_uses_it(tmp_path, regression_csv):
    out = tmp_path / "run"
    done = run_cli("fit", "--data", str(regression_csv), "--target", "y", "--hidden", "32,32",
                   "--epochs", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for key in ("strategy", "workers", "val_loss", "val_r2", "epochs", "wall_seconds", "samples_per_s"):
        assert key in summary
    assert summary["epochs"] == 3 and summary["strategy"] == "single"
    assert {"model.pt", "checkpoint.pt", "metrics.jsonl", "config.yaml", "summary.json"} <= {p.name for p in out.iterdir()}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_r2", "samples_per_s", "seconds"):
        assert all(key in r for r in records)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["hidden"] == [32, 32]
    # Non-interactive output: one line per epoch on stderr.
    assert done.stderr.count("epoch ") >= 3

    new = regression_frame(rows=50, seed=5).drop(columns=["y"])
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    pred_path = tmp_path / "pred.csv"
    done = run_cli("predict", "--run", str(out), "--data", str(new_path), "--out", str(pred_path))
    assert done.returncode == 0, done.stderr
    predictions = pd.read_csv(pred_path)
    assert list(predictions.columns) == ["prediction"] and len(predictions) == 50
    assert predictions["prediction"].notna().all()


@pytest.mark.timeout(120)
def test_yaml_config_with_flags_overriding_it(tmp_path, regression_csv):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"path": str(regression_csv), "target": "y"},
        "model": {"hidden": [16]},
        "epochs": 5,  # flat keys work too
        "lr": 0.01,
    }))
    out = tmp_path / "run"
    done = run_cli("fit", "--config", str(config), "--epochs", "2", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2  # the flag wins
    assert resolved["optim"]["lr"] == 0.01  # the file's value stays
    assert resolved["model"]["hidden"] == [16]
    assert "epoch 1/" not in done.stderr  # --quiet


@pytest.mark.timeout(120)
def test_classification_with_text_columns_and_unseen_categories(tmp_path):
    frame = regression_frame(rows=400)
    frame["color"] = ["red", "green", "blue", "red"] * 100
    frame["label"] = ["high" if v > frame["y"].median() else "low" for v in frame["y"]]
    frame = frame.drop(columns=["y"])
    path = tmp_path / "cls.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "run"
    done = run_cli("fit", "--data", str(path), "--target", "label", "--epochs", "15", "--lr", "0.01",
                   "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["task"] == "classification" and summary["val_accuracy"] > 0.75
    new = frame.drop(columns=["label"]).head(3).copy()
    new["color"] = ["red", "purple", "blue"]
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    done = run_cli("predict", "--run", str(out), "--data", str(new_path), "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 1
    assert "purple" in done.stderr and "color" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_formula_model_from_the_cli(tmp_path):
    import numpy as np

    x = np.linspace(0.1, 5, 300)
    frame = pd.DataFrame({"x": x, "y": 3.0 * (1 - np.exp(-0.7 * x))})
    path = tmp_path / "curve.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "run"
    done = run_cli("fit", "--data", str(path), "--target", "y", "--model", "formula",
                   "--formula", "b1*(1-exp(-b2*x))", "--init", "b1=1,b2=0.1", "--lr", "0.05",
                   "--epochs", "60", "--batch-size", "32", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["val_r2"] > 0.999


def test_every_command_has_help():
    for command in ([], ["fit"], ["predict"], ["strategies"], ["demo"]):
        done = run_cli(*command, "--help", timeout=60)
        assert done.returncode == 0 and "usage" in done.stdout
    assert "--accumulate" in run_cli("fit", "--help").stdout
