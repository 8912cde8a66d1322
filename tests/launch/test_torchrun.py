"""The same `paratrain fit` entry point runs under torchrun (here: 2 processes, one node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paratrain.strategies import strategy_class
from tests.conftest import assert_states_close, model_state


@pytest.mark.timeout(180)
def test_fit_under_torchrun_matches_the_local_launcher(tmp_path, regression_csv):
    common = ["fit", "--data", str(regression_csv), "--target", "y", "--strategy", "ddp", "--hidden", "16",
              "--epochs", "2", "--precision", "fp32", "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "paratrain", *common, "--out", str(tmp_path / "torchrun")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # printed once, by rank 0
    assert summary["workers"] == 2 and summary["strategy"] == "ddp"
    local = subprocess.run([sys.executable, "-m", "paratrain", *common, "--workers", "2",
                            "--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=150, env=env)
    assert local.returncode == 0, local.stderr
    assert_states_close(model_state(Path(tmp_path / "torchrun")), model_state(Path(tmp_path / "local")), atol=1e-6)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("strategy", ["localsgd:2", "sparse:0.1", "async", "hogwild"])
def test_communication_efficient_strategies_run_under_torchrun(tmp_path, regression_csv, strategy):
    cls = strategy_class(strategy)
    common = ["fit", "--data", str(regression_csv), "--target", "y", "--strategy", strategy, "--hidden", "16",
              "--epochs", "3", "--batch-size", "32", "--precision", "fp32", "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "paratrain", *common, "--out", str(tmp_path / "torchrun")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["workers"] == 2 and summary["strategy"] == strategy and summary["status"] == "finished"
    if cls.communicates:
        assert summary["comm_bytes_per_step"] > 0
    if cls.deterministic:  # async's and hogwild's update order is up to the scheduler
        local = subprocess.run([sys.executable, "-m", "paratrain", *common, "--workers", "2",
                                "--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=150, env=env)
        assert local.returncode == 0, local.stderr
        assert_states_close(model_state(Path(tmp_path / "torchrun")), model_state(Path(tmp_path / "local")), atol=1e-6)
