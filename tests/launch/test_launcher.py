"""The local launcher with real processes: errors name the rank, a dead worker ends the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paratrain.config import FitConfig
from paratrain.errors import WorkerError
from paratrain.launch.local import launch_local
from paratrain.launch.worker import WorkerJob
from tests.conftest import regression_frame


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _rank_of(pid: int) -> int | None:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(args[args.index(b"--rank") + 1]) if b"--rank" in args else None


@pytest.mark.timeout(120)
def test_an_error_on_the_workers_is_reported_with_the_rank(tmp_path):
    config = FitConfig.from_dict({"path": str(tmp_path / "vanished.csv"), "target": "y", "strategy": "ddp",
                                  "workers": 2, "verbosity": 0})
    job = WorkerJob(config, str(tmp_path / "vanished.csv"), tmp_path / "run", False, 1)
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker rank [01] failed: DataError: data file .*vanished.csv' does not exist"):
        launch_local(job, 2)
    assert time.monotonic() - started < 60


@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds worker processes through /proc")
@pytest.mark.parametrize(("strategy", "victim"), [
    ("ddp", 1),
    ("async", 0),  # the parameter server: trainers blocked on it must not hang
    ("async", 1),
    ("hogwild", 1),
    ("sparse:0.1", 1),
])
def test_a_killed_worker_fails_the_run_fast_instead_of_hanging(tmp_path, strategy, victim):
    data = tmp_path / "data.csv"
    regression_frame(rows=20000).to_csv(data, index=False)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "paratrain", "fit", "--data", str(data), "--target", "y",
               "--strategy", strategy, "--workers", "2", "--epochs", "500", "--batch-size", "32", "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "metrics.jsonl").exists():  # training is under way on both ranks
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        workers = {_rank_of(pid): pid for pid in _children(proc.pid)}
        assert set(workers) == {0, 1}, workers
        os.kill(workers[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 30  # fails fast: no waiting on the collective timeout
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert f"paratrain: error: worker rank {victim} was killed by signal SIGKILL" in err
    survivor = workers[1 - victim]
    assert not Path(f"/proc/{survivor}").exists()  # the surviving rank was stopped, not left running
