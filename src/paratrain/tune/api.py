"""``paratrain.tune.tune``: search a model's hyperparameters, then retrain the best.

The steps: check every input (names, space, data) before any process starts;
create or continue the study; run trials in parallel worker processes; write
the results; retrain the best configuration on all rows as a run directory.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from paratrain.errors import ConfigError
from paratrain.tune.leaderboard import Leaderboard, format_params, format_value
from paratrain.tune.models import check_space_names, get_model
from paratrain.tune.objectives import MODEL_OBJECTIVES
from paratrain.tune.planner import plan_resources, visible_gpus
from paratrain.tune.runner import cap_to_grid, check_trials, run_study
from paratrain.tune.samplers import check_pruner, check_sampler
from paratrain.tune.space import SearchSpace
from paratrain.tune.study import StudySpec, is_url, redact

BEST_MODEL_DIR = "best_model"
JOURNAL_FILE = "study.journal"


@dataclass
class TuneResult:
    """Where a search went and what it found."""

    out_dir: Path
    study_name: str
    storage: str = field(repr=False)  # may hold a database password: never printed
    best_params: dict[str, Any] | None
    best_value: float | None
    best_trial: int | None
    best_model_dir: Path | None
    summary: dict[str, Any] = field(default_factory=dict)
    """The content of study.json."""

    def load_study(self) -> Any:
        """The Optuna study, re-opened from its storage."""
        import optuna

        from paratrain.tune.study import open_storage

        return optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage))


def tune(data: Any = None, target: str | None = None, model: str = "mlp",
         space: SearchSpace | Mapping[str, Any] | str | Path | None = None, sampler: str = "tpe",
         pruner: str = "asha", trials: int = 64, parallel: int = 1, workers_per_trial: int = 1,
         out: str | Path | None = None, storage: str | None = None, study_name: str | None = None,
         fixed: Mapping[str, Any] | None = None, objectives: Sequence[str] | None = None, seed: int = 0,
         sampler_options: Mapping[str, Any] | None = None, pruner_options: Mapping[str, Any] | None = None,
         stop_at: float | None = None, retrain: bool = True, verbosity: int = 1,
         stream: TextIO | None = None) -> TuneResult:
    """Search hyperparameters of ``model`` on ``data``; trials run ``parallel`` at a time.

    Args:
        data: Table path (CSV, Parquet, NPZ) or a DataFrame (saved as ``out/data.csv`` for the workers).
        target: Target column.
        model: mlp, formula, svr, gp, random_forest or gradient_boosting.
        space: Search space (dict, YAML path or SearchSpace); default: the model's own.
        sampler: grid, random, tpe, gp, cmaes, nsga2 or qmc.
        pruner: asha, hyperband, median or none (scikit-learn models and several objectives: none).
        trials: COMPLETE + PRUNED trials to reach; failed trials do not count.
        parallel: Trials at once, each in its own process (fitted to the cores by the planner).
        workers_per_trial: Data-parallel (ddp) workers inside each trial.
        out: Study directory: journal storage, trial runs, results. Running again continues the study.
        storage: An RDB URL (e.g. postgresql://...) instead of the journal file in ``out``.
        study_name: Name in the storage (default: the name of ``out``).
        fixed: Fit config fields that are not searched (epochs, optimizer, ...).
        objectives: ('val_loss',) by default; ('val_loss', 'seconds') for nsga2.
        seed: Seed of the samplers.
        stop_at: Start no more trials once one reaches this value of the first objective.
        retrain: Retrain the best configuration on all rows into ``out/best_model``.
        verbosity: 0 quiet, 1 progress.

    Example:
        >>> result = tune(data="data.csv", target="y", model="mlp", trials=16, parallel=2,
        ...               out="runs/tune-demo", fixed={"epochs": 10})  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
    """
    # Names and numbers first, before torch is imported (seconds): a typo fails at once.
    started = time.perf_counter()
    stream = stream or sys.stderr
    check_sampler(sampler)
    check_pruner(pruner)
    check_trials(trials)
    tunable = get_model(model)
    search_space = SearchSpace.load(space) if space is not None else SearchSpace.from_dict(tunable.default_space())
    check_space_names(tunable, search_space)
    names = _objective_names(objectives, sampler)
    out_dir = Path(out) if out else Path("runs") / datetime.datetime.now().strftime("tune-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed_config = _fixed_config(fixed, _data_path(data, out_dir), target, tunable, workers_per_trial)
    notes = []
    effective_pruner = pruner
    if pruner != "none" and not tunable.prunable:
        notes.append(f"pruner '{pruner}' is off: scikit-learn models fit in one call, with no epochs to stop early")
        effective_pruner = "none"
    elif pruner != "none" and len(names) > 1:
        notes.append(f"pruner '{pruner}' is off: Optuna's pruners handle a single objective")
        effective_pruner = "none"
    spec = StudySpec(objective={"kind": "model", "model": model, "fixed": fixed_config},
                     space=search_space.to_dict(), sampler=sampler, pruner=effective_pruner, trials=trials,
                     objectives=names, seed=seed, sampler_options=dict(sampler_options or {}),
                     pruner_options=dict(pruner_options or {}), max_resource=_max_epochs(search_space, fixed_config),
                     workers_per_trial=workers_per_trial, out=str(out_dir.resolve()), stop_value=stop_at)
    notes.append(cap_to_grid(spec, search_space))
    uses_gpu = tunable.kind == "train" and fixed_config["train"]["device"] != "cpu"
    plan = plan_resources(parallel, workers_per_trial, gpus=visible_gpus() if uses_gpu else (), trials=spec.trials)
    storage_ref = storage or str((out_dir / JOURNAL_FILE).resolve())
    name = study_name or out_dir.resolve().name
    if verbosity > 0:
        _print_header(stream, name, storage_ref, spec, search_space, space is None, plan.describe(), notes)
    study = run_study(spec, storage_ref, name, plan, out_dir, verbosity, stream)
    from paratrain.train.checkpoint import save_json_atomic
    from paratrain.tune.report import write_results

    best_model_dir = _retrain_best(study, spec, out_dir, verbosity, stream) if retrain else None
    summary, plot_notes = write_results(study, spec, out_dir, time.perf_counter() - started)
    summary["best_model"] = str(best_model_dir) if best_model_dir else None
    summary["storage"] = redact(storage_ref)
    save_json_atomic(summary, out_dir / "study.json")
    if verbosity > 0:
        _print_footer(stream, study, spec, summary, plot_notes, out_dir)
    return TuneResult(out_dir, name, storage_ref, summary["best_params"], summary["best_value"],
                      summary["best_trial"], best_model_dir, summary)


def _objective_names(objectives: Sequence[str] | None, sampler: str) -> tuple[str, ...]:
    if objectives is None:
        return ("val_loss", "seconds") if sampler == "nsga2" else ("val_loss",)
    names = tuple(objectives)
    for item in names:
        if item not in MODEL_OBJECTIVES:
            raise ConfigError(f"objective {item!r} is not one of: {', '.join(MODEL_OBJECTIVES)}")
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"objectives={list(names)} must name each of {', '.join(MODEL_OBJECTIVES)} at most once")
    return names


def _data_path(data: Any, out_dir: Path) -> str | None:
    """Workers read the data from a file: a DataFrame is written once into the study directory."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        from paratrain.train.checkpoint import save_text_atomic

        path = out_dir / "data.csv"
        save_text_atomic(data.to_csv(index=False), path)
        return str(path.resolve())
    return str(Path(data).expanduser().resolve()) if data is not None else None


def _fixed_config(fixed: Mapping[str, Any] | None, path: str | None, target: str | None, tunable: Any,
                  workers_per_trial: int) -> dict[str, Any]:
    """The resolved fit config every trial starts from, checked against the data now."""
    from paratrain.config import FitConfig
    from paratrain.data.prepare import fit_encoder, load_frame

    values = dict(fixed or {})
    for key, value in (("path", path), ("target", target)):
        if value is not None:
            values[key] = value
    values["model"] = tunable.name if tunable.kind == "train" else "mlp"  # sklearn: encode as for an MLP
    # A trial is never resumed: skip its per-epoch checkpoint (an fsync'd save of model and
    # optimizer, measured at 12% of a one-second trial) unless the fixed config asks for one.
    train_section = values.get("train") if isinstance(values.get("train"), Mapping) else {}
    if "checkpoint_every" not in values and "checkpoint_every" not in train_section:
        values["checkpoint_every"] = 0
    if workers_per_trial > 1:
        given = values.get("workers")
        if given not in (None, workers_per_trial):
            raise ConfigError(f"workers={given} and workers_per_trial={workers_per_trial} disagree; give one of them")
        values["workers"] = workers_per_trial
        values.setdefault("strategy", "ddp")
    config = FitConfig.from_dict(values)
    if config.data.val_fraction <= 0:
        raise ConfigError(f"val_fraction={config.data.val_fraction} leaves no validation rows; a search needs them")
    fit_encoder(config, load_frame(config.data.path))  # DataError naming the file, column or row
    resolved = config.to_dict()
    resolved.pop("output")  # where a trial writes and how loud it is are set per trial
    return resolved


def _max_epochs(space: SearchSpace, fixed: dict[str, Any]) -> int:
    for param in space.params:
        if param.name == "epochs":
            return int(getattr(param, "high", max(getattr(param, "choices", [1]))))
    return int(fixed["train"]["epochs"])


def _retrain_best(study: Any, spec: StudySpec, out_dir: Path, verbosity: int, stream: TextIO) -> Path | None:
    """Train the best configuration on every row into out/best_model (once per best trial)."""
    from paratrain.train.checkpoint import save_json_atomic
    from paratrain.tune.report import best_trial

    best = best_trial(study)
    final = out_dir / BEST_MODEL_DIR
    if best is None:
        if verbosity > 0:
            print("no complete trial: nothing to retrain", file=stream)
        return None
    marker = final / "tune_trial.json"
    if marker.is_file() and _read_json(marker).get("trial") == best.number:
        return final  # this best was retrained by an earlier run of the same search
    if verbosity > 0:
        print(f"retraining trial {best.number} on all rows -> {final}", file=stream, flush=True)
    staging = out_dir / f".best_model-{time.time_ns()}"
    model = spec.objective["model"]
    fixed = spec.objective["fixed"]
    if get_model(model).kind == "sklearn":
        from paratrain.data.prepare import load_frame
        from paratrain.tune import sklearn_models
        from paratrain.launch.resources import usable_cores

        config = sklearn_models.encoding_config(fixed)
        sklearn_models.retrain(model, dict(best.params), load_frame(config.data.path), config, staging,
                               threads=usable_cores())
    else:
        from paratrain.config import FitConfig
        from paratrain.train.fit import fit
        from paratrain.tune.models import train_config_values

        base = FitConfig.from_dict(fixed)
        values = train_config_values(best.params, base.model.hidden)
        fit(base.updated({**values, "val_fraction": 0.0, "out": str(staging), "verbosity": 0}))
    save_json_atomic({"trial": best.number, "params": best.params, "values": dict(zip(spec.objectives, best.values))},
                     staging / "tune_trial.json")
    # Swap in the new directory only once it is complete: a reader never sees half a model.
    old = out_dir / f".best_model-old-{time.time_ns()}"
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _print_header(stream: TextIO, name: str, storage_ref: str, spec: StudySpec, space: SearchSpace,
                  is_default: bool, plan: str, notes: list[str | None]) -> None:
    storage = f"journal file {storage_ref}" if not is_url(storage_ref) else redact(storage_ref)
    lines = [f"paratrain tune: study '{name}' in {storage}",
             f"model {spec.objective['model']}, sampler {spec.sampler}, pruner {spec.pruner}, "
             f"{spec.trials} trials (complete + pruned), minimizing {', '.join(spec.objectives)}",
             f"search space{' (default for ' + spec.objective['model'] + ')' if is_default else ''}:",
             space.describe(), plan]
    lines += [f"note: {note}" for note in notes if note]
    print("\n".join(lines), file=stream, flush=True)


def _print_footer(stream: TextIO, study: Any, spec: StudySpec, summary: dict[str, Any], notes: list[str],
                  out_dir: Path) -> None:
    board = Leaderboard(spec.trials, spec.objectives, stream)
    lines = [board.table(study.get_trials(deepcopy=False))]
    lines.append(f"{summary['n_complete']} complete, {summary['n_pruned']} pruned, {summary['n_failed']} failed "
                 f"in {summary['wall_seconds']:.1f}s")
    if summary["best_trial"] is not None:
        lines.append(f"best trial {summary['best_trial']}: {spec.objectives[0]}={format_value(summary['best_value'])}"
                     f"  {format_params(summary['best_params'])}")
    lines += [f"note: {note}" for note in notes]
    lines.append(f"results in {out_dir}: study.json, best_params.json, trials.csv, plots/"
                 + (f", {BEST_MODEL_DIR}/" if summary.get("best_model") else ""))
    print("\n".join(lines), file=stream, flush=True)
