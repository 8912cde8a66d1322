"""The ``tune`` and ``tune-worker`` subcommands: parse, build the call, run the library.

``paratrain.cli`` calls :func:`add_parsers` from ``build_parser``. The fixed part of
the training config takes every ``fit`` flag (the same parser code), so a search
trains exactly as ``paratrain fit`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Iterator

from paratrain.train.jsonsafe import dumps_strict
from paratrain.tune.worker import STORAGE_ENV  # may hold the storage URL instead of --storage

TUNE_DESTS = ("space", "sampler", "pruner", "trials", "parallel", "workers_per_trial", "storage", "study_name",
              "objectives", "sampler_seed", "grid_points", "stop_at", "retrain")
"""Flags of `tune` that are not fit config fields."""


def add_parsers(subparsers: Any) -> None:
    """Register `tune` and `tune-worker` on the main parser's subcommands."""
    from paratrain.cli import _fit_arguments
    from paratrain.tune.models import MODELS
    from paratrain.tune.samplers import PRUNERS, SAMPLERS

    tune = subparsers.add_parser(
        "tune", help="search hyperparameters, trials in parallel processes",
        description="Search hyperparameters with Optuna: trials run in parallel processes, each reports its "
        "validation loss per epoch so that bad ones stop early. Re-running the same command continues the study. "
        "Writes study.json, best_params.json, trials.csv, plots/ and best_model/ (the best configuration "
        "retrained on all rows) into --out.",
        epilog="example: paratrain tune --data d.csv --target y --model mlp --sampler tpe --pruner asha "
        "--trials 64 --parallel 2 --epochs 20 --out runs/search",
    )
    _fit_arguments(tune)
    for action in tune._actions:  # the fit parser's --model knows only mlp and formula
        if action.dest == "model":
            action.choices = list(MODELS)
            action.help = "model to tune: " + ", ".join(MODELS) + " (mlp)"
        if action.dest == "out":
            action.help = "study directory: journal storage, trial runs and results; re-run to continue"
    search = tune.add_argument_group("search")
    search.add_argument("--space", metavar="YAML", help="search space file (default: the model's own, printed at start)")
    search.add_argument("--sampler", default="tpe", help=f"{', '.join(SAMPLERS)} (tpe)")
    search.add_argument("--pruner", default="asha", help=f"{', '.join(PRUNERS)} (asha)")
    search.add_argument("--trials", type=int, default=64, help="complete + pruned trials to reach (64)")
    search.add_argument("--parallel", type=int, default=1, help="trials at once, one process each (1)")
    search.add_argument("--workers-per-trial", type=int, default=1, help="data-parallel workers inside each trial (1)")
    search.add_argument("--storage", metavar="URL", help="RDB URL, e.g. postgresql://user@host/db (default: "
                        f"${STORAGE_ENV} if set, else a journal file in --out); the environment variable keeps "
                        "a password off the process list")
    search.add_argument("--study-name", help="study name in the storage (default: the name of --out)")
    search.add_argument("--objectives", metavar="NAME,NAME",
                        help="val_loss (default), or val_loss,seconds for a multi-objective search (nsga2's default)")
    search.add_argument("--sampler-seed", type=int, default=0, help="seed of the sampler (0)")
    search.add_argument("--grid-points", type=int, help="grid sampler: values per continuous parameter (4)")
    search.add_argument("--stop-at", type=float, metavar="LOSS",
                        help="start no more trials once one reaches this validation loss")
    search.add_argument("--no-retrain", dest="retrain", action="store_false",
                        help="do not retrain the best configuration into --out/best_model")
    tune.set_defaults(handler=cmd_tune)

    worker = subparsers.add_parser(
        "tune-worker", help="join a study on shared storage from this machine",
        description="Run trials of a study created by `paratrain tune --storage URL`; the study holds the data "
        "path, model, space and fixed config, so only --study and --storage are needed.",
        epilog="example: paratrain tune-worker --study search --storage postgresql://tune@db-host/tune --parallel 2",
    )
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument("--storage", metavar="URL", help=f"the storage the study lives in (default: ${STORAGE_ENV})")
    worker.add_argument("--parallel", type=int, default=1, help="trials at once on this machine (1)")
    worker.add_argument("--out", help="folder for this machine's trial runs (default: the study's --out if it "
                        "exists here, else ./tune-STUDY)")
    worker.add_argument("--data", metavar="FILE", help="the data file on this machine, if not at the stored path")
    worker.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the study to appear (60)")
    worker.add_argument("--quiet", dest="verbosity", action="store_const", const=0, default=1,
                        help="print only errors and the summary")
    worker.set_defaults(handler=cmd_tune_worker)


def cmd_tune(args: argparse.Namespace) -> int:
    from paratrain.cli import _configure_logging, fit_overrides
    from paratrain.config import load_yaml
    from paratrain.errors import ConfigError
    from paratrain.tune.api import tune

    if args.resume:
        raise ConfigError("tune has no --resume: run the same command again with the same --out to continue")
    fit_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in TUNE_DESTS})
    fixed: dict[str, Any] = {**(load_yaml(args.config) if args.config else {}), **fit_overrides(fit_args)}
    out = fixed.pop("out", None)
    if not out:
        raise ConfigError("--out DIR is required: the study directory (run the same command again to continue)")
    verbosity = fixed.pop("verbosity", 1)
    model = fixed.pop("model", "mlp")
    data, target = fixed.pop("path", None), fixed.pop("target", None)
    _configure_logging(verbosity)
    sampler_options = {"grid_points": args.grid_points} if args.grid_points else None
    objectives = [name.strip() for name in args.objectives.split(",") if name.strip()] if args.objectives else None
    storage = args.storage or os.environ.get(STORAGE_ENV) or None
    with storage_errors(storage):
        result = tune(data=data, target=target, model=model, space=args.space, sampler=args.sampler,
                      pruner=args.pruner, trials=args.trials, parallel=args.parallel,
                      workers_per_trial=args.workers_per_trial, out=out, storage=storage,
                      study_name=args.study_name, fixed=fixed, objectives=objectives, seed=args.sampler_seed,
                      sampler_options=sampler_options, stop_at=args.stop_at, retrain=args.retrain,
                      verbosity=verbosity)
    print(dumps_strict(result.summary, indent=2))
    return 0


@contextlib.contextmanager
def storage_errors(storage: str | None) -> Iterator[None]:
    """Errors raised while a storage URL is in use, as one line without its password.

    Why: SQLAlchemy, optuna and the database driver put the URL they were given into
    some of their messages; those end in terminals and CI logs.
    """
    from paratrain.errors import ParatrainError
    from paratrain.tune.study import TuneError, redact, scrub

    try:
        yield
    except ParatrainError as exc:
        exc.args = (scrub(str(exc), storage),)
        raise
    except Exception as exc:
        if storage is None or not _from_a_storage(exc):
            raise
        message = scrub(" ".join(str(exc).split()), storage)[:300]
        raise TuneError(f"storage {redact(storage)} failed: {type(exc).__name__}: {message}") from None


def _from_a_storage(exc: BaseException) -> bool:
    """An error of SQLAlchemy, optuna's storages or a database driver (not a bug of ours)."""
    return any(kind.__module__.split(".")[0] in ("sqlalchemy", "optuna", "psycopg2", "psycopg", "sqlite3")
               for kind in type(exc).__mro__)


def cmd_tune_worker(args: argparse.Namespace) -> int:
    from paratrain.tune.runner import join_study

    from paratrain.errors import ConfigError

    storage = args.storage or os.environ.get(STORAGE_ENV)
    if not storage:
        raise ConfigError(f"tune-worker needs the study's storage: --storage URL or ${STORAGE_ENV}")
    with storage_errors(storage):
        counts = join_study(storage, args.study, parallel=args.parallel, out=args.out, data=args.data,
                            wait_s=args.wait, verbosity=args.verbosity)
    print(dumps_strict({"study": args.study, "trials": counts}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m paratrain.tune.cli tune ...``: the main CLI with these subcommands registered.

    For use until (and independent of whether) ``paratrain.cli`` registers them itself;
    errors are handled exactly as ``paratrain`` handles them.
    """
    from paratrain import cli

    build_main_parser = cli.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = build_main_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "tune" not in commands.choices:
            add_parsers(commands)
        return parser

    cli.build_parser = build_parser
    try:
        return cli.main(argv)
    finally:
        cli.build_parser = build_main_parser


if __name__ == "__main__":
    import sys

    sys.exit(main())
