"""Start N worker processes on this machine, watch them, and fail fast.

Why our own launcher rather than ``torch.multiprocessing.spawn``: workers are
started as ``python -m paratrain.launch.child`` so that they never re-import
the user's ``__main__`` (a script without a main guard, or a notebook, still
works); the parent hosts the rendezvous store on a free port chosen by the OS
(no race for a port); and an error on any rank ends the whole job at once and
is reported with that rank's number, instead of leaving the other ranks
blocked in a collective until a timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch.distributed as dist

from paratrain.errors import WorkerError
from paratrain.launch.worker import WorkerJob

_POLL_SECONDS = 0.05
_GRACE_SECONDS = 5.0


def launch_local(job: WorkerJob, workers: int) -> dict:
    """Run ``job`` on ``workers`` local processes; return rank 0's result or raise WorkerError."""
    timeout = datetime.timedelta(seconds=job.config.parallel.timeout_s)
    # Port 0: the OS picks a free port for the store; workers learn it from us.
    store = dist.TCPStore("127.0.0.1", 0, workers, is_master=True, wait_for_workers=False, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="paratrain-launch-") as scratch_dir:
        scratch = Path(scratch_dir)
        job_file = scratch / "job.pkl"
        # A private temp file written by this process: unpickling it in our own
        # children runs no foreign code.
        job_file.write_bytes(pickle.dumps(job))
        procs = [_start_child(job_file, scratch, rank, workers, store.port, job.threads) for rank in range(workers)]
        try:
            watch_workers(procs, scratch)
        finally:
            stop_workers(procs)
            del store
        result_file = scratch / "result-0.json"
        return json.loads(result_file.read_text()) if result_file.exists() else {}


def _start_child(job_file: Path, scratch: Path, rank: int, world_size: int, port: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ)
    # Threads per worker must be fixed before the OpenMP runtime starts in the child.
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    # Spinning OpenMP threads steal the cores other workers need (measured: 2 spinning
    # threads fell from 76k to 5k samples/s on a loaded 2-core machine); sleep instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = [
        sys.executable, "-m", "paratrain.launch.child",
        "--job", str(job_file), "--scratch", str(scratch),
        "--rank", str(rank), "--world-size", str(world_size), "--port", str(port),
    ]
    return subprocess.Popen(command, env=env)


def watch_workers(procs: list[subprocess.Popen], scratch: Path, label: str = "worker") -> None:
    """Wait until every worker finished, or raise at the first failure.

    Workers write ``error-RANK.json`` (type, message, traceback, time) into
    ``scratch`` before exiting non-zero; ``label`` names them in the error.
    """
    while True:
        failed = [rank for rank, proc in enumerate(procs) if proc.poll() not in (None, 0)]
        if failed:
            raise _failure(procs, failed, scratch, label)
        if all(proc.poll() == 0 for proc in procs):
            return
        time.sleep(_POLL_SECONDS)


def _failure(procs: list[subprocess.Popen], failed: list[int], scratch: Path, label: str) -> WorkerError:
    """Name the root cause: a rank that died without a word (its peers then only
    see 'connection closed'), else the rank that reported its error first."""
    reports = {}
    for rank in range(len(procs)):
        path = scratch / f"error-{rank}.json"
        if path.exists():
            reports[rank] = json.loads(path.read_text())
    silent = [rank for rank in failed if rank not in reports]
    if silent or not reports:
        rank = silent[0] if silent else failed[0]
        code = procs[rank].returncode
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        error = WorkerError(f"{label} rank {rank} {how} without reporting an error")
        error.rank, error.details = rank, ""
        return error
    first = min(reports, key=lambda rank: reports[rank]["time"])
    report = reports[first]
    error = WorkerError(f"{label} rank {first} failed: {report['type']}: {report['message']}")
    error.rank, error.details = first, report["traceback"]
    return error


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """Terminate what still runs; kill what ignores it."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()
