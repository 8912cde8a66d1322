"""Entry point of a worker process started by the local launcher.

Writes ``result-RANK.json`` on success or ``error-RANK.json`` on failure into
the launcher's scratch directory, atomically, then exits 0 or 1 (128 + the
signal's number when SIGINT or SIGTERM stopped it).

A worker never outlives its launcher: when the launcher is gone (even killed
with SIGKILL) the worker gets SIGHUP (launch.lifeline) and stops as on SIGTERM:
it finishes the checkpoint write it may be in, writes nothing more into the run
directory, removes the scratch folder no one will read, and is ended within
``_EXIT_AFTER_PARENT_S`` seconds in any case.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import os
import pickle
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from paratrain.launch.lifeline import exit_now, parent_is_gone, stop_with_parent
from paratrain.train import interrupts
from paratrain.train.jsonsafe import json_safe

# Time a worker has to stop cleanly (finish its write, leave the collective) after its
# launcher died, before it is ended regardless.
_EXIT_AFTER_PARENT_S = 1.5
# The signal a worker gets when its launcher is gone. Not SIGTERM, which the living launcher
# sends to stop its workers: when a process is killed, its threads end one by one and the
# kernel signals the child as the first ends, while getppid() still names the dying launcher.
# Only this signal tells the worker that no one will clean up after it.
PARENT_GONE_SIGNAL = signal.SIGHUP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paratrain.launch.child")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    # The launcher's address as seen from this worker: 127.0.0.1, or the bridge's address
    # when the worker runs on an emulated host (its own network namespace).
    parser.add_argument("--store-host", default="127.0.0.1")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    # First, before torch is imported (seconds): a signal from now on stops this worker cleanly,
    # so everything after this line is inside the try (a stop during the imports included).
    interrupts.install()
    try:
        signal.signal(PARENT_GONE_SIGNAL, interrupts.raise_interrupted)
        stop_with_parent(args.parent_pid, PARENT_GONE_SIGNAL, exit_after=_EXIT_AFTER_PARENT_S)
        # A stuck worker can be asked where it is: kill -USR1 <pid> prints its stacks.
        faulthandler.register(signal.SIGUSR1)
        import torch.distributed as dist

        from paratrain.train.checkpoint import save_json_atomic

        job = pickle.loads(args.job.read_bytes())  # a launch.local.Job
        if getattr(job, "ends_at_once", False):
            _end_at_signal(args)
        timeout = datetime.timedelta(seconds=job.timeout_s)
        store = dist.TCPStore(args.store_host, args.port, args.world_size, is_master=False, timeout=timeout)
        result = job.run(args.rank, args.world_size, args.rank, store)
        save_json_atomic(result or {}, args.scratch / f"result-{args.rank}.json")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the launcher
        signum = getattr(exc, "signum", None)
        if signum == PARENT_GONE_SIGNAL or parent_is_gone(args.parent_pid):
            # No one will read a report: leave nothing behind, and go now.
            shutil.rmtree(args.scratch, ignore_errors=True)
            exit_now(128 + signum if signum else 1)
        _write_report(_report(args.rank, exc, signum), args.scratch / f"error-{args.rank}.json")
        if signum:
            exit_now(128 + signum)
        return 1


def _end_at_signal(args: argparse.Namespace) -> None:
    """For a job with nothing to finish (``ends_at_once``): a stop ends the worker where it is.

    Raising Interrupted from a handler is not enough there: C extensions swallow an exception
    raised while they call back into Python (scipy's Cython start design prints "Exception
    ignored" and goes on), and the worker would live on until the forced exit.
    """
    def on_signal(signum: int, frame: object) -> None:
        if signum == PARENT_GONE_SIGNAL or parent_is_gone(args.parent_pid):
            shutil.rmtree(args.scratch, ignore_errors=True)  # no one will read it
        else:  # the launcher lives: tell it which signal stopped this worker (Ctrl-C, SIGTERM)
            report = _report(args.rank, interrupts.Interrupted(signum), signum)
            _write_report(report, args.scratch / f"error-{args.rank}.json")
        exit_now(128 + signum)

    for signum in (*interrupts.SIGNALS, PARENT_GONE_SIGNAL):
        signal.signal(signum, on_signal)


def _report(rank: int, exc: BaseException, signum: int | None) -> dict:
    return {
        "rank": rank,
        "type": type(exc).__name__,
        "message": " ".join(str(exc).split()) or repr(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "time": time.time(),
        "signal": signum,
    }


def _write_report(report: dict, path: Path) -> None:
    """Write the error report atomically without torch: the failure may come before torch
    is imported (a stop during start-up), and importing it then would take seconds."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(report)))
    os.replace(tmp, path)


if __name__ == "__main__":
    exit_now(main())  # the result is written: nothing is left for interpreter teardown to do
