"""fit --tracking: what MLflow and TensorBoard hold after a run is read back with their own readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.train.fit import fit
from paratrain.train.tracking import EXPERIMENT, check_tracking, mlflow_uri

EPOCHS = 3


def _config(data: Path, out: Path, **fields) -> FitConfig:
    return FitConfig.from_dict({"path": str(data), "target": "y", "hidden": [16], "epochs": EPOCHS, "seed": 0,
                                "verbosity": 0, "out": str(out), **fields})


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("strategy", "workers"), [("single", 1), ("ddp", 2)])
def test_mlflow_holds_params_epoch_metrics_and_the_run_directory(regression_csv, tmp_path, strategy, workers):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    result = fit(_config(regression_csv, tmp_path / "run", strategy=strategy, workers=workers, tracking="mlflow"))
    client = MlflowClient(tracking_uri=mlflow_uri(None, result.run_dir))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["parallel.strategy"] == strategy and params["model.hidden"] == "[16]"
    assert params["optim.lr"] == "0.001" and params["output.tracking"] == "mlflow"
    # Every epoch's val_loss at step = epoch, equal to metrics.jsonl's.
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in _records(result.run_dir)])
    for key in ("train_loss", "samples_per_s", "lr"):
        assert len(client.get_metric_history(run.info.run_id, key)) == EPOCHS
    assert run.data.metrics["final_val_loss"] == pytest.approx(result.summary["val_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run_dir")}
    assert {"run_dir/summary.json", "run_dir/metrics.jsonl", "run_dir/config.yaml", "run_dir/model.pt"} <= artifacts
    assert "run_dir/mlruns" not in artifacts  # the store inside the run directory is not copied into itself


@pytest.mark.timeout(120)
def test_mlflow_at_a_given_store_path(regression_csv, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    store = tmp_path / "store"
    fit(_config(regression_csv, tmp_path / "a", tracking="mlflow", tracking_uri=str(store), epochs=1))
    fit(_config(regression_csv, tmp_path / "b", tracking="mlflow", tracking_uri=store.as_uri(), epochs=1))
    client = MlflowClient(tracking_uri=store.as_uri())
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a", "b"]
    assert not (tmp_path / "a" / "mlruns").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("strategy", "workers"), [("single", 1), ("ddp", 2)])
def test_tensorboard_event_files_hold_epoch_scalars_and_the_config(regression_csv, tmp_path, strategy, workers):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    result = fit(_config(regression_csv, tmp_path / "run", strategy=strategy, workers=workers,
                         tracking="tensorboard"))
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={TENSORS: 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train_loss", "val_loss", "samples_per_s", "final/val_loss"} <= set(scalars)
    val = events.Scalars("val_loss")
    assert [e.step for e in val] == list(range(1, EPOCHS + 1))
    assert [e.value for e in val] == pytest.approx([r["val_loss"] for r in _records(result.run_dir)], rel=1e-6)
    (config_text,) = events.Tensors("config/text_summary")
    assert f"| parallel.strategy | {strategy} |" in config_text.tensor_proto.string_val[0].decode()


def test_an_unknown_tracker_and_a_uri_without_tracker_are_named():
    with pytest.raises(ConfigError, match=r"tracking='wandb' is not one of: mlflow, tensorboard"):
        FitConfig.from_dict({"tracking": "wandb"})
    with pytest.raises(ConfigError, match=r"tracking_uri='/tmp/x' needs a tracker; give tracking='mlflow'"):
        FitConfig.from_dict({"tracking_uri": "/tmp/x"})


def test_a_missing_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracking='mlflow' needs the package mlflow-skinny, which is not installed; "
                                          r"install the optional extra: pip install 'paratrain\[tracking\]'"):
        check_tracking(FitConfig.from_dict({"tracking": "mlflow"}))


@pytest.mark.timeout(120)
def test_cli_without_the_package_fails_in_one_line_and_makes_no_run_directory(regression_csv, tmp_path):
    """A real `paratrain fit --tracking tensorboard` in an interpreter where tensorboard cannot be imported."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    # A sitecustomize that hides the package, as if it were not installed.
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util\n_real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'tensorboard' else _real(name, *a)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "paratrain", "fit", "--data", str(regression_csv), "--target", "y",
                           "--epochs", "1", "--tracking", "tensorboard", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=100)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("paratrain: error: tracking='tensorboard' needs the package tensorboard")
    assert "paratrain[tracking]" in lines[-1]
    assert not out.exists()


@pytest.mark.timeout(60)
def test_an_unusable_mlflow_uri_fails_before_training_and_leaves_no_run_directory(regression_csv, tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"tracking_uri='nosuchscheme://x': MLflow cannot log there"):
        fit(_config(regression_csv, out, tracking="mlflow", tracking_uri="nosuchscheme://x"))
    assert not out.exists()


@pytest.mark.timeout(120)
def test_a_stopped_and_resumed_run_is_two_mlflow_runs_of_its_epochs(regression_csv, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from paratrain.train.fit import resume

    stopped = fit(_config(regression_csv, tmp_path / "run", tracking="mlflow", epochs=2, stop_after=1))
    assert stopped.summary["status"] == "stopped"
    resume(stopped.run_dir)
    client = MlflowClient(tracking_uri=mlflow_uri(None, stopped.run_dir))
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], order_by=["start_time"])
    by_resumed = {r.data.tags["paratrain.resumed"]: r for r in runs}
    assert set(by_resumed) == {"false", "true"}
    assert by_resumed["false"].data.tags["paratrain.status"] == "stopped"
    steps = {key: [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
             for key, run in by_resumed.items()}
    assert steps == {"false": [1], "true": [2]}


@pytest.mark.timeout(120)
def test_a_diverging_run_is_marked_failed(regression_csv, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from paratrain.errors import DivergenceError

    store = tmp_path / "store"  # outside the run directory, which a run failing in its first epoch removes
    with pytest.raises(DivergenceError):
        fit(_config(regression_csv, tmp_path / "run", tracking="mlflow", tracking_uri=str(store), lr=1e30))
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"
