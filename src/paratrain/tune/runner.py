"""Run a study to its budget: in this process, or in P worker processes.

Shared by :func:`paratrain.tune.tune` (models) and :func:`run_function_study`
(plain functions, which is how samplers and pruners are tested on known
functions in milliseconds per trial).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from paratrain.errors import ConfigError
from paratrain.tune.leaderboard import Leaderboard
from paratrain.tune.planner import ResourcePlan, plan_resources
from paratrain.tune.samplers import DEFAULT_GRID_POINTS, check_pruner, check_sampler
from paratrain.tune.space import SearchSpace
from paratrain.tune.study import (StudySpec, budget_lock, create_or_continue, fail_dead_trials,
                                  fail_stale_rdb_trials, is_url, load_study, open_storage, run_trials)


def check_trials(trials: Any) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials={trials!r} must be an integer >= 1")


def cap_to_grid(spec: StudySpec, space: SearchSpace) -> str | None:
    """A grid has only so many points: more trials would repeat them. Returns a note if capped."""
    if spec.sampler != "grid":
        return None
    size = space.grid_size(int(spec.sampler_options.get("grid_points", DEFAULT_GRID_POINTS)))
    if spec.trials > size:
        note = f"the grid has {size} points: running {size} trials, not {spec.trials}"
        spec.trials = size
        return note
    return None


def run_study(spec: StudySpec, storage_ref: str | None, study_name: str, plan: ResourcePlan, out_dir: Path,
              verbosity: int = 1, stream: TextIO | None = None, data: str | None = None) -> Any:
    """Create or continue the study; run trials in worker processes until ``spec.trials`` are done.

    ``storage_ref`` must be one other processes can open (a journal file or an RDB URL).
    """
    import optuna

    from paratrain.tune.executor import Coordinator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_ref)
    study = create_or_continue(storage, study_name, spec)
    leaderboard = Leaderboard(spec.trials, spec.objectives, stream, enabled=verbosity > 0)
    # Trials left RUNNING by a search that was killed: fail them now so their budget is used again.
    lock = budget_lock(storage_ref, storage, study_name)
    stale = fail_dead_trials(study, lock=lock)
    if is_url(storage_ref):
        fail_stale_rdb_trials(study)
    if stale and verbosity > 0:
        print(f"trial(s) {', '.join(map(str, stale))} were left running by a killed worker: marked failed",
              file=stream or sys.stderr)
    Coordinator(study, storage_ref, plan, out_dir, leaderboard, spec.trials, data=data, stream=stream,
                stop_value=spec.stop_value, lock=lock).run()
    return study


def run_function_study(objective: Callable[[dict, Any], Any], space: SearchSpace | Mapping[str, Any] | str | Path, *,
                       sampler: str = "tpe", pruner: str = "none", trials: int = 50, parallel: int = 1,
                       objectives: Sequence[str] = ("value",), storage: str | None = None,
                       study_name: str | None = None, out: str | Path | None = None, seed: int = 0,
                       sampler_options: Mapping[str, Any] | None = None,
                       pruner_options: Mapping[str, Any] | None = None, max_resource: int | None = None,
                       verbosity: int = 0, stream: TextIO | None = None) -> Any:
    """Search ``space`` for the minimum of a plain function; returns the Optuna study.

    ``objective(params, trial)`` returns one float per name in ``objectives``; it may
    call ``trial.report(value, step)`` and raise ``optuna.TrialPruned`` when
    ``trial.should_prune()``. With ``parallel > 1`` it runs in worker processes, so it
    must be a top-level function of an importable module, and the study lives in a
    journal file under ``out`` (a temporary folder if not given) or in ``storage``.

    Example:
        >>> def sphere(params, trial):
        ...     return params["x"] ** 2
        >>> study = run_function_study(sphere, {"x": {"type": "float", "low": -1, "high": 1}},
        ...                            sampler="random", trials=20)  # doctest: +SKIP
        >>> study.best_value < 0.1  # doctest: +SKIP
        True
    """
    from paratrain.tune.objectives import function_ref

    check_sampler(sampler)
    check_pruner(pruner)
    check_trials(trials)
    search_space = SearchSpace.load(space)
    in_process = parallel == 1
    if in_process:
        spec_objective = {"kind": "function", "ref": "<in-process>"}
    else:
        spec_objective = {"kind": "function", "ref": function_ref(objective)}
    if out:
        out_dir = Path(out)
    else:  # worker processes need a journal file; one process can keep the study in memory
        out_dir = Path(".") if in_process else Path(tempfile.mkdtemp(prefix="paratrain-tune-"))
    if storage is None and not in_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        storage = str((out_dir / "study.journal").resolve())
    spec = StudySpec(objective=spec_objective, space=search_space.to_dict(), sampler=sampler, pruner=pruner,
                     trials=trials, objectives=tuple(objectives), seed=seed,
                     sampler_options=dict(sampler_options or {}), pruner_options=dict(pruner_options or {}),
                     max_resource=max_resource, out=str(out_dir))
    cap_to_grid(spec, search_space)
    plan = plan_resources(1 if in_process else parallel, 1, cpus=None, trials=spec.trials)
    if in_process:
        return _run_in_process(objective, spec, storage, study_name or "paratrain-function", plan, out_dir,
                               verbosity, stream)
    return run_study(spec, storage, study_name or "paratrain-function", plan, out_dir, verbosity, stream)


def _run_in_process(objective: Callable, spec: StudySpec, storage_ref: str | None, study_name: str,
                    plan: ResourcePlan, out_dir: Path, verbosity: int, stream: TextIO | None) -> Any:
    """The function is called directly: no import by name, so lambdas and closures work too."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_ref)
    create_or_continue(storage, study_name, spec)
    study = load_study(storage, study_name, spec, worker="0")
    leaderboard = Leaderboard(spec.trials, spec.objectives, stream, enabled=verbosity > 0)
    leaderboard.start(study.get_trials(deepcopy=False))
    run_trials(study, spec, objective, budget_lock(storage_ref, storage, study_name),
               on_trial_end=lambda _: leaderboard.update(study.get_trials(deepcopy=False)))
    return study


def join_study(storage_ref: str, study_name: str, parallel: int = 1, out: str | Path | None = None,
               data: str | None = None, wait_s: float = 60.0, verbosity: int = 1,
               stream: TextIO | None = None) -> dict[str, int]:
    """Add this machine's workers to a study someone started with ``paratrain tune``.

    Everything but the storage and the name comes from the study itself. Returns the
    trial counts per state when the budget is reached.
    """
    import time

    import optuna

    from paratrain.tune.executor import Coordinator
    from paratrain.tune.planner import visible_gpus
    from paratrain.tune.study import count_states, load_spec, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stream = stream or sys.stderr
    storage = open_storage(storage_ref)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
            spec = load_spec(study)
            break
        except (KeyError, ConfigError):  # not created yet, or created but its spec not yet stored
            if time.monotonic() >= deadline:
                raise ConfigError(f"study '{study_name}' was not found in {redact(storage_ref)} within {wait_s:g}s; "
                                  "start it with `paratrain tune ... --storage URL --study-name NAME`") from None
            time.sleep(0.5)
    out_dir = Path(out) if out else (Path(spec.out) if spec.out and Path(spec.out).is_dir()
                                     else Path(f"tune-{study_name}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_data_here(spec, data)
    fixed = spec.objective.get("fixed", {})
    uses_gpu = spec.objective.get("kind") == "model" and fixed.get("train", {}).get("device", "cpu") != "cpu"
    plan = plan_resources(parallel, spec.workers_per_trial, gpus=visible_gpus() if uses_gpu else ())
    if verbosity > 0:
        print(f"paratrain tune-worker: joining study '{study_name}' in {redact(storage_ref)}; trial runs in {out_dir}\n"
              f"{plan.describe()}", file=stream, flush=True)
    lock = budget_lock(storage_ref, storage, study_name)
    fail_dead_trials(study, lock=lock)
    leaderboard = Leaderboard(spec.trials, spec.objectives, stream, enabled=verbosity > 0)
    Coordinator(study, storage_ref, plan, out_dir, leaderboard, spec.trials, data=data, stream=stream,
                wait_for_others=False, stop_value=spec.stop_value, lock=lock,
                seed_prefix=f"{socket.gethostname()}-{os.getpid()}-").run()
    return count_states(study)


def _check_data_here(spec: StudySpec, data: str | None) -> None:
    """The stored data path was the creating machine's: it must exist here too (or --data)."""
    if spec.objective.get("kind") != "model":
        return
    path = data or spec.objective["fixed"]["data"]["path"]
    if not Path(path).is_file():
        raise ConfigError(f"data file '{path}' (stored in the study) does not exist on this machine; "
                          "copy it here or pass --data PATH")
