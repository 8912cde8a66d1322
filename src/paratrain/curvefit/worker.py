"""Entry point of a data-parallel curve-fit worker: ``python -m paratrain.curvefit.worker``.

Writes ``error-RANK.json`` into the scratch folder on failure (so the parent can
name the rank and the cause), then exits 1; rank 0 writes ``result.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paratrain.curvefit.worker")
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _end_with_parent(args.parent_pid, args.scratch)
    try:
        from paratrain.curvefit.distributed import run_worker

        run_worker(args.scratch, args.rank, args.world_size, args.port)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent
        _report(args, exc)
        return 1
    # Skip interpreter teardown: gloo's threads can abort in static destructors at exit
    # ("terminate called without an active exception") after a perfectly good run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _end_with_parent(parent_pid: int, scratch: Path) -> None:
    """A parent killed with SIGKILL cleans nothing up: then this worker removes the scratch
    folder no one will read and ends at once (it writes nothing else that could be kept)."""
    from paratrain.launch.lifeline import stop_with_parent

    def on_parent_gone(signum, frame) -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGHUP, on_parent_gone)
    # The handler runs between Python instructions; inside a long collective, exit_after ends it.
    stop_with_parent(parent_pid, signal.SIGHUP, exit_after=1.5)


def _report(args, exc: BaseException) -> None:
    report = {"rank": args.rank, "type": type(exc).__name__, "message": " ".join(str(exc).split()) or repr(exc),
              "traceback": "".join(traceback.format_exception(exc)), "time": time.time()}
    path = args.scratch / f"error-{args.rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    os.replace(path.with_suffix(".tmp"), path)


if __name__ == "__main__":
    sys.exit(main())
