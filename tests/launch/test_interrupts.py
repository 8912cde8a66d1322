"""Stopping `paratrain fit` with a signal, as kill, timeout, Slurm and Kubernetes do, with real processes.

After Ctrl-C (SIGINT), SIGTERM or SIGKILL to the launcher, or SIGINT/SIGTERM to
its whole process group: no worker is left, nothing is left in /tmp, the run
directory is consistent (metrics.jsonl holds epochs 1..k, checkpoint.pt is
epoch k) and ``--resume`` ends where an uninterrupted run ends (DDP resumes
within 1e-6, as in tests/train/test_resume.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from paratrain.errors import ConfigError
from paratrain.train.fit import resume
from tests.conftest import assert_states_close, model_state, regression_frame, run_cli
from tests.launch.processes import (
    HAS_PROC,
    alive,
    argument,
    checkpoint_epoch,
    children,
    kill_group,
    metrics_epochs,
    start_fit,
    wait_for_file,
    wait_until,
)

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="finds worker processes through /proc")

EPOCHS = 16
# ~50 steps per rank per epoch: a run lasts seconds, so a signal sent after the first
# checkpoint arrives mid-run even on a loaded machine.
LONG_EPOCHS = 1000
FLAGS = ("--strategy", "ddp", "--workers", "2", "--epochs", str(EPOCHS), "--batch-size", "16",
         "--hidden", "16", "--seed", "3", "--precision", "fp32")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.csv"
    regression_frame(rows=2000).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    done = run_cli("fit", "--data", str(data), "--target", "y", "--quiet", "--out", str(out), *FLAGS, timeout=150)
    assert done.returncode == 0, done.stderr
    return out


def _workers(proc) -> list[int]:
    assert wait_until(lambda: len(children(proc.pid)) == 2, timeout=30), children(proc.pid)
    return children(proc.pid)


def _assert_consistent(run_dir: Path) -> int:
    """metrics.jsonl holds epochs 1..k once each, and the checkpoint is of epoch k."""
    epochs = metrics_epochs(run_dir)
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    assert checkpoint_epoch(run_dir) == len(epochs)
    assert not list(run_dir.glob(".*.tmp")), "a write was cut short"
    return len(epochs)


def _start_past_a_checkpoint(data: Path, run_dir: Path):
    """A run with its first checkpoint written: (launcher, worker pids, scratch folder)."""
    proc = start_fit(data, run_dir, *FLAGS)
    try:
        wait_for_file(proc, run_dir / "checkpoint.pt")
        workers = _workers(proc)
        return proc, workers, Path(argument(workers[0], "--scratch"))
    except BaseException:
        kill_group(proc)
        raise


def _assert_resume_matches(run_dir: Path, uninterrupted: Path) -> None:
    done = run_cli("fit", "--resume", str(run_dir), "--quiet", timeout=150)
    assert done.returncode == 0, done.stderr
    assert metrics_epochs(run_dir) == list(range(1, EPOCHS + 1))
    assert_states_close(model_state(run_dir), model_state(uninterrupted), atol=1e-6)


@pytest.mark.timeout(300)
# Both signals and both targets, in two runs (the soak test mixes them further, tests/soak).
@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, False), (signal.SIGTERM, True)],
                         ids=["parent-SIGINT", "group-SIGTERM"])
def test_a_signal_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, data, uninterrupted, signum, to_group):
    run_dir = tmp_path / "run"
    proc, workers, scratch = _start_past_a_checkpoint(data, run_dir)
    try:
        if to_group:
            os.killpg(proc.pid, signum)  # a terminal's Ctrl-C, or `kill -TERM -PGID`
        else:
            os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err  # 130 for SIGINT, 143 for SIGTERM
    assert err.strip().splitlines()[-1] == f"paratrain: interrupted by {name}; continue with: paratrain fit --resume {run_dir}"
    assert not any(alive(pid) for pid in workers)
    assert not scratch.exists()
    stopped_at = _assert_consistent(run_dir)
    assert stopped_at < EPOCHS, "the run ended before the signal: make it longer"
    assert not (run_dir / "model.pt").exists() and not (run_dir / "summary.json").exists()
    _assert_resume_matches(run_dir, uninterrupted)


@pytest.mark.timeout(300)
def test_workers_do_not_outlive_a_killed_launcher(tmp_path, data, uninterrupted):
    run_dir = tmp_path / "run"
    proc, workers, scratch = _start_past_a_checkpoint(data, run_dir)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs in the launcher
        proc.wait()
        killed_at = time.monotonic()
        assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10)
        gone_after = time.monotonic() - killed_at
    finally:
        kill_group(proc)
    assert gone_after < 2.0, f"workers outlived their launcher by {gone_after:.2f} s"
    assert wait_until(lambda: not scratch.exists(), timeout=5), "the workers left the scratch folder"
    _assert_consistent(run_dir)
    _assert_resume_matches(run_dir, uninterrupted)


@pytest.mark.timeout(300)
def test_a_second_writer_is_refused_while_the_run_is_going(tmp_path, data):
    run_dir = tmp_path / "run"
    # Far more epochs than the other tests: this run must still be going when the second writer
    # comes, however loaded the machine (it is stopped with SIGTERM below).
    long_run = [str(LONG_EPOCHS) if flag == str(EPOCHS) else flag for flag in FLAGS]
    proc = start_fit(data, run_dir, *long_run)
    try:
        wait_for_file(proc, run_dir / "checkpoint.pt")
        config_before = (run_dir / "config.yaml").read_bytes()
        started = time.monotonic()
        with pytest.raises(ConfigError, match=rf"run directory '{run_dir}' is in use by process {proc.pid}\b"):
            resume(run_dir, {"epochs": LONG_EPOCHS + 5})
        assert time.monotonic() - started < 5  # refused at once, not after the run
        assert (run_dir / "config.yaml").read_bytes() == config_before  # and nothing was rewritten
        done = run_cli("fit", "--resume", str(run_dir), timeout=60)
        assert done.returncode == 1
        assert done.stderr.startswith(f"paratrain: error: run directory '{run_dir}' is in use by process {proc.pid}")
        assert len(done.stderr.strip().splitlines()) == 1
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    _assert_consistent(run_dir)


@pytest.mark.timeout(120)
def test_a_run_stopped_before_its_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, data):
    run_dir = tmp_path / "run"
    proc = start_fit(data, run_dir, *FLAGS)
    try:
        workers = _workers(proc)  # started, still importing torch: no epoch can have finished
        scratch = Path(argument(workers[0], "--scratch"))
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 143, err
    # The run directory held only its config: it is removed, and the message says there is nothing to resume.
    assert err.strip().splitlines()[-1] == (f"paratrain: interrupted by SIGTERM before the first checkpoint of {run_dir}; "
                                           "nothing to resume")
    assert not run_dir.exists()
    assert not any(alive(pid) for pid in workers)
    assert not scratch.exists()
    assert not (run_dir / "checkpoint.pt").exists()
