"""What a local run exposes: listening sockets on loopback only, a private job file and scratch folder."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest

from tests.conftest import regression_frame
from tests.launch.processes import HAS_PROC, argument, children, kill_group, listening_addresses, start_fit, wait_for_file, wait_until

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="reads sockets and processes through /proc")


def _other_interface() -> str | None:
    """A network interface that is not loopback, if this machine has one."""
    names = [name for _, name in socket.if_nameindex() if not name.startswith("lo")]
    return names[0] if names else None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("strategy", ["ddp", "async"])  # gloo; gloo + RPC (TensorPipe) with its own store
def test_a_local_run_listens_on_loopback_only_and_keeps_its_job_private(tmp_path, strategy):
    data = tmp_path / "data.csv"
    regression_frame(rows=2000).to_csv(data, index=False)
    run_dir = tmp_path / "run"
    # Point gloo and TensorPipe at a real interface, as a user's environment might: a local run
    # must still listen on loopback only (where the host name resolves to loopback, as on some
    # machines, this is what makes the test able to fail).
    interface = _other_interface()
    env = {"GLOO_SOCKET_IFNAME": interface, "TP_SOCKET_IFNAME": interface} if interface else {}
    proc = start_fit(data, run_dir, "--strategy", strategy, "--workers", "2", "--epochs", "200",
                     "--batch-size", "16", "--hidden", "16", env=env)
    try:
        wait_for_file(proc, run_dir / "checkpoint.pt")
        assert wait_until(lambda: len(children(proc.pid)) == 2, timeout=30)
        workers = children(proc.pid)
        sockets = {pid: listening_addresses(pid) for pid in [proc.pid, *workers]}
        scratch = Path(argument(workers[0], "--scratch"))
        scratch_mode = stat.S_IMODE(scratch.stat().st_mode)
        job_mode = stat.S_IMODE((scratch / "job.pkl").stat().st_mode)
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert sockets[proc.pid], "the launcher hosts the rendezvous store"
    assert all(sockets[pid] for pid in workers), f"every worker listens for its peers: {sockets}"
    exposed = {pid: [a for a in addresses if not a.startswith("127.0.0.1:")] for pid, addresses in sockets.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
    # The workers unpickle the job file: no other user may read or replace it.
    assert scratch_mode == 0o700, oct(scratch_mode)
    assert job_mode == 0o600, oct(job_mode)
    assert not scratch.exists()
