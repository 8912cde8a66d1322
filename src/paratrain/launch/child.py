"""Entry point of a worker process started by the local launcher.

Writes ``result-RANK.json`` on success or ``error-RANK.json`` on failure into
the launcher's scratch directory, atomically, then exits 0 or 1.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import pickle
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paratrain.launch.child")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # A stuck worker can be asked where it is: kill -USR1 <pid> prints its stacks.
    faulthandler.register(__import__("signal").SIGUSR1)
    from paratrain.train.checkpoint import save_json_atomic

    try:
        import torch.distributed as dist

        from paratrain.launch.worker import run_worker

        job = pickle.loads(args.job.read_bytes())
        timeout = datetime.timedelta(seconds=job.config.parallel.timeout_s)
        store = dist.TCPStore("127.0.0.1", args.port, args.world_size, is_master=False, timeout=timeout)
        result = run_worker(job, args.rank, args.world_size, args.rank, store)
        save_json_atomic(result or {}, args.scratch / f"result-{args.rank}.json")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the launcher
        report = {
            "rank": args.rank,
            "type": type(exc).__name__,
            "message": " ".join(str(exc).split()) or repr(exc),
            "traceback": traceback.format_exc(),
            "time": time.time(),
        }
        save_json_atomic(report, args.scratch / f"error-{args.rank}.json")
        return 1


if __name__ == "__main__":
    sys.exit(main())
