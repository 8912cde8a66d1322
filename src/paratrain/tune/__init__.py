"""Hyperparameter search over paratrain and scikit-learn models, trials in parallel processes.

Built on Optuna's samplers, pruners and storages:

- ``space.py``: typed, conditional search spaces (YAML, dict or classes).
- ``models.py``, ``sklearn_models.py``: what can be tuned and its default space.
- ``samplers.py``: samplers and pruners by name.
- ``study.py``: the study spec stored in the study, storages, the budget, one worker's loop.
- ``locks.py``: the journal write lock and the budget lock (both die with their holder).
- ``objectives.py``: what a trial runs (fit with pruning, a scikit-learn fit, a function).
- ``planner.py``: P trials x W workers onto cores and GPUs.
- ``executor.py``, ``worker.py``: worker processes, and noticing killed ones.
- ``leaderboard.py``, ``report.py``: progress lines; study.json, plots.
- ``api.py``, ``runner.py``: :func:`tune` and :func:`run_function_study`.
- ``cli.py``: the ``tune`` and ``tune-worker`` subcommands.

Example:
    >>> from paratrain.tune import tune
    >>> result = tune(data="data.csv", target="y", model="mlp", trials=32, parallel=2,
    ...               out="runs/search")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "tune": "paratrain.tune.api",
    "TuneResult": "paratrain.tune.api",
    "run_function_study": "paratrain.tune.runner",
    "SearchSpace": "paratrain.tune.space",
    "Float": "paratrain.tune.space",
    "Int": "paratrain.tune.space",
    "Categorical": "paratrain.tune.space",
    "plan_resources": "paratrain.tune.planner",
    "SklearnRun": "paratrain.tune.sklearn_models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: `paratrain tune-worker --help` should not wait for optuna and torch to import.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'paratrain.tune' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``paratrain.tune`` is this package *and* the function ``paratrain.tune(...)``.

    Once the package is imported, Python binds the attribute ``paratrain.tune`` to it,
    hiding any function of that name in ``paratrain``: calling the package forwards
    to :func:`paratrain.tune.api.tune` so that both spellings work.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from paratrain.tune.api import tune as run_tune

        return run_tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
