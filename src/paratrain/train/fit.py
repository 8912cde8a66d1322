"""`fit`: check the inputs, make the run directory, start the workers.

The one entry point that the CLI, the estimators and search all call.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from paratrain.config import FitConfig
from paratrain.data.prepare import fit_encoder, load_frame
from paratrain.data.split import shard_indices
from paratrain.errors import ConfigError
from paratrain.launch.env import default_threads
from paratrain.launch.torchrun_env import torchrun_env, under_torchrun
from paratrain.launch.links import parse_link
from paratrain.launch.resources import available_memory_bytes, check_worker_resources, usable_cores
from paratrain.strategies import strategy_class
from paratrain.train import rundir
from paratrain.train.checkpoint import load_torch, save_json_atomic
from paratrain.train.runlock import hold_run_dir
from paratrain.train.tracking import NoEpochLogger, check_tracking, open_tracker

log = logging.getLogger("paratrain")


@dataclass
class FitResult:
    """Where the run went and what it reached."""

    run_dir: Path
    summary: dict[str, Any]


def fit(config: FitConfig, data: pd.DataFrame | None = None, callbacks: Sequence[Any] = (),
        started_at: float | None = None) -> FitResult:
    """Train a model as ``config`` says; ``data`` overrides ``config.data.path``.

    ``callbacks`` have ``on_epoch_end(record) -> bool`` (see train.loop.EpochCallback);
    they run on rank 0 and may stop the run, e.g. to prune a search trial.
    ``started_at`` (Unix time; default: now, or the process start under torchrun) is where
    the summary's ``wall_seconds`` and ``startup_seconds`` count from.

    Example:
        >>> from paratrain.config import FitConfig
        >>> config = FitConfig.from_dict({"path": "data.csv", "target": "y", "epochs": 5})
        >>> result = fit(config)  # doctest: +SKIP
        >>> result.summary["val_r2"]  # doctest: +SKIP
    """
    started_at = _start_time(started_at)
    if data is None and config.data.path:
        # Stored absolute in config.yaml, so that --resume works from any folder.
        config = config.updated({"path": _absolute(config.data.path)})
    source = data if data is not None else config.data.path
    config, choice, table = _resolve_auto(config, source)
    workers = _world_size(config)
    _check_device(config)
    _check_link(config)
    _check_restarts(config)
    check_tracking(config)
    frame = _check_data(config, source if table is None else table, workers)
    _check_workers(config, int(frame.memory_usage(deep=True).sum()))
    run_dir = _run_dir_path(config)
    plan = _restart_plan(run_dir, config)
    if plan == rundir.RESTART_FINISHED:
        log.info("%s: this run finished there before the restart; nothing left to train", run_dir)
        summary = json.loads((run_dir / rundir.SUMMARY_FILE).read_text())
        return FitResult(run_dir, summary if _is_main() else {})
    if plan == rundir.RESTART_RESUME:
        result = _resume_restarted(config, source, run_dir, tuple(callbacks), started_at)
    else:
        run_dir, created = _new_run_dir(config, run_dir)
        with hold_run_dir(run_dir, lock=_is_dispatcher()) as lock:
            result = _dispatch(config, source, run_dir, resume=False, callbacks=tuple(callbacks),
                               started_at=started_at, created=created, lock=lock)
    if choice and result.summary.get("status") == "finished":
        result.summary.update(choice)
        if _is_main():
            save_json_atomic(result.summary, run_dir / rundir.SUMMARY_FILE)
    return result


def _restart_plan(run_dir: Path, config: FitConfig) -> str:
    """A worker that torchrun's agent restarted (restart_count > 0) continues the run it finds in
    ``run_dir`` (rundir.restart_plan); any other process starts a new run."""
    env = torchrun_env()
    if env is None or env.restart_count == 0:
        return rundir.RESTART_NEW
    plan = rundir.restart_plan(run_dir, config)
    if env.is_main:
        log.info("restart %d of torchrun's agent: %s", env.restart_count,
                 {rundir.RESTART_RESUME: f"resuming {run_dir} from its last checkpoint",
                  rundir.RESTART_NEW: f"no checkpoint in {run_dir} yet, starting the run over there",
                  rundir.RESTART_FINISHED: f"{run_dir} holds the finished run"}[plan])
    return plan


def _resume_restarted(config: FitConfig, source: Any, run_dir: Path, callbacks: tuple,
                      started_at: float) -> FitResult:
    """Continue this run from ``run_dir``'s checkpoint on the (possibly smaller or larger) group
    torchrun restarted; a sharded checkpoint reshards to the new world size (train/checkpointing.py)."""
    with hold_run_dir(run_dir, lock=_is_dispatcher()) as lock:
        if _is_main():
            removed = rundir.remove_temp_files(run_dir)  # of writes the killed group never finished
            if removed:
                log.info("removed %d unfinished temp file(s) of an interrupted write: %s", len(removed),
                         ", ".join(removed))
        return _dispatch(config, source, run_dir, resume=True, callbacks=callbacks, started_at=started_at,
                         lock=lock)


def _resolve_auto(config: FitConfig, source: Any) -> tuple[FitConfig, dict[str, str] | None, pd.DataFrame | None]:
    """strategy 'auto' becomes the cost model's choice (costmodel.auto), before anything is checked or
    launched; also returns the table it read (None when it read none), so that it is read once."""
    if config.parallel.strategy != "auto":
        return config, None, None
    from paratrain.costmodel.auto import resolve_auto

    frame = _check_data(config.updated({"strategy": "single", "workers": 1}), source, 1)
    config, choice, reason = resolve_auto(config, frame)
    return config, {"strategy_choice": choice, "strategy_reason": reason}, frame


def resume(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None,
           started_at: float | None = None) -> FitResult:
    """Continue a stopped run from its last checkpoint, to the epochs in its config.

    ``overrides`` are config fields to change, e.g. ``{"epochs": 40}`` or ``{"path": ...}``
    when the data file has moved.
    """
    started_at = _start_time(started_at)
    run_dir = Path(run_dir)
    _check_resumable(run_dir)
    # Locked before anything is read or written: a run still going there must not be joined.
    with hold_run_dir(run_dir, lock=_is_dispatcher()) as lock:
        config = rundir.read_config(run_dir)
        overrides = dict(overrides or {})
        if overrides.get("path"):
            overrides["path"] = _absolute(overrides["path"])
        # stop_after limits one session; a resumed session trains on unless asked again.
        config = config.updated({"stop_after": None, **overrides})
        summary_path = run_dir / rundir.SUMMARY_FILE
        if summary_path.is_file() and json.loads(summary_path.read_text()).get("epochs", 0) >= config.train.epochs:
            raise ConfigError(f"run '{run_dir}' already finished its {config.train.epochs} epochs; "
                              "raise --epochs to train on")
        done = _checkpoint_epoch(run_dir)
        if done >= config.train.epochs:
            raise ConfigError(f"epochs={config.train.epochs} must be more than the {done} epochs that '{run_dir}' "
                              f"has trained already; give --epochs above {done}")
        source = _absolute(config.data.path)
        if source is None or not Path(source).is_file():
            raise ConfigError(f"cannot resume '{run_dir}': its data file '{config.data.path}' does not exist; "
                              f"give its place with --data FILE")
        _check_device(config)
        _check_link(config)
        _check_restarts(config)
        check_tracking(config)
        _check_workers(config, Path(source).stat().st_size)
        if _is_main():
            rundir.write_config(run_dir, config)
            removed = rundir.remove_temp_files(run_dir)
            if removed:
                log.info("removed %d unfinished temp file(s) of an interrupted write: %s", len(removed),
                         ", ".join(removed))
        return _dispatch(config, source, run_dir, resume=True, started_at=started_at, lock=lock)


def _checkpoint_epoch(run_dir: Path) -> int:
    """Epochs the run's checkpoint holds."""
    return int(load_torch(run_dir / rundir.CHECKPOINT_FILE)["state"]["epoch"])


def _check_resumable(run_dir: Path) -> None:
    """Say what to do with a directory that cannot be resumed."""
    if (run_dir / rundir.CHECKPOINT_FILE).is_file():
        return
    if (run_dir / rundir.CONFIG_FILE).is_file():
        raise ConfigError(
            f"cannot resume '{run_dir}': it has no {rundir.CHECKPOINT_FILE}, the run stopped before its first "
            f"checkpoint; run the same fit command again with --out {run_dir}, which reuses the directory"
        )
    raise ConfigError(f"cannot resume '{run_dir}': it is not a paratrain run directory (no {rundir.CONFIG_FILE})")


def _is_dispatcher() -> bool:
    """The process that holds the run directory's lock: this one, or rank 0 under torchrun."""
    env = torchrun_env()
    return env is None or env.is_main


def _dispatch(config: FitConfig, source: Any, run_dir: Path, resume: bool, callbacks: tuple = (),
              started_at: float | None = None, created: Path | None = None, lock: Any = None) -> FitResult:
    """Run the workers; complete the summary's times; after a failure before the first
    checkpoint, remove the run directory that this run ``created``."""
    started_at = _start_time(started_at)
    tracker = None
    try:
        tracker = open_tracker(config, run_dir, resume) if _is_main() else None
        if config.output.tracking is not None:
            callbacks = (*callbacks, tracker.epoch_logger() if tracker is not None else NoEpochLogger())
        summary = _run_workers(config, source, run_dir, resume, callbacks, lock)
    except BaseException as exc:
        if tracker is not None:
            tracker.fail()
        if not resume and _is_main():
            rundir.remove_if_unstarted(run_dir, created)
        if isinstance(exc, OSError) and exc.filename and Path(run_dir).resolve() in Path(exc.filename).resolve().parents:
            # A run directory that stopped taking writes (full, read-only) is the user's to fix.
            raise rundir.output_error("run directory", run_dir, exc) from exc
        raise
    if summary.get("status") == "finished":
        summary.setdefault("run_dir", str(run_dir))
        summary = _complete_times(summary, started_at, time.time())
        if _is_main():
            save_json_atomic(summary, run_dir / rundir.SUMMARY_FILE)
    if tracker is not None:
        tracker.finish(summary, run_dir)
    return FitResult(run_dir, summary)


def _run_workers(config: FitConfig, source: Any, run_dir: Path, resume: bool, callbacks: tuple,
                 lock: Any = None) -> dict:
    # Imported here: launching pulls in torch.distributed, which the checks above do not need.
    from paratrain.launch.worker import WorkerJob, run_worker

    workers = _world_size(config)
    env = torchrun_env()
    threads = config.parallel.threads or _torchrun_threads(env) or default_threads(env.local_world_size if env else workers)
    job = WorkerJob(config, source, run_dir, resume, threads, callbacks)
    needs_group = strategy_class(config.parallel.strategy).needs_process_group
    if env is not None:
        summary = run_worker(job, env.rank, env.world_size, env.local_rank) or {}
        if summary and env.has_agent:  # rank 0's: how often torchrun's agent restarted this group
            summary["restarts"] = env.restart_count
    elif needs_group and workers > 1:
        from paratrain.launch.local import launch_local
        from paratrain.train.restarts import launch_with_restarts

        link = parse_link(config.parallel.link)
        # The lock's descriptor goes to every worker of every launch: the run directory stays
        # held across restarts.
        summary, restarts = launch_with_restarts(
            job, config.parallel.max_restarts,
            lambda this: launch_local(this, workers, keep_fds=(lock.fd,) if lock else (), link=link))
        summary["restarts"] = restarts
    elif needs_group:
        summary = _run_one_rank_group(job)
    else:
        summary = run_worker(job, 0, 1, 0) or {}
    return summary


def _torchrun_threads(env) -> int | None:
    """Under torchrun, OMP_NUM_THREADS when the launcher set it: torchrun sets 1 for several workers per
    node, and a scheduler's script sets each agent's share; cores // local workers would let two agents
    placed on one machine (two Slurm tasks on one node) each take every core."""
    text = os.environ.get("OMP_NUM_THREADS", "") if env is not None else ""
    return int(text) if text.isdigit() and int(text) > 0 else None


def _run_one_rank_group(job) -> dict:
    """A group of one rank in this process (e.g. ddp with workers=1), on a store we host."""
    from paratrain.launch.store import loopback_store
    from paratrain.launch.worker import run_worker

    store = loopback_store(1, job.config.parallel.timeout_s)
    return run_worker(job, 0, 1, 0, store) or {}


def _world_size(config: FitConfig) -> int:
    env = torchrun_env()
    return env.world_size if env is not None else config.parallel.workers


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _check_data(config: FitConfig, source: Any, workers: int) -> pd.DataFrame:
    """Fail on bad data here, before any directory is made or process started; returns the table."""
    frame = load_frame(source)
    _, train_idx, _ = fit_encoder(config, frame)
    shard_indices(train_idx, 0, workers)  # DataError when there are fewer rows than workers
    return frame


def _check_device(config: FitConfig) -> None:
    """A device that is not there fails here, before a run directory is made for nothing."""
    if config.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but no CUDA device is available; use --device cpu")


def _check_link(config: FitConfig) -> None:
    """An emulated link fails here, before a run directory is made, naming what it lacks."""
    link = parse_link(config.parallel.link)
    if not link.emulated:
        return
    if under_torchrun():
        raise ConfigError(f"link={link.name!r} emulates hosts for the workers this command starts, but torchrun "
                          "started them: their network is real; drop --link (or use --link loopback)")
    from paratrain.launch.netns import check_can_emulate

    check_can_emulate(link)


def _check_restarts(config: FitConfig) -> None:
    """Restarts are for the workers fit starts itself: not under torchrun (torchrun restarts its own), not in one process."""
    if config.parallel.max_restarts > 0 and under_torchrun():
        raise ConfigError(f"max_restarts={config.parallel.max_restarts} relaunches the workers fit starts itself, but "
                          "torchrun started these; drop --max-restarts from the fit command and give torchrun "
                          "--max-restarts N (or paratrain launch --max-restarts N)")
    if config.parallel.max_restarts > 0 and (config.parallel.workers < 2
                                             or not strategy_class(config.parallel.strategy).needs_process_group):
        raise ConfigError(f"max_restarts={config.parallel.max_restarts} relaunches dead worker processes, but "
                          f"strategy={config.parallel.strategy!r} with workers={config.parallel.workers} trains in "
                          "this process; use --workers 2 or more with a multi-process strategy, or drop --max-restarts")


def _check_workers(config: FitConfig, data_bytes: int) -> None:
    """Worker processes the local launcher would start: refuse what memory cannot hold, warn
    when they outnumber the cores. (Under torchrun the processes exist already.)"""
    workers = config.parallel.workers
    if under_torchrun() or workers <= 1 or not strategy_class(config.parallel.strategy).needs_process_group:
        return
    warning = check_worker_resources(workers, usable_cores(), available_memory_bytes(), data_bytes)
    if warning:
        log.warning("%s", warning)


def _run_dir_path(config: FitConfig) -> Path:
    """Where the run goes: --out, else a name every torchrun rank derives alike, else a new dated folder."""
    if config.output.out:
        return Path(config.output.out)
    if under_torchrun():
        # Every rank must agree on the directory without talking: derive it from the job id,
        # which a restarted group keeps, so that it finds its run again.
        return Path("runs") / f"torchrun-{torchrun_env().run_id or 'job'}"
    return rundir.default_run_dir(config.parallel.strategy)


def _new_run_dir(config: FitConfig, run_dir: Path) -> tuple[Path, Path | None]:
    """The run directory, made (or a failed run's taken over) by rank 0, with its config;
    and the topmost folder this made, which a failure before the first checkpoint removes."""
    created = None
    if _is_main():
        try:
            rundir.check_new_run_dir(run_dir)
            created = rundir.make_run_dir(run_dir)
            rundir.write_config(run_dir, config)
        except OSError as exc:  # unreadable, read-only, full: one line naming the place
            rundir.remove_if_unstarted(run_dir, created)
            raise rundir.output_error("run directory", run_dir, exc) from None
    return run_dir, created


def _is_main() -> bool:
    return _is_dispatcher()


def process_start_time(pid: int | str = "self") -> float | None:
    """When process ``pid`` (default: this one) started, in Unix time (Linux /proc; None elsewhere).

    Lets wall_seconds include the interpreter and import start-up that precede fit().
    """
    try:
        # Field 22 of /proc/PID/stat is the start in clock ticks after boot; the name
        # (field 2) may hold spaces, so count from its closing parenthesis.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - started_after_boot)


def _start_time(given: float | None) -> float:
    if given is not None:
        return given
    env = torchrun_env()
    if env is None:
        return time.time()
    # A torchrun rank is a child of torchrun's agent on this machine: count from the agent's
    # start, which is the command's; else from the rank's own.
    agent = process_start_time(os.getppid()) if env.has_agent else None
    return agent or process_start_time() or time.time()


def _complete_times(summary: dict[str, Any], started_at: float, ended_at: float) -> dict[str, Any]:
    """Make wall_seconds the whole command and add startup_seconds beside it.

    The worker measured only its training loop; it reports when that loop began
    (``train_started_at``, Unix time, same machine), so the time before it (process
    launch, data preparation, model build) is startup.
    """
    loop_started = summary.get("train_started_at")
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "train_started_at":
            continue
        if key == "wall_seconds":
            out["wall_seconds"] = ended_at - started_at
            if loop_started is not None:
                out["startup_seconds"] = max(0.0, loop_started - started_at)
            continue
        out[key] = value
    return out
