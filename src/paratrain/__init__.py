"""paratrain: train MLPs and nonlinear regression models using every core, GPU and machine.

The public names are imported lazily, so that the command line starts fast.

Example:
    >>> from paratrain import MLPRegressor
    >>> model = MLPRegressor(hidden_layer_sizes=(64, 64), epochs=20)  # doctest: +SKIP
    >>> model.fit(X, y).score(X, y)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MLPRegressor": "paratrain.estimators",
    "MLPClassifier": "paratrain.estimators",
    "FormulaRegressor": "paratrain.estimators",
    "FitConfig": "paratrain.config",
    "fit": "paratrain.train.fit",
    "resume": "paratrain.train.fit",
    "TrainedModel": "paratrain.predict",
    "parse_formula": "paratrain.models.formula",
    "curve_fit": "paratrain.curvefit",
    "tune": "paratrain.tune",
    "TuneResult": "paratrain.tune.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'paratrain' has no attribute {name!r}")
