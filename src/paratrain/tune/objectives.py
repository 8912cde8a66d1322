"""What a trial runs: a plain function, a paratrain training run, or a scikit-learn fit.

Every objective is called as ``objective(params, trial)`` and returns one value per
name in ``StudySpec.objectives`` (all minimized): ``val_loss`` and ``seconds`` for models.
"""

from __future__ import annotations

import importlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from paratrain.errors import ConfigError
from paratrain.tune.study import StudySpec, load_study, open_storage

MODEL_OBJECTIVES = ("val_loss", "seconds")
"""Values a model trial can return; `seconds` is its training wall time."""


@dataclass(frozen=True)
class TrialContext:
    """Where this worker puts trial runs and how many threads each may use."""

    out_dir: Path
    threads: int
    storage_ref: str | None
    study_name: str
    data: str | None = None
    """Data path override (a worker whose machine keeps the file elsewhere)."""


def function_ref(func: Callable) -> str:
    """'module:qualname' of a top-level function, so another process can import it."""
    import sys

    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if module == "__main__":  # `python -m package.module` knows the importable name of __main__
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    if not module or module == "__main__" or "<" in name:
        raise ConfigError(f"objective {func!r} must be a top-level function of an importable module "
                          "(not __main__, a lambda or a nested function) to run in worker processes")
    return f"{module}:{name}"


def import_ref(ref: str) -> Callable:
    module_name, _, name = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import the objective {ref!r}: {exc}") from None
    return target


def build_objective(spec: StudySpec, context: TrialContext) -> Callable[[dict, Any], Any]:
    """The callable a worker's trials run."""
    kind = spec.objective.get("kind")
    if kind == "function":
        return import_ref(spec.objective["ref"])
    if kind != "model":
        raise ConfigError(f"study objective kind={kind!r} is not one of: function, model")
    from paratrain.tune.models import get_model

    model = get_model(spec.objective["model"])
    fixed = dict(spec.objective["fixed"])
    if context.data:
        fixed["path"] = context.data
    if model.kind == "sklearn":
        return SklearnObjective(model.name, fixed, spec.objectives, context.threads)
    return TrainObjective(fixed, spec, context)


def _values(metrics: dict[str, float], names: tuple[str, ...]) -> float | tuple[float, ...]:
    # A diverged run (NaN loss) is a bad result, not a failed trial: inf keeps its budget spent.
    values = [metrics[name] if math.isfinite(metrics[name]) else math.inf for name in names]
    return values[0] if len(values) == 1 else tuple(values)


class TrainObjective:
    """Train with paratrain's ``fit``; report val_loss each epoch so the pruner can stop the run."""

    def __init__(self, fixed: dict[str, Any], spec: StudySpec, context: TrialContext) -> None:
        from paratrain.config import FitConfig

        self.base = FitConfig.from_dict(fixed)
        self.spec = spec
        self.context = context
        self._frame = None

    def _data(self, config: Any) -> Any:
        """The table, read once per worker for in-process trials (a small table's parse
        costs a noticeable share of a one-second trial); multi-worker trials read the file."""
        if config.parallel.workers > 1:
            return None
        if self._frame is None:
            from paratrain.data.prepare import load_frame

            self._frame = load_frame(config.data.path)
        return self._frame

    def __call__(self, params: dict[str, Any], trial: Any) -> Any:
        import optuna

        from paratrain.train.fit import fit
        from paratrain.tune.models import train_config_values

        run_dir = self.context.out_dir / "trials" / f"trial-{trial.number:05d}"
        if run_dir.exists():  # left by a trial of an earlier study in this directory
            shutil.rmtree(run_dir)
        values = train_config_values(params, self.base.model.hidden)
        # The planner's threads, unless the fixed config names its own (--threads).
        threads = self.base.parallel.threads or self.context.threads
        # The fixed config says checkpoint_every=0 unless the user asked for checkpoints (see api.py).
        config = self.base.updated({**values, "out": str(run_dir), "verbosity": 0, "threads": threads})
        callbacks = []
        if len(self.spec.objectives) == 1:  # Optuna takes per-step values of single-objective trials only
            callbacks.append(PruningCallback(self.context.storage_ref, self.context.study_name, trial._trial_id,
                                             self.spec, live_trial=trial))
        summary = fit(config, data=self._data(config), callbacks=callbacks).summary
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("epochs", summary.get("epochs"))
        for key in ("val_r2", "val_accuracy"):
            if key in summary:
                trial.set_user_attr(key, summary[key])
        if summary.get("stopped_by_callback"):
            raise optuna.TrialPruned(f"pruned after epoch {summary.get('epochs')}")
        if "val_loss" not in summary:
            raise ConfigError("the trial run has no validation loss: tuning needs val_fraction > 0")
        metrics = {"val_loss": summary["val_loss"], "seconds": summary["wall_seconds"]}
        return _values(metrics, self.spec.objectives)


class PruningCallback:
    """An epoch callback that reports val_loss to the trial and asks the pruner (``none`` never stops).

    With several data-parallel workers it runs in rank 0's own process: it then re-opens
    the storage from its reference and rebuilds the trial there (the live trial is not
    picklable and is dropped on the way).
    """

    def __init__(self, storage_ref: str | None, study_name: str, trial_id: int, spec: StudySpec,
                 live_trial: Any = None) -> None:
        self.storage_ref = storage_ref
        self.study_name = study_name
        self.trial_id = trial_id
        self.spec = spec
        self._trial = live_trial

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_trial"] = None
        return state

    def _get_trial(self) -> Any:
        if self._trial is None:
            import optuna

            if self.storage_ref is None:
                raise ConfigError("pruning a multi-process trial needs a storage other processes can open")
            study = load_study(open_storage(self.storage_ref), self.study_name, self.spec, worker="pruning")
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        trial = self._get_trial()
        value = record.get("val_loss", record["train_loss"])
        trial.report(value if math.isfinite(value) else math.inf, record["epoch"])
        return bool(trial.should_prune())


class SklearnObjective:
    """Fit a scikit-learn regressor once on the training rows and score the validation rows."""

    def __init__(self, model: str, fixed: dict[str, Any], objectives: tuple[str, ...], threads: int) -> None:
        from paratrain.tune.sklearn_models import encoding_config

        self.model = model
        self.config = encoding_config(fixed)
        self.objectives = objectives
        self.threads = threads
        self._frame = None

    def __call__(self, params: dict[str, Any], trial: Any) -> Any:
        from paratrain.data.prepare import load_frame
        from paratrain.tune import sklearn_models

        if self._frame is None:  # read the table once per worker, not once per trial
            self._frame = load_frame(self.config.data.path)
        metrics = sklearn_models.evaluate(self.model, params, self._frame, self.config, self.threads)
        trial.set_user_attr("val_r2", metrics["val_r2"])
        return _values(metrics, self.objectives)
