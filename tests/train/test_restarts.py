"""A worker killed with SIGKILL in the middle of an epoch: --max-restarts relaunches the group from
the last checkpoint (--checkpoint-every-steps), and the run ends with the model of an uninterrupted run.

Every strategy that the local launcher runs takes part (the registry's, as its ``conformance_spec``),
each with one uninterrupted run and one killed run. Deterministic strategies must end within 1e-6 of
the uninterrupted parameters; asynchronous ones (async, hogwild: the update order is the scheduler's)
with a validation loss within their ``conformance_tolerance`` of it, as the conformance suite asks.
The kill lands after a step checkpoint chosen at random in the first two epochs, plus a random short
delay; 3 epochs mean the resumed part crosses an epoch's end (shuffling, schedule, dropout of a new epoch).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from paratrain.config import FitConfig
from paratrain.strategies import known_strategies, strategy_class
from paratrain.train.checkpoint import load_torch
from paratrain.train.fit import fit
from tests.conftest import assert_states_close, model_state, regression_frame

EPOCHS = 3
BATCH = 8  # per worker: 409 training rows on 2 workers give 26 steps per epoch
EVERY = 5  # a checkpoint every 5 steps
STEPS_PER_EPOCH = 26
EXACT_ATOL = 1e-6

LAUNCHED = [name for name in known_strategies() if strategy_class(name).needs_process_group]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("restarts-data") / "data.csv"
    regression_frame().to_csv(path, index=False)
    return path


def _arguments(data: Path, out: Path, name: str) -> dict:
    # Adam with a cosine schedule and dropout: state a restart must restore, masks it must draw again.
    return {"path": str(data), "target": "y", "hidden": [16, 16], "dropout": 0.1, "epochs": EPOCHS,
            "batch_size": BATCH, "lr": 0.01, "optimizer": "adam", "schedule": "cosine", "seed": 0,
            "precision": "fp32", "strategy": strategy_class(name).conformance_spec, "workers": 2,
            "checkpoint_every_steps": EVERY, "verbosity": 0, "out": str(out)}


def _cli(fields: dict) -> list[str]:
    flags = {"path": "--data"}
    out = []
    for key, value in fields.items():
        if key == "verbosity":
            out.append("--quiet")
            continue
        flag = flags.get(key, "--" + key.replace("_", "-"))
        out += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


def _workers_of(pid: int) -> dict[int, int]:
    """The local launcher's worker processes under ``pid``: rank -> pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == pid and b"paratrain.launch.child" in command:
            found[int(command[command.index(b"--rank") + 1])] = int(entry.name)
    return found


def _checkpoint_step(run_dir: Path) -> int:
    try:
        return int(load_torch(run_dir / "checkpoint.pt")["state"]["step"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1  # not there yet


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", LAUNCHED)
def test_a_worker_killed_mid_epoch_restarts_and_ends_as_an_uninterrupted_run(name, table, tmp_path):
    cls = strategy_class(name)
    full = fit(FitConfig.from_dict(_arguments(table, tmp_path / "full", name)))
    rng = random.Random(f"restarts-{name}")
    rank = rng.randrange(2)
    # After a step checkpoint somewhere in the first two epochs, then a short random delay.
    after_step = rng.randrange(EVERY, 2 * STEPS_PER_EPOCH - EVERY)
    delay = rng.uniform(0.0, 0.05)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "paratrain", "fit", *_cli(_arguments(table, out, name)), "--max-restarts", "1"]
    proc = subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _checkpoint_step(out) < after_step:
            assert proc.poll() is None, f"fit ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "no step checkpoint came"
            time.sleep(0.005)
        time.sleep(delay)
        workers = _workers_of(proc.pid)
        assert rank in workers and not (out / "summary.json").exists(), "the run finished before the kill"
        os.kill(workers[rank], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    # One warning line naming the rank, the cause and the checkpoint resumed from.
    assert f"worker rank {rank} was killed by signal SIGKILL" in stderr, stderr
    assert "restart 1 of 1: resuming from the checkpoint" in stderr, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["restarts"] == 1 and summary["epochs"] == EPOCHS
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))  # one line per epoch, none repeated
    if cls.deterministic:
        assert "resumes from rank 0's model" not in stderr, stderr  # every rank found its own state
        assert_states_close(model_state(full.run_dir), model_state(out), atol=EXACT_ATOL)
    else:
        # The order of asynchronous updates is the scheduler's: only the outcome can be compared.
        assert summary["val_loss"] <= cls.conformance_tolerance * full.summary["val_loss"]
