"""Curve-fit workers follow training's launcher rules: loopback only, private files, gone with their parent."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.launch.processes import HAS_PROC, alive, argument, children, kill_group, listening_addresses, wait_until

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="reads sockets and processes through /proc")


@pytest.mark.timeout(180)
def test_curvefit_workers_listen_on_loopback_and_end_with_a_killed_parent(tmp_path):
    x = np.linspace(1, 10, 400_000)
    data = tmp_path / "curve.csv"
    pd.DataFrame({"x": x, "y": 3 * np.exp(-0.4 * x) + 0.01 * np.sin(7 * x)}).to_csv(data, index=False)
    proc = subprocess.Popen([sys.executable, "-m", "paratrain", "curvefit", "--formula", "b1*exp(-b2*x)",
                             "--data", str(data), "--target", "y", "--starts", "4096", "--max-iter", "100000",
                             "--workers", "2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_until(lambda: len(children(proc.pid)) == 2 or proc.poll() is not None, timeout=60)
        workers = children(proc.pid)
        assert len(workers) == 2, proc.communicate()
        # Joined the group: each worker listens for its peer.
        assert wait_until(lambda: all(alive(p) and listening_addresses(p) for p in workers), timeout=60)
        sockets = {pid: listening_addresses(pid) for pid in [proc.pid, *workers]}
        scratch = Path(argument(workers[0], "--scratch"))
        scratch_mode = stat.S_IMODE(scratch.stat().st_mode)
        job_mode = stat.S_IMODE((scratch / "job.pkl").stat().st_mode)
        assert proc.poll() is None, "the fit must still run when its parent is killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone = wait_until(lambda: not any(alive(pid) for pid in workers), timeout=2.0)
    finally:
        kill_group(proc)
    assert gone, "curve-fit workers outlived their killed parent by more than 2 s"
    assert wait_until(lambda: not scratch.exists(), timeout=5), "the scratch folder was left behind"
    exposed = {pid: [a for a in addresses if not a.startswith("127.0.0.1:")] for pid, addresses in sockets.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
    assert scratch_mode == 0o700 and job_mode == 0o600, (oct(scratch_mode), oct(job_mode))
