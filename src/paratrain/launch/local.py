"""Start N worker processes on this machine, watch them, and fail fast.

Why our own launcher rather than ``torch.multiprocessing.spawn``: workers are
started as ``python -m paratrain.launch.child`` so that they never re-import
the user's ``__main__`` (a script without a main guard, or a notebook, still
works); the parent hosts the rendezvous store on a free port chosen by the OS
(no race for a port); and an error on any rank ends the whole job at once and
is reported with that rank's number, instead of leaving the other ranks
blocked in a collective until a timeout.

With an emulated link each worker is started through ``ip netns exec`` on its
own emulated host (launch.netns), and binds its namespace's interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from paratrain.errors import WorkerError
from paratrain.launch.links import Link
from paratrain.launch.netns import EmulatedHosts, Host, check_can_emulate, emulated_hosts
from paratrain.launch.scratch import launch_id, make_scratch
from paratrain.launch.store import EMULATED_LINK_VARIABLE, HOST_ADDRESS_VARIABLE, LOOPBACK, hosted_store
from paratrain.strategies.hogwild import LAUNCH_ID_VARIABLE, remove_shared_memory
from paratrain.train import interrupts

_POLL_SECONDS = 0.05
_GRACE_SECONDS = 5.0


class Job(Protocol):
    """What a launched worker runs: picklable (a module-level class), sent to every worker.

    ``WorkerJob`` (training) is one; a benchmark of collectives or a plain PyTorch loop can be
    another, and reuse the launcher's store, error reports and clean-up.

    A job may also set ``ends_at_once = True`` when it writes nothing that a stop must let
    finish (``curvefit.distributed.CurveFitJob``): a signal then ends its workers at once
    instead of raising ``Interrupted`` through the job (see launch.child).
    """

    threads: int
    """Intra-op threads of each worker."""

    @property
    def timeout_s(self) -> float:
        """Seconds the rendezvous and every collective may wait."""

    def run(self, rank: int, world_size: int, local_rank: int, store) -> dict | None:
        """The worker's work; rank 0's returned dict is the launch's result (JSON)."""


def launch_local(job: Job, workers: int, keep_fds: tuple[int, ...] = (), link: Link | None = None,
                 scratch: Path | None = None) -> dict:
    """Run ``job`` on ``workers`` local processes; return rank 0's result or raise WorkerError.

    ``keep_fds`` are passed on to every worker (the run directory's lock: then
    held until the last worker is gone). Ctrl-C or SIGTERM, to this process or
    to a worker, stops every worker (each at the end of the write it is in),
    removes the scratch folder and raises ``Interrupted``.

    ``link``: None or loopback puts every worker on loopback. An emulated link
    (``parse_link("100mbit")``, needs root) runs each worker on its own emulated
    host (launch.netns: a network namespace, a veth limited to the rate), hosts
    the store on the bridge's address, and removes the hosts on every way out.

    ``scratch``: a folder from ``launch.scratch.make_scratch`` that holds files of the job's
    own (e.g. the rows it works on), used instead of a new one: it is removed like the
    launcher's, on every way out and by the workers when this process is killed.
    """
    emulated = link is not None and link.emulated
    if emulated:
        check_can_emulate(link)  # one line saying what is missing, before anything is built
    with interrupts.handled():
        network = emulated_hosts(link, workers) if emulated else contextlib.nullcontext(None)
        # Left after the workers are stopped (the inner block's end): a namespace with a
        # process still in it would outlive its removal.
        with network as net:
            return _launch(job, workers, keep_fds, net, scratch)


def _launch(job: Job, workers: int, keep_fds: tuple[int, ...], net: EmulatedHosts | None,
            scratch: Path | None = None) -> dict:
    store_host = net.store_host if net else LOOPBACK
    # The OS picks a free port for the store (no race for a port); workers learn it from us.
    store = hosted_store(store_host, workers, job.timeout_s)
    # A 0700 folder: only this user can read the job file that the workers unpickle.
    scratch = scratch or make_scratch("launch")
    procs: list[subprocess.Popen] = []
    try:
        job_file = scratch / "job.pkl"
        write_private(job_file, pickle.dumps(job))
        for rank in range(workers):
            host = net.hosts[rank] if net else None
            command = _child_command(job_file, scratch, rank, workers, store_host, store.port)
            env = worker_env(job.threads, launch_id(scratch))
            if host is not None:
                command = host.exec_prefix() + command
                env.update(host_env(host, net.hosts[0], net.link.name))
            procs.append(subprocess.Popen(command, env=env, pass_fds=keep_fds))
        watch_workers(procs, scratch)
        result_file = scratch / "result-0.json"
        return json.loads(result_file.read_text()) if result_file.exists() else {}
    finally:
        # Held back: a second Ctrl-C must not leave workers running or files behind.
        with interrupts.deferred():
            stop_workers(procs)
            del store
            remove_shared_memory(launch_id(scratch))
            shutil.rmtree(scratch, ignore_errors=True)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only this user may read (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def worker_env(threads: int, launch_id: str | None = None) -> dict[str, str]:
    """The environment of a local worker: its threads, and every socket on loopback."""
    env = dict(os.environ)
    # Threads per worker must be fixed before the OpenMP runtime starts in the child.
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    # Spinning OpenMP threads steal the cores other workers need (measured: 2 spinning
    # threads fell from 76k to 5k samples/s on a loaded 2-core machine); sleep instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Every worker is on this machine: nothing needs to listen beyond loopback. Without these,
    # gloo and TensorPipe listen on the address the host name resolves to, often the LAN's.
    loopback_interface = "lo0" if sys.platform == "darwin" else "lo"
    env.update({"GLOO_SOCKET_IFNAME": loopback_interface, "TP_SOCKET_IFNAME": loopback_interface,
                "MASTER_ADDR": LOOPBACK, HOST_ADDRESS_VARIABLE: LOOPBACK})
    if launch_id is not None:
        env[LAUNCH_ID_VARIABLE] = launch_id
    return env


def host_env(host: Host, master: Host, link_name: str) -> dict[str, str]:
    """What a worker on an emulated host must bind: its namespace's veth, not lo.

    gloo and TensorPipe pick their address by interface name; without it they take
    the address the host name resolves to, which the other namespaces cannot reach.
    """
    env = {"GLOO_SOCKET_IFNAME": host.interface, "TP_SOCKET_IFNAME": host.interface,
           "MASTER_ADDR": master.address, HOST_ADDRESS_VARIABLE: host.address,
           EMULATED_LINK_VARIABLE: link_name}
    # Inside a namespace with no name service, c10d warns once per connection that it cannot
    # look up the peer's host name (harmless: addresses are used). Only C++ errors are shown
    # there, unless the user asked for another level.
    env["TORCH_CPP_LOG_LEVEL"] = os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR")
    return env


def _child_command(job_file: Path, scratch: Path, rank: int, world_size: int, store_host: str,
                   port: int) -> list[str]:
    return [
        sys.executable, "-m", "paratrain.launch.child",
        "--job", str(job_file), "--scratch", str(scratch),
        "--rank", str(rank), "--world-size", str(world_size),
        "--store-host", store_host, "--port", str(port),
        "--parent-pid", str(os.getpid()),
    ]


def watch_workers(procs: list[subprocess.Popen], scratch: Path, label: str = "worker") -> None:
    """Wait until every worker finished, or raise at the first failure.

    Workers write ``error-RANK.json`` (type, message, traceback, time) into
    ``scratch`` before exiting non-zero; ``label`` names them in the error.
    """
    while True:
        failed = [rank for rank, proc in enumerate(procs) if proc.poll() not in (None, 0)]
        if failed:
            signum = _interrupted_by(procs, failed, scratch)
            if signum is not None:
                # Ctrl-C or SIGTERM reached a worker (a process-group signal, a scheduler):
                # the run was interrupted, it did not fail.
                raise interrupts.Interrupted(signum)
            raise _failure(procs, failed, scratch, label)
        if all(proc.poll() == 0 for proc in procs):
            return
        time.sleep(_POLL_SECONDS)


def _interrupted_by(procs: list[subprocess.Popen], failed: list[int], scratch: Path) -> int | None:
    """The signal (SIGINT/SIGTERM) that stopped a failed worker, if one did."""
    for rank in failed:
        path = scratch / f"error-{rank}.json"
        if path.exists():
            signum = json.loads(path.read_text()).get("signal")
            if signum is not None:
                return int(signum)
        elif -procs[rank].returncode in interrupts.SIGNALS:
            return -procs[rank].returncode
    return None


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
        error.rank, error.details, error.reported_type = rank, "", None
        return error
    first = min(reports, key=lambda rank: reports[rank]["time"])
    report = reports[first]
    error = WorkerError(f"{label} rank {first} failed: {report['type']}: {report['message']}")
    error.rank, error.details = first, report["traceback"]
    error.reported_type = report["type"]  # the exception's class name: a restart may not help (fit's restarts)
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
