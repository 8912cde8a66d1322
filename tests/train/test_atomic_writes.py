"""A process killed in the middle of writing a checkpoint leaves the previous one whole,
and --resume goes on from it to the same end as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from paratrain.config import FitConfig
from paratrain.train import rundir
from paratrain.train.checkpoint import load_torch
from paratrain.train.fit import fit, resume
from tests.conftest import model_state

# Resumes the run in argv[1]; the next checkpoint save writes half its bytes, touches
# argv[2] and sleeps, so that the test can kill the process in the middle of the write.
_SLOW_SAVE = """
import io, sys, time
from pathlib import Path
import torch

real_save = torch.save

def half_then_sleep(obj, handle, *args, **kwargs):
    if not (isinstance(obj, dict) and "optimizer" in obj and "state" in obj):
        return real_save(obj, handle, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    handle.write(data[: len(data) // 2])
    handle.flush()
    Path(sys.argv[2]).touch()
    time.sleep(120)
    handle.write(data[len(data) // 2 :])

torch.save = half_then_sleep
from paratrain.train.fit import resume
resume(sys.argv[1])
"""


def _config(data, out, **fields) -> FitConfig:
    base = {"path": str(data), "target": "y", "hidden": [16, 16], "epochs": 4, "dropout": 0.1,
            "schedule": "cosine", "lr": 0.01, "seed": 3, "verbosity": 0, "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


@pytest.mark.timeout(240)
def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, regression_csv):
    run = tmp_path / "run"
    assert fit(_config(regression_csv, run, stop_after=2)).summary["status"] == "stopped"
    before = (run / rundir.CHECKPOINT_FILE).read_bytes()

    marker = tmp_path / "half-written"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(run), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the checkpoint write never began"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    leftovers = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < len(before)
    assert (run / rundir.CHECKPOINT_FILE).read_bytes() == before  # untouched, still loads
    assert load_torch(run / rundir.CHECKPOINT_FILE)["state"]["epoch"] == 2

    resumed = resume(run)
    assert resumed.summary["status"] == "finished" and resumed.summary["epochs"] == 4
    assert not list(run.glob(".*.tmp"))  # the stale temp file was cleared
    lines = (run / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]

    full = fit(_config(regression_csv, tmp_path / "full"))
    a, b = model_state(full.run_dir), model_state(run)
    for name in a:
        assert torch.equal(a[name], b[name]), name
