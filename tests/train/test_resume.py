"""Stopping after epoch k and resuming reaches the same parameters as an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.train.fit import fit, resume
from tests.conftest import assert_states_close, model_state


def _config(tmp_path, data, name, **fields):
    # Shuffling, dropout, a cosine schedule and Adam: every piece of state a resume must restore.
    base = {"path": str(data), "target": "y", "hidden": [32, 32], "epochs": 4, "dropout": 0.1, "precision": "fp32",
            "schedule": "cosine", "lr": 0.01, "seed": 7, "verbosity": 0, "out": str(tmp_path / name)}
    return FitConfig.from_dict({**base, **fields})


@pytest.mark.timeout(120)
def test_resume_single_process_is_bit_exact(tmp_path, regression_csv):
    full = fit(_config(tmp_path, regression_csv, "full"))
    stopped = fit(_config(tmp_path, regression_csv, "stopped", stop_after=2))
    assert stopped.summary["status"] == "stopped"
    assert not (stopped.run_dir / "model.pt").exists()
    resumed = resume(stopped.run_dir)
    assert resumed.summary["status"] == "finished"
    a, b = model_state(full.run_dir), model_state(resumed.run_dir)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    lines = (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    full_lines = (full.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["val_loss"] for line in lines] == [json.loads(line)["val_loss"] for line in full_lines]


@pytest.mark.timeout(60)
def test_resume_of_a_finished_run_is_refused(tmp_path, regression_csv):
    done = fit(_config(tmp_path, regression_csv, "done", epochs=1))
    with pytest.raises(ConfigError, match="already finished"):
        resume(done.run_dir)


@pytest.mark.timeout(60)
def test_resume_can_extend_epochs(tmp_path, regression_csv):
    done = fit(_config(tmp_path, regression_csv, "done", epochs=1, schedule="none"))
    more = resume(done.run_dir, {"epochs": 2})
    assert more.summary["epochs"] == 2
    assert len((more.run_dir / "metrics.jsonl").read_text().splitlines()) == 2
