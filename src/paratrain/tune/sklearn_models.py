"""scikit-learn's nonlinear regressors as search targets.

They see exactly what an MLP trial sees: the same rows split off for validation
(same seed), the same encoder (one-hot categories, standardized inputs and
target), so their ``val_loss`` (MSE in standardized target units) is comparable
with an MLP's. They fit in one call: there are no epochs to report, so a pruner
never stops them.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from paratrain.errors import ConfigError, DataError

RUN_FILE = "sklearn_model.pkl"
"""What a retrained scikit-learn model's run directory holds (pickle: load only your own runs)."""


@dataclass(frozen=True)
class EstimatorSpec:
    """How to build one estimator from drawn parameters."""

    build: Callable[[dict[str, Any], int, int], Any]
    """(params, seed, threads) -> unfitted estimator."""
    default_space: dict[str, Any]
    param_names: tuple[str, ...] = field(default=())


def _svr(params: dict[str, Any], seed: int, threads: int) -> Any:
    from sklearn.svm import SVR

    return SVR(kernel="rbf", **params)


def _gp(params: dict[str, Any], seed: int, threads: int) -> Any:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    params = dict(params)
    # The kernel's hyperparameters are fitted by marginal likelihood; the search
    # picks its family (nu) and where that fit starts.
    kernel = ConstantKernel(1.0) * Matern(length_scale=params.pop("length_scale", 1.0), nu=params.pop("nu", 2.5))
    kernel = kernel + WhiteKernel(noise_level=params.pop("noise_level", 0.1))
    return GaussianProcessRegressor(kernel=kernel, random_state=seed, **params)


def _random_forest(params: dict[str, Any], seed: int, threads: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(random_state=seed, n_jobs=threads, **params)


def _gradient_boosting(params: dict[str, Any], seed: int, threads: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    # Its own early stopping would hold out rows of its own: the search already has a validation set.
    return HistGradientBoostingRegressor(random_state=seed, early_stopping=False, **params)


ESTIMATORS: dict[str, EstimatorSpec] = {
    "svr": EstimatorSpec(_svr, {
        "C": {"type": "float", "low": 1e-2, "high": 1e3, "log": True},
        "epsilon": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "gamma": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    }, ("C", "epsilon", "gamma", "tol", "shrinking", "max_iter")),
    "gp": EstimatorSpec(_gp, {
        "nu": {"type": "categorical", "choices": [0.5, 1.5, 2.5]},
        "length_scale": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
        "noise_level": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "alpha": {"type": "float", "low": 1e-10, "high": 1e-2, "log": True},
    }, ("nu", "length_scale", "noise_level", "alpha", "normalize_y", "n_restarts_optimizer")),
    "random_forest": EstimatorSpec(_random_forest, {
        "n_estimators": {"type": "int", "low": 50, "high": 400, "log": True},
        "max_depth": {"type": "int", "low": 2, "high": 32, "log": True},
        "min_samples_leaf": {"type": "int", "low": 1, "high": 20, "log": True},
        "max_features": {"type": "float", "low": 0.2, "high": 1.0},
    }, ("n_estimators", "max_depth", "min_samples_leaf", "min_samples_split", "max_features", "bootstrap",
        "max_samples", "criterion")),
    "gradient_boosting": EstimatorSpec(_gradient_boosting, {
        "max_iter": {"type": "int", "low": 50, "high": 500, "log": True},
        "learning_rate": {"type": "float", "low": 1e-2, "high": 0.3, "log": True},
        "max_leaf_nodes": {"type": "int", "low": 8, "high": 64, "log": True},
        "min_samples_leaf": {"type": "int", "low": 5, "high": 50, "log": True},
        "l2_regularization": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
    }, ("max_iter", "learning_rate", "max_leaf_nodes", "max_depth", "min_samples_leaf", "l2_regularization",
        "max_features")),
}


def encoding_config(fixed: Mapping[str, Any]) -> Any:
    """The fit config whose data section and seed the scikit-learn trials use (encoded as for an MLP)."""
    from paratrain.config import FitConfig

    return FitConfig.from_dict({**fixed, "model": "mlp"})


def encoded_data(config: Any, frame: pd.DataFrame):
    """(encoder, x, y, train_idx, val_idx) with the encoding and split an MLP trial uses."""
    from paratrain.data.prepare import encode_table

    table = encode_table(config, frame)
    if table.encoder.task != "regression":
        raise DataError(f"target '{config.data.target}' is a classification target; the scikit-learn models "
                        "here are regressors: use --model mlp for classification")
    return table.encoder, table.x.astype(np.float64), table.y.astype(np.float64), table.train_idx, table.val_idx


def evaluate(model: str, params: dict[str, Any], frame: pd.DataFrame, config: Any, threads: int) -> dict[str, float]:
    """Fit on the training rows, score on the validation rows: val_loss (MSE), val_r2, seconds."""
    from threadpoolctl import threadpool_limits

    _, x, y, train_idx, val_idx = encoded_data(config, frame)
    estimator = ESTIMATORS[model].build(dict(params), config.train.seed, threads)
    started = time.perf_counter()
    # OpenMP/BLAS pools follow the planner's threads, so parallel trials do not fight over cores.
    with threadpool_limits(threads):
        estimator.fit(x[train_idx], y[train_idx])
        predicted = estimator.predict(x[val_idx])
    seconds = time.perf_counter() - started
    errors = predicted - y[val_idx]
    mse = float(np.mean(errors**2))
    variance = float(np.var(y[val_idx])) or 1.0
    return {"val_loss": mse, "val_r2": 1.0 - mse / variance, "seconds": seconds}


def retrain(model: str, params: dict[str, Any], frame: pd.DataFrame, config: Any, run_dir: Path,
            threads: int) -> dict[str, Any]:
    """Fit on every row and write a run directory holding the estimator and its encoder."""
    from threadpoolctl import threadpool_limits

    from paratrain.train.checkpoint import save_json_atomic

    encoder, x, y, _, _ = encoded_data(config, frame)
    estimator = ESTIMATORS[model].build(dict(params), config.train.seed, threads)
    started = time.perf_counter()
    with threadpool_limits(threads):
        estimator.fit(x, y)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps({"format": 1, "model": model, "params": params, "estimator": estimator,
                            "encoder": encoder.to_dict()})
    _write_bytes(run_dir / RUN_FILE, payload)
    summary = {"status": "finished", "model": model, "params": params, "n_train": len(frame),
               "wall_seconds": time.perf_counter() - started, "run_dir": str(run_dir)}
    save_json_atomic(summary, run_dir / "summary.json")
    return summary


class SklearnRun:
    """A retrained scikit-learn model with its encoder: ``SklearnRun.load(dir).predict(frame)``.

    Example:
        >>> run = SklearnRun.load("tune-out/best_model")  # doctest: +SKIP
        >>> run.predict(pd.read_csv("new.csv"))  # doctest: +SKIP
    """

    def __init__(self, estimator: Any, encoder: Any) -> None:
        self.estimator = estimator
        self.encoder = encoder

    @classmethod
    def load(cls, run_dir: str | Path) -> "SklearnRun":
        from paratrain.data.encoding import TableEncoder

        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            raise ConfigError(f"'{run_dir}' holds no scikit-learn model ({RUN_FILE})")
        saved = pickle.loads(path.read_bytes())
        return cls(saved["estimator"], TableEncoder.from_dict(saved["encoder"]))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = self.encoder.transform_features(frame).astype(np.float64)
        return self.encoder.inverse_target(self.estimator.predict(x).astype(np.float32))


def _write_bytes(path: Path, data: bytes) -> None:
    from paratrain.train.checkpoint import save_bytes_atomic

    save_bytes_atomic(data, path)
