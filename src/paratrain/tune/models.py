"""The models a search can tune, each with a default search space.

Two kinds: ``train`` models (mlp, formula) are trained by :func:`paratrain.train.fit.fit`
epoch by epoch, so a pruner can stop them early; ``sklearn`` models (svr, gp,
random_forest, gradient_boosting) are fitted in one call and never pruned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from paratrain.errors import ConfigError
from paratrain.tune.space import SearchSpace

DERIVED_MLP_PARAMS = ("n_layers", "units")
"""Space names that are not config fields: hidden = (units,) * n_layers."""

_NOT_TUNABLE = {"path", "target", "out", "verbosity", "stop_after", "workers", "threads", "strategy",
                "model", "timeout_s", "device"}
"""Fit fields a search must not draw: where data and results live, and what the planner decides."""


@dataclass(frozen=True)
class TunableModel:
    """A model family a search can tune."""

    name: str
    kind: str
    """'train' (epochs, prunable) or 'sklearn' (one fit, not prunable)."""
    description: str
    default_space: Callable[[], dict[str, Any]]
    param_names: Callable[[], set[str]]
    """Names a space may use for this model."""

    @property
    def prunable(self) -> bool:
        return self.kind == "train"


def _mlp_space() -> dict[str, Any]:
    return {
        "n_layers": {"type": "int", "low": 1, "high": 4},
        "units": {"type": "int", "low": 16, "high": 256, "log": True},
        "activation": {"type": "categorical", "choices": ["relu", "gelu", "tanh", "silu"]},
        # Dropout matters little in a shallow net; drawing it only for deep ones
        # keeps the space small where it does not pay.
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "when": "n_layers > 2"},
        "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
    }


def _formula_space() -> dict[str, Any]:
    return {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128, 256]},
    }


def fit_field_names() -> set[str]:
    """Every flat field name of FitConfig, with the strategies' own options (``sync_warmup``: a flat
    key routed to ``parallel.options``) in place of the ``options`` dict itself."""
    from paratrain.config import FitConfig, strategy_option_names

    names = set()
    for section in dataclasses.fields(FitConfig):
        names.update(f.name for f in dataclasses.fields(section.default_factory))
    return (names - {"options"}) | strategy_option_names()


def _train_param_names() -> set[str]:
    return (fit_field_names() - _NOT_TUNABLE) | set(DERIVED_MLP_PARAMS)


def _sklearn(name: str) -> Callable[[], Any]:
    def get() -> Any:
        from paratrain.tune import sklearn_models

        return sklearn_models.ESTIMATORS[name]
    return get


def _sklearn_model(name: str, description: str) -> TunableModel:
    return TunableModel(name, "sklearn", description,
                        default_space=lambda: dict(_sklearn(name)().default_space),
                        param_names=lambda: set(_sklearn(name)().param_names))


MODELS: dict[str, TunableModel] = {
    "mlp": TunableModel("mlp", "train", "paratrain MLP", _mlp_space, _train_param_names),
    "formula": TunableModel("formula", "train", "paratrain formula model (--formula or --family)",
                            _formula_space, _train_param_names),
    "svr": _sklearn_model("svr", "scikit-learn SVR, RBF kernel"),
    "gp": _sklearn_model("gp", "scikit-learn GaussianProcessRegressor, Matern kernel"),
    "random_forest": _sklearn_model("random_forest", "scikit-learn RandomForestRegressor"),
    "gradient_boosting": _sklearn_model("gradient_boosting", "scikit-learn HistGradientBoostingRegressor"),
}


def known_models() -> list[str]:
    return list(MODELS)


def get_model(name: str) -> TunableModel:
    """The model by name; an unknown name lists the known ones."""
    if name not in MODELS:
        raise ConfigError(f"model={name!r} is not one of: {', '.join(MODELS)}")
    return MODELS[name]


def check_space_names(model: TunableModel, space: SearchSpace) -> None:
    """Every parameter must be something the model can use, named in the error otherwise."""
    allowed = model.param_names()
    for name in space.names:
        if name not in allowed:
            hint = ("; fields that say where data and results go, and workers/threads/strategy "
                    "(set by the planner), are not tunable" if name in _NOT_TUNABLE else "")
            raise ConfigError(f"space parameter '{name}' is not a parameter of model {model.name!r}{hint}; "
                              f"known: {', '.join(sorted(allowed))}")


def train_config_values(params: Mapping[str, Any], fixed_hidden: tuple[int, ...]) -> dict[str, Any]:
    """Turn drawn parameters into FitConfig fields (n_layers and units become hidden)."""
    from paratrain.config import parse_int_list

    values = {k: v for k, v in params.items() if k not in DERIVED_MLP_PARAMS}
    if "n_layers" in params or "units" in params:
        layers = int(params.get("n_layers", len(fixed_hidden) or 1))
        units = int(params.get("units", fixed_hidden[0] if fixed_hidden else 64))
        values["hidden"] = (units,) * layers
    if isinstance(values.get("hidden"), str):
        values["hidden"] = parse_int_list("hidden", values["hidden"])
    return values
