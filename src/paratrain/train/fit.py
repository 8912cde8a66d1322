"""`fit`: check the inputs, make the run directory, start the workers.

The one entry point that the CLI, the estimators and search all call.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from paratrain.config import FitConfig
from paratrain.data.prepare import fit_encoder, load_frame
from paratrain.data.split import shard_indices
from paratrain.errors import ConfigError
from paratrain.launch.env import default_threads, under_torchrun
from paratrain.strategies import strategy_class
from paratrain.train import rundir
from paratrain.train.runlock import hold_run_dir


@dataclass
class FitResult:
    """Where the run went and what it reached."""

    run_dir: Path
    summary: dict[str, Any]


def fit(config: FitConfig, data: pd.DataFrame | None = None, callbacks: Sequence[Any] = ()) -> FitResult:
    """Train a model as ``config`` says; ``data`` overrides ``config.data.path``.

    ``callbacks`` have ``on_epoch_end(record) -> bool`` (see train.loop.EpochCallback);
    they run on rank 0 and may stop the run, e.g. to prune a search trial.

    Example:
        >>> from paratrain.config import FitConfig
        >>> config = FitConfig.from_dict({"path": "data.csv", "target": "y", "epochs": 5})
        >>> result = fit(config)  # doctest: +SKIP
        >>> result.summary["val_r2"]  # doctest: +SKIP
    """
    source = data if data is not None else _absolute(config.data.path)
    workers = _world_size(config)
    _check_data(config, source, workers)
    run_dir = _new_run_dir(config)
    with hold_run_dir(run_dir, lock=_is_dispatcher()) as lock:
        return _dispatch(config, source, run_dir, resume=False, callbacks=tuple(callbacks), lock=lock)


def resume(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> FitResult:
    """Continue a stopped run from its last checkpoint, to the epochs in its config."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CHECKPOINT_FILE).is_file():
        raise ConfigError(f"cannot resume '{run_dir}': it has no {rundir.CHECKPOINT_FILE} (did its first epoch finish?)")
    # Locked before anything is read or written: a run still going there must not be joined.
    with hold_run_dir(run_dir, lock=_is_dispatcher()) as lock:
        config = rundir.read_config(run_dir)
        # stop_after limits one session; a resumed session trains on unless asked again.
        config = config.updated({"stop_after": None, **(overrides or {})})
        summary_path = run_dir / rundir.SUMMARY_FILE
        if summary_path.is_file() and json.loads(summary_path.read_text()).get("epochs", 0) >= config.train.epochs:
            raise ConfigError(f"run '{run_dir}' already finished its {config.train.epochs} epochs; raise --epochs to train on")
        rundir.write_config(run_dir, config)
        return _dispatch(config, _absolute(config.data.path), run_dir, resume=True, lock=lock)


def _is_dispatcher() -> bool:
    """The process that holds the run directory's lock: this one, or rank 0 under torchrun."""
    return not under_torchrun() or os.environ["RANK"] == "0"


def _dispatch(config: FitConfig, source: Any, run_dir: Path, resume: bool, callbacks: tuple = (),
              lock: Any = None) -> FitResult:
    # Imported here: launching pulls in torch.distributed, which the checks above do not need.
    from paratrain.launch.worker import WorkerJob, run_worker

    workers = _world_size(config)
    local_workers = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if under_torchrun() else workers
    threads = config.parallel.threads or default_threads(local_workers)
    job = WorkerJob(config, source, run_dir, resume, threads, callbacks)
    needs_group = strategy_class(config.parallel.strategy).needs_process_group
    if under_torchrun():
        env = os.environ
        summary = run_worker(job, int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])) or {}
    elif needs_group and workers > 1:
        from paratrain.launch.local import launch_local

        summary = launch_local(job, workers, keep_fds=(lock.fd,) if lock else ())
    elif needs_group:
        summary = _run_one_rank_group(job)
    else:
        summary = run_worker(job, 0, 1, 0) or {}
    if summary.get("status") == "finished":
        summary.setdefault("run_dir", str(run_dir))
    return FitResult(run_dir, summary)


def _run_one_rank_group(job) -> dict:
    """A group of one rank in this process (e.g. ddp with workers=1), on a store we host."""
    from paratrain.launch.env import loopback_store
    from paratrain.launch.worker import run_worker

    store = loopback_store(1, job.config.parallel.timeout_s)
    return run_worker(job, 0, 1, 0, store) or {}


def _world_size(config: FitConfig) -> int:
    if under_torchrun():
        return int(os.environ["WORLD_SIZE"])
    return config.parallel.workers


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _check_data(config: FitConfig, source: Any, workers: int) -> None:
    """Fail on bad data here, before any directory is made or process started."""
    frame = load_frame(source)
    _, train_idx, _ = fit_encoder(config, frame)
    shard_indices(train_idx, 0, workers)  # DataError when there are fewer rows than workers


def _new_run_dir(config: FitConfig) -> Path:
    if config.output.out:
        run_dir = Path(config.output.out)
    elif under_torchrun():
        # Every rank must agree on the directory without talking: derive it from the job id.
        run_dir = Path("runs") / f"torchrun-{os.environ.get('TORCHELASTIC_RUN_ID', 'job')}"
    else:
        run_dir = rundir.default_run_dir(config.parallel.strategy)
    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:
        rundir.check_new_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, config)
    return run_dir
