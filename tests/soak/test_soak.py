"""Soak: many short fits, trials and curve fits back to back, some killed at random moments.

Afterwards nothing may be left behind: no process, no listening port, no /dev/shm file, no
temporary folder, no open file handle. Each job runs in its own session with a marker in
its environment (inherited by every worker it starts), so a leaked process is found by that
marker however it was started, and with its own TMPDIR, so a leaked scratch folder is found
whatever its name.

About 3 minutes by default; PARATRAIN_SOAK_SECONDS sets the length (600 for the long soak).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import regression_frame

SOAK_SECONDS = float(os.environ.get("PARATRAIN_SOAK_SECONDS", "75"))
# A job that finishes normally is a few seconds; one stuck this long is a hang.
JOB_TIMEOUT_S = 150
# Workers must follow a killed parent within 2 s; the margin covers a loaded machine.
ORPHAN_GRACE_S = 6.0


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes():
                stat = Path(f"/proc/{entry}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie holds nothing
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _listening_sockets() -> set[str]:
    """Inodes of listening TCP sockets on this machine (state 0A in /proc/net/tcp*)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(f"{fields[1]}#{fields[9]}")
    return inodes


def _shm_files() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _tmp_paratrain() -> set[str]:
    return {name for name in os.listdir("/tmp") if name.startswith("paratrain-")}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Soak:
    """Runs the jobs; every job's processes carry this soak's marker."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.marker = f"PARATRAIN_SOAK_MARKER={uuid.uuid4().hex}"
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.data = root / "data.csv"
        regression_frame(rows=600).to_csv(self.data, index=False)
        x = np.linspace(1, 10, 400)
        self.curve = root / "curve.csv"
        pd.DataFrame({"x": x, "y": 3 * np.exp(-0.4 * x) + 0.01 * np.sin(7 * x)}).to_csv(self.curve, index=False)
        self.counter = 0
        self.killed_runs: list[Path] = []
        self.log: list[str] = []

    def _fit(self, strategy: str, workers: int, epochs: int) -> list[str]:
        out = self.root / f"run{self.counter}"
        return ["fit", "--data", str(self.data), "--target", "y", "--hidden", "32,32", "--epochs", str(epochs),
                "--batch-size", "32", "--strategy", strategy, "--workers", str(workers), "--out", str(out)]

    def next_job(self) -> tuple[str, list[str], Path | None]:
        """(kind, paratrain arguments, run directory when it is a fit)."""
        self.counter += 1
        if self.killed_runs and self.rng.random() < 0.3:
            run = self.killed_runs.pop()
            return "resume", ["fit", "--resume", str(run)], run
        kind = self.rng.choice(["single", "ddp", "ddp", "hogwild", "localsgd", "tune", "curvefit"])
        if kind == "single":
            args = self._fit("single", 1, 4)
        elif kind == "ddp":
            args = self._fit("ddp", 2, 4)
        elif kind == "hogwild":
            args = self._fit("hogwild", 2, 4)
        elif kind == "localsgd":
            args = self._fit("localsgd:4", 2, 4)
        elif kind == "tune":
            args = ["tune", "--data", str(self.data), "--target", "y", "--model", "mlp", "--trials", "3",
                    "--parallel", "2", "--epochs", "2", "--batch-size", "64", "--no-retrain",
                    "--out", str(self.root / f"search{self.counter}")]
        else:
            args = ["curvefit", "--formula", "b1*exp(-b2*x)", "--data", str(self.curve), "--target", "y",
                    "--p0", "1,0.1", "--starts", "64", "--workers", "2", "--json"]
        run = Path(args[args.index("--out") + 1]) if kind in ("single", "ddp", "hogwild", "localsgd") else None
        return kind, args, run

    def run_one(self) -> None:
        kind, args, run = self.next_job()
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        key, value = self.marker.split("=", 1)
        env[key] = value
        proc = subprocess.Popen([sys.executable, "-m", "paratrain", *args], cwd=self.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        kill = self.rng.random() < 0.5
        how = None
        if kill:
            delay = self.rng.uniform(0.3, 6.0)
            how = self.rng.choice(["SIGKILL parent", "SIGTERM parent", "SIGINT parent", "SIGTERM group",
                                   "SIGINT group", "SIGKILL group"])
            try:
                proc.wait(timeout=delay)
                how = None  # finished before the kill
            except subprocess.TimeoutExpired:
                sig = getattr(signal, how.split()[0])
                if how.endswith("group"):
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"job {kind} {' '.join(args)} hung for {JOB_TIMEOUT_S} s; stderr:\n{err[-3000:]}")
        self.log.append(f"{kind:9s} {how or 'ran through':15s} rc={proc.returncode}")
        if how is None:
            if kind == "resume" and "already finished" in err:
                pass
            else:
                assert proc.returncode == 0, f"{kind} {' '.join(args)} failed:\n{err[-3000:]}"
        else:
            # A signal that lands as the job ends may find the work done: exit 0 then means done.
            if proc.returncode == 0 and run is not None:
                assert (run / "summary.json").is_file(), f"{kind} stopped by {how} exited 0 unfinished:\n{err[-3000:]}"
            if not how.startswith("SIGKILL"):
                assert "Traceback" not in err, f"{kind} after {how} printed a traceback:\n{err[-3000:]}"
            if run is not None and (run / "checkpoint.pt").is_file() and not (run / "summary.json").is_file():
                self.killed_runs.append(run)
        self._wait_for_no_process(f"{kind} after {how or 'a normal end'}")
        if run is not None and (run / "metrics.jsonl").is_file():
            epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert epochs == list(range(1, len(epochs) + 1)), f"{run}/metrics.jsonl epochs {epochs}"

    def run_final(self) -> None:
        """One launch that runs through, as the next run after the soak would."""
        env = dict(os.environ, TMPDIR=str(self.tmp))
        self.counter += 1
        done = subprocess.run([sys.executable, "-m", "paratrain", *self._fit("ddp", 2, 1)], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-3000:]

    def _wait_for_no_process(self, what: str) -> None:
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while (left := _processes_with(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"{len(left)} process(es) outlived their job ({what}): {left}"


@pytest.mark.timeout(int(SOAK_SECONDS) + 2 * JOB_TIMEOUT_S)
def test_soak_leaves_nothing_behind(tmp_path):
    listening, shm, tmp, fds = _listening_sockets(), _shm_files(), _tmp_paratrain(), _open_fds()
    soak = Soak(tmp_path, seed=int(os.environ.get("PARATRAIN_SOAK_SEED", "0")))
    deadline = time.monotonic() + SOAK_SECONDS
    jobs = 0
    try:
        while time.monotonic() < deadline:
            soak.run_one()
            jobs += 1
        # When a whole process group is killed with SIGKILL no process is left to clean up; the
        # next launch removes what the dead one left (launch/scratch.py). This is that launch.
        soak.run_final()
    finally:
        print(f"soak: {jobs} jobs in {SOAK_SECONDS:.0f} s", *soak.log, sep="\n")
        for pid in _processes_with(soak.marker):  # leave the machine clean even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert jobs >= 3, f"only {jobs} jobs ran in {SOAK_SECONDS:.0f} s"
    assert _processes_with(soak.marker) == []
    assert _listening_sockets() - listening == set(), "listening sockets left behind"
    assert _shm_files() - shm == set(), "/dev/shm files left behind"
    # torch keeps its compiler cache in TMPDIR/torchinductor_USER by design: a cache, not a leak.
    left = [p.name for p in soak.tmp.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == [], f"temporary files left behind: {left}"
    assert _tmp_paratrain() - tmp == set(), "/tmp/paratrain-* left behind"
    assert _open_fds() == fds, "file handles left open in the caller"
