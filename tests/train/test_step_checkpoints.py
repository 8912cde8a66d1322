"""Checkpoints inside an epoch (--checkpoint-every-steps) and the options of restarts, in one process."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.train import interrupts, stepcheckpoints
from paratrain.train.checkpoint import load_torch
from paratrain.train.fit import fit, resume
from tests.conftest import model_state, regression_frame, run_cli

EPOCHS = 3
EVERY = 4  # 409 training rows in batches of 16: 26 steps per epoch, a checkpoint every 4 steps


def _config(data, out, strategy: str, **fields) -> FitConfig:
    # Dropout and shuffling: a resume must draw the same masks and the same order; a cosine schedule and
    # Adam: state the checkpoint must carry; validations inside the epoch: records it must carry too.
    base = {"path": str(data), "target": "y", "hidden": [16, 16], "dropout": 0.2, "epochs": EPOCHS,
            "batch_size": 16, "lr": 0.01, "schedule": "cosine", "precision": "fp32", "strategy": strategy,
            "checkpoint_every_steps": EVERY, "evals_per_epoch": 3, "verbosity": 0, "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.csv"
    regression_frame().to_csv(path, index=False)
    return path


class _StopAtCheckpoint:
    """Ctrl-C as the ``stop_at``-th checkpoint inside an epoch is about to be written: the steps since the
    one before are lost, as when a worker dies."""

    def __init__(self, stop_at: int) -> None:
        self.stop_at, self.calls = stop_at, 0
        self.save = stepcheckpoints.save_checkpoint

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise interrupts.Interrupted(signal.SIGINT)
        self.save(*args, **kwargs)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["single", "stale:1"])
def test_a_resume_from_inside_an_epoch_equals_an_uninterrupted_run(strategy, data, tmp_path, monkeypatch):
    full = fit(_config(data, tmp_path / "full", strategy))
    # Every 4 steps of the run: epoch 1 (26 steps) has 6, the 10th is after step 14 of epoch 2.
    monkeypatch.setattr(stepcheckpoints, "save_checkpoint", _StopAtCheckpoint(10))
    with pytest.raises(KeyboardInterrupt):
        fit(_config(data, tmp_path / "parts", strategy))
    monkeypatch.undo()
    state = load_torch(tmp_path / "parts" / "checkpoint.pt")["state"]
    assert (state["epoch"], state["epoch_step"]) == (1, 10)  # the last written: inside epoch 2, after its step 10
    assert state["epoch_rows"] == 10 * 16 and state["epoch_evals"]  # the part of epoch 2 done, and its validation
    assert [r["epoch"] for r in _records(tmp_path / "parts")] == [1]  # no line for the unfinished epoch
    resumed = resume(tmp_path / "parts")
    assert resumed.summary["status"] == "finished" and resumed.summary["epochs"] == EPOCHS
    a, b = model_state(full.run_dir), model_state(resumed.run_dir)
    for key in a:
        assert torch.equal(a[key], b[key]), (key, (a[key] - b[key]).abs().max().item())
    # The resumed epoch's line counts all its steps: the loss sum of the part before the checkpoint is carried.
    expected, got = _records(full.run_dir), _records(resumed.run_dir)
    assert [r["epoch"] for r in got] == list(range(1, EPOCHS + 1))
    for e, g in zip(expected, got):
        assert g["train_loss"] == pytest.approx(e["train_loss"], rel=1e-9)
        assert g["val_loss"] == e["val_loss"]
        assert [x["val_loss"] for x in g["evals"]] == [x["val_loss"] for x in e["evals"]]


def test_bad_values_of_step_checkpoints_and_restarts_are_clear_errors(data, tmp_path, monkeypatch):
    for fields, expected in [({"checkpoint_every_steps": -1}, "checkpoint_every_steps=-1 must be >= 0"),
                             ({"checkpoint_every_steps": 2.5}, "checkpoint_every_steps=2.5 must be an integer"),
                             ({"max_restarts": -1}, "max_restarts=-1 must be >= 0"),
                             ({"max_restarts": "x"}, "max_restarts='x' must be an integer")]:
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
            FitConfig.from_dict(fields)
    with pytest.raises(ConfigError, match="max_restarts=1 relaunches dead worker processes.*--workers 2"):
        fit(_config(data, tmp_path / "one", "single", max_restarts=1))
    assert not (tmp_path / "one").exists()
    # Under torchrun (its environment), torchrun restarts the workers.
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="torchrun started these.*torchrun --max-restarts N"):
        fit(_config(data, tmp_path / "torchrun", "ddp", workers=2, max_restarts=1))
    monkeypatch.undo()
    result = run_cli("fit", "--data", str(data), "--target", "y", "--checkpoint-every-steps", "-3")
    assert result.returncode == 1 and "checkpoint_every_steps=-3 must be >= 0" in result.stderr, result.stderr
