"""``python -m paratrain.tune.worker``: one trial process of a search.

It pins itself to its cores, opens the shared storage, reads the study's spec
and runs trials until the budget is claimed. It needs nothing but the storage
and the study name (plus where to put trial runs), so the coordinator on this
machine and ``paratrain tune-worker`` on another start it the same way.

Exit codes: 0 budget reached, 3 trials keep failing (the error is in the study),
2 anything else (printed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Sequence

STORAGE_ENV = "PARATRAIN_TUNE_STORAGE"
"""Environment variable through which the coordinator hands a worker its storage (as tune/cli.py reads it)."""

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_FAILING = 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m paratrain.tune.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=os.environ.get(STORAGE_ENV),
                        help=f"journal file path or RDB URL (default: ${STORAGE_ENV}, which keeps a password "
                             "out of the process list)")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--worker", required=True, help="name of this worker, for messages and trial attributes")
    parser.add_argument("--seed-key", default="0", help="what makes this worker's sampler seed its own")
    parser.add_argument("--out", required=True, type=Path, help="folder for this worker's trial runs")
    parser.add_argument("--cpus", default="", help="comma-separated cores to pin to")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process")
    parser.add_argument("--data", help="data path on this machine, if not the stored one")
    parser.add_argument("--parent-pid", type=int,
                        help="stop (as on SIGTERM) when this process, the coordinator, is gone")
    args = parser.parse_args(argv)
    if not args.storage:
        parser.error(f"--storage (or ${STORAGE_ENV}) is required")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from paratrain.tune.planner import pin_to

    # Pin before torch or OpenMP start threads: the thread pools then see only these cores.
    pin_to(tuple(int(c) for c in args.cpus.split(",") if c))
    from paratrain.errors import ParatrainError
    from paratrain.train.interrupts import raise_interrupted
    from paratrain.tune.study import TuneError, scrub

    # The coordinator stops us with SIGTERM: turn it into an exception so that Optuna marks
    # the trial failed and fit's launcher stops the trial's own ddp workers on the way out.
    signal.signal(signal.SIGTERM, raise_interrupted)
    if args.parent_pid:
        _stop_with_parent(args.parent_pid)
    try:
        run(args)
    except TuneError as exc:
        print(f"paratrain tune worker {args.worker}: {scrub(str(exc), args.storage)}", file=sys.stderr)
        return EXIT_FAILING
    except ParatrainError as exc:
        print(f"paratrain tune worker {args.worker}: error: {scrub(str(exc), args.storage)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception:  # a bug: keep the traceback, less the storage's password
        print(scrub(traceback.format_exc(), args.storage), file=sys.stderr, end="")
        return EXIT_ERROR
    return EXIT_OK


def _stop_with_parent(parent_pid: int) -> None:
    """A coordinator killed with SIGKILL cannot stop its workers; without this they would
    train on until the budget is claimed, beside the workers of a re-run search. When the
    parent is gone, signal ourselves as the coordinator would (see launch.lifeline)."""
    from paratrain.launch.lifeline import stop_with_parent

    stop_with_parent(parent_pid, signal.SIGTERM, poll_seconds=1.0)


def run(args: argparse.Namespace) -> None:
    import optuna

    from paratrain.tune.objectives import TrialContext, build_objective
    from paratrain.tune.study import budget_lock, load_spec, load_study, open_storage, run_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage)
    spec = load_spec(optuna.load_study(study_name=args.study, storage=storage))
    study = load_study(storage, args.study, spec, worker=args.seed_key)
    context = TrialContext(args.out, args.threads, args.storage, args.study, args.data)
    objective = build_objective(spec, context)
    run_trials(study, spec, objective, budget_lock(args.storage, storage, args.study), worker_name=args.worker)


if __name__ == "__main__":
    sys.exit(main())
