"""The scikit-learn face of paratrain: estimators that train through :func:`paratrain.train.fit.fit`.

:class:`MLPRegressor`, :class:`MLPClassifier` and :class:`FormulaRegressor` follow the
scikit-learn contract (``__init__`` only stores its arguments, ``fit`` returns ``self``,
learned attributes end in ``_``), so they work in pipelines, grid searches and
``clone``. ``fit`` turns ``X``/``y`` into a table, builds the same
:class:`~paratrain.config.FitConfig` the CLI builds and calls the library's ``fit``:
every strategy works, ``workers=2, strategy="ddp"`` included, whose worker processes
``fit`` starts and stops. The run directory is a temporary folder, deleted once the
trained model is in memory (``model_``), so nothing is left on disk; a fitted
estimator pickles like any other.

Choices an estimator makes for you:

- ``random_state=None`` trains with seed 0, so an unseeded fit is still repeatable;
  an int is the seed; a ``numpy.random.RandomState`` gives a seed drawn from it.
- With fewer than 20 rows nothing is held out for validation (``validation_fraction``
  is ignored), so that tiny data sets keep every row for training.
- The classifier draws its validation rows stratified by class, so every class is
  seen in training; where that cannot be done (a class with a single row, or fewer
  validation rows than classes), nothing is held out.
- The global torch random state of the caller is left as it was.

Runs write a checkpoint each epoch into the temporary folder; point ``TMPDIR`` at a
RAM disk (``/dev/shm``) to make many small fits faster.
"""

from __future__ import annotations

import math
import numbers
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.special
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn 1.5: the same check as a private method
    def validate_data(estimator, X="no_validation", y="no_validation", reset=True, **check_params):
        return estimator._validate_data(X, y, reset=reset, **check_params)

from paratrain.config import FitConfig
from paratrain.data.split import train_val_split
from paratrain.predict import TrainedModel
from paratrain.train import rundir
from paratrain.train.fit import fit as fit_run
from paratrain.train.metrics import MetricsLog

__all__ = ["MLPRegressor", "MLPClassifier", "FormulaRegressor"]

_MIN_ROWS_FOR_VALIDATION = 20
"""With fewer rows, nothing is held out: a validation row would be a large share of the data."""

_FEATURE_DTYPES = (np.float64, np.float32)
"""Accepted as they are; any other numeric X is converted to float64."""


class _ParatrainEstimator(BaseEstimator):
    """Fitting machinery shared by the estimators; subclasses name the model and the columns.

    Subclasses define ``__init__`` (the parameters), :meth:`_model_values` and
    :meth:`_feature_columns`.
    """

    def _model_values(self) -> dict[str, Any]:
        """The model section of the config, from this estimator's parameters."""
        raise NotImplementedError

    def _feature_columns(self, n_features: int) -> list[str]:
        """Names of the table columns that hold the features."""
        raise NotImplementedError

    # -- fitting ---------------------------------------------------------------------

    def _config(self, n_samples: int, task: str, target: str) -> FitConfig:
        """The run's config; fails on a bad parameter before anything is written."""
        values = {
            **self._model_values(),
            "target": target,
            "task": task,
            "val_fraction": self._val_fraction(n_samples),
            "optimizer": self.optimizer,
            "lr": _checked_learning_rate(self.learning_rate),
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "seed": _seed(self.random_state),
            "precision": self.precision,
            "device": self.device,
            "strategy": self.strategy,
            "compress": self.compress,
            **_strategy_options(self.strategy_options),
            "workers": self.workers,
            "threads": self.threads,
            "verbosity": _checked_verbose(self.verbose),
            # The run directory is temporary and never resumed: checkpoints would be wasted disk syncs.
            "checkpoint_every": 0,
        }
        # GridSearchCV grids are often numpy arrays: the config wants plain ints and floats.
        return FitConfig.from_dict({key: _plain(value) for key, value in values.items()})

    def _val_fraction(self, n_samples: int) -> float:
        fraction = _plain(self.validation_fraction)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be a number in [0, 1)")
        return 0.0 if n_samples < _MIN_ROWS_FOR_VALIDATION else float(fraction)

    def _table(self, X: np.ndarray, y: np.ndarray | None = None, target: str | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(X, columns=self._feature_columns(X.shape[1]))
        if y is not None:
            frame[target] = y
        return frame

    def _train(self, frame: pd.DataFrame, config: FitConfig) -> None:
        """Run ``fit`` in a temporary run directory; keep the model and the curves in memory."""
        run_dir = Path(tempfile.mkdtemp(prefix="paratrain-estimator-"))
        try:
            # fit() seeds torch's global generator and loading draws initial weights from
            # it: an estimator must leave the caller's random state as it found it.
            with torch.random.fork_rng(devices=[]):
                result = fit_run(config.updated({"out": str(run_dir)}), data=frame)
                if result.summary.get("status") != "finished":
                    raise RuntimeError(f"training did not finish: {result.summary}")
                self.model_ = TrainedModel.load(run_dir)
            records = MetricsLog(run_dir / rundir.METRICS_FILE).read()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        score_key = "val_accuracy" if config.data.task == "classification" else "val_r2"
        self.loss_curve_ = [record["train_loss"] for record in records]
        # metrics.jsonl writes an undefined score (R² of a constant target) as null: NaN here, as scikit-learn does.
        self.validation_scores_ = [math.nan if record[score_key] is None else record[score_key]
                                   for record in records if score_key in record]
        self.n_iter_ = int(result.summary["epochs"])
        self.summary_ = {key: value for key, value in result.summary.items() if key != "run_dir"}

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _predict_table(self, X) -> pd.DataFrame:
        check_is_fitted(self)
        self.model_.check_finite(f"this {type(self).__name__}")  # fit refuses to diverge; a changed model_ may not
        X = validate_data(self, X, reset=False, dtype=_FEATURE_DTYPES)
        return pd.DataFrame(X, columns=self.model_.encoder.input_columns)


class _MLPEstimator(_ParatrainEstimator):
    """Parameters and model section shared by the MLP estimators."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        dropout=0.0,
        norm="none",
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        batch_size=256,
        epochs=200,
        schedule="none",
        patience=None,
        validation_fraction=0.1,
        random_state=None,
        workers=1,
        strategy="single",
        compress=None,
        strategy_options=None,
        threads=None,
        precision="auto",
        device="auto",
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.workers = workers
        self.strategy = strategy
        self.compress = compress
        self.strategy_options = strategy_options
        self.threads = threads
        self.precision = precision
        self.device = device
        self.verbose = verbose

    def _model_values(self) -> dict[str, Any]:
        return {
            "model": "mlp",
            "hidden": _hidden_sizes(self.hidden_layer_sizes),
            "activation": self.activation,
            "dropout": self.dropout,
            "norm": self.norm,
        }

    def _feature_columns(self, n_features: int) -> list[str]:
        return [f"x{index}" for index in range(n_features)]


_TRAINING_PARAMETERS_DOC = """
        optimizer: 'adam', 'adamw' or 'sgd' (with momentum 0.9).
        learning_rate: Step size (the peak rate for ``schedule='onecycle'``).
        weight_decay: L2 penalty (decoupled for AdamW).
        batch_size: Rows per step on each worker.
        epochs: Passes over the training rows.
        schedule: Learning-rate schedule: 'none', 'cosine', 'step' or 'onecycle'.
        patience: Stop after this many epochs without a better validation loss (the
            training loss when nothing is held out); None trains every epoch.
        validation_fraction: Share of rows held out to report ``validation_scores_`` and
            for ``patience``; ignored (0) with fewer than 20 rows.
        random_state: Seed of initialization, split and shuffling; None means seed 0.
        workers: Worker processes; more than 1 needs a parallel ``strategy`` such as 'ddp'.
        strategy: Parallel strategy by name, with its argument: 'single', 'ddp', 'localsgd:8',
            'sparse:0.01', 'async', 'hogwild' (see ``paratrain strategies``).
        compress: ddp gradient compression: 'fp16', 'bf16', 'int8', 'topk:0.01', 'powersgd:4'. With
            adam, 'topk:RATIO' trains at learning_rate x 1/sqrt(RATIO) unless strategy_options
            has 'compress_lr_scale': False.
        strategy_options: Further options of the strategy, as the CLI names them: a dict
            such as {'powersgd_warmup': 20} (ddp), {'sync_warmup': 50} (localsgd), {'max_staleness': 2}
            (async), or 'timeout_s'; each strategy lists its own (``paratrain strategies``), and one the
            chosen strategy does not take is an error.
        threads: Intra-op threads per worker; None divides the cores among the workers.
        precision: 'auto' (bf16 where a short probe measures it faster with the same loss, else
            fp32), 'fp32', 'bf16' or 'fp16' (CUDA only).
        device: 'cpu', 'cuda' or 'auto' (CUDA when available).
        verbose: 0 is quiet, 1 prints one line per epoch, 2 also debug logging.
"""


class MLPRegressor(RegressorMixin, _MLPEstimator):
    __doc__ = f"""Multilayer perceptron regressor trained by paratrain (any strategy, any device).

    Inputs and target are standardized with the training rows' statistics, and the
    loss is the mean squared error of the standardized target.

    Args:
        hidden_layer_sizes: Width of each hidden layer (an int for one layer).
        activation: 'relu', 'gelu', 'tanh', 'silu', 'sigmoid' or 'leaky_relu'.
        dropout: Dropout probability after each hidden layer.
        norm: Normalization after each hidden linear layer: 'none', 'batch' or 'layer'.
        {_TRAINING_PARAMETERS_DOC.strip()}

    Attributes:
        model_: The trained :class:`~paratrain.predict.TrainedModel` (module and encoding).
        n_features_in_: Number of features seen in ``fit``.
        feature_names_in_: Column names of ``X`` when it was a DataFrame with string names.
        loss_curve_: Training loss (MSE of the standardized target) per epoch.
        validation_scores_: Validation R^2 per epoch; empty when nothing was held out.
        n_iter_: Epochs trained (fewer than ``epochs`` after early stopping).
        summary_: The run's summary (losses, timings, workers), as the CLI reports it.

    Example:
        >>> from sklearn.datasets import make_friedman1
        >>> X, y = make_friedman1(n_samples=200, random_state=0)
        >>> model = MLPRegressor(hidden_layer_sizes=(32,), epochs=5, random_state=0).fit(X, y)
        >>> model.predict(X[:3]).shape
        (3,)
    """

    def fit(self, X, y) -> "MLPRegressor":
        """Train on ``X`` (n_samples, n_features) and the numeric target ``y``.

        Returns:
            self, fitted.
        """
        X, y = validate_data(self, X, y, dtype=_FEATURE_DTYPES, y_numeric=True)
        config = self._config(len(X), "regression", "y")
        self._train(self._table(X, y.astype(np.float64), "y"), config)
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted targets, shape (n_samples,), in the target's own units."""
        table = self._predict_table(X)  # checks fitted before model_ is touched
        return self.model_.predict(table)


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    __doc__ = f"""Multilayer perceptron classifier trained by paratrain (any strategy, any device).

    Classes may be any sortable labels (numbers, strings, booleans); the loss is the
    cross-entropy. Inputs are standardized with the training rows' statistics.

    Args:
        hidden_layer_sizes: Width of each hidden layer (an int for one layer).
        activation: 'relu', 'gelu', 'tanh', 'silu', 'sigmoid' or 'leaky_relu'.
        dropout: Dropout probability after each hidden layer.
        norm: Normalization after each hidden linear layer: 'none', 'batch' or 'layer'.
        {_TRAINING_PARAMETERS_DOC.strip()}

    Attributes:
        classes_: The sorted class labels; column order of :meth:`predict_proba`.
        model_: The trained :class:`~paratrain.predict.TrainedModel`; it predicts class
            indices into ``classes_``.
        n_features_in_: Number of features seen in ``fit``.
        feature_names_in_: Column names of ``X`` when it was a DataFrame with string names.
        loss_curve_: Training cross-entropy per epoch.
        validation_scores_: Validation accuracy per epoch; empty when nothing was held out.
        n_iter_: Epochs trained (fewer than ``epochs`` after early stopping).
        summary_: The run's summary (losses, timings, workers), as the CLI reports it.

    Example:
        >>> from sklearn.datasets import make_classification
        >>> X, y = make_classification(n_samples=200, random_state=0)
        >>> model = MLPClassifier(hidden_layer_sizes=(32,), epochs=5, random_state=0).fit(X, y)
        >>> model.predict_proba(X[:3]).shape
        (3, 2)
    """

    def fit(self, X, y) -> "MLPClassifier":
        """Train on ``X`` (n_samples, n_features) and the class labels ``y``.

        Returns:
            self, fitted.

        Raises:
            ValueError: ``y`` is continuous, or holds a single class.
        """
        X, y = validate_data(self, X, y, dtype=_FEATURE_DTYPES)
        check_classification_targets(y)
        classes, indices = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has only one class ({_plain(classes[0])!r}); a classifier needs at least 2 classes"
            )
        config = self._config(len(X), "classification", "y")
        order = _stratified_order(indices, config.data.val_fraction, config.train.seed)
        if order is None:
            config = config.updated({"val_fraction": 0.0})
            order = np.arange(len(X))
        # The library sees class indices 0..k-1, so that any label type round-trips exactly.
        self._train(self._table(X[order], indices[order].astype(np.int64), "y"), config)
        self.classes_ = classes
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        table = self._predict_table(X)  # checks fitted before model_ is touched
        outputs = self.model_.raw_outputs(table)
        return self.classes_[outputs.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        table = self._predict_table(X)  # checks fitted before model_ is touched
        outputs = self.model_.raw_outputs(table)
        return scipy.special.softmax(outputs.astype(np.float64), axis=1)

    def predict_log_proba(self, X) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed without underflow."""
        table = self._predict_table(X)  # checks fitted before model_ is touched
        outputs = self.model_.raw_outputs(table)
        return scipy.special.log_softmax(outputs.astype(np.float64), axis=1)


class FormulaRegressor(RegressorMixin, _ParatrainEstimator):
    __doc__ = """Fit the parameters of a formula such as ``'b1*(1-exp(-b2*x))'`` by gradient descent.

    Names in the formula that are columns of ``X`` are variables; every other name is a
    parameter. The columns are named by ``variables``, else by the column names of a
    DataFrame ``X``, else ``x`` (one column) or ``x1`` .. ``xd``. Data are used in their
    own units (no standardization), so the parameters mean what the formula says.

    Args:
        formula: The model, e.g. ``'a*exp(b*x) + c'``; see :func:`paratrain.parse_formula`.
        init: Starting values of parameters by name; the others start at 1.0.
        variables: Names of the columns of ``X``, in order.
        {training}

    Attributes:
        params_: Fitted parameter values by name.
        model_: The trained :class:`~paratrain.predict.TrainedModel`.
        n_features_in_: Number of features seen in ``fit``.
        feature_names_in_: Column names of ``X`` when it was a DataFrame with string names.
        loss_curve_: Training loss (mean squared error) per epoch.
        validation_scores_: Validation R^2 per epoch; empty when nothing was held out.
        n_iter_: Epochs trained (fewer than ``epochs`` after early stopping).
        summary_: The run's summary (losses, timings, workers), as the CLI reports it.

    Example:
        >>> x = np.linspace(0, 4, 200)[:, None]
        >>> y = 2.0 * np.exp(-0.7 * x[:, 0])
        >>> model = FormulaRegressor("a*exp(b*x)", init={{"b": -1.0}}, epochs=300).fit(x, y)
        >>> {{name: round(value, 1) for name, value in model.params_.items()}}
        {{'a': 2.0, 'b': -0.7}}
    """.format(training=_TRAINING_PARAMETERS_DOC.strip())

    def __init__(
        self,
        formula,
        init=None,
        variables=None,
        optimizer="adam",
        learning_rate=0.01,
        weight_decay=0.0,
        batch_size=256,
        epochs=500,
        schedule="none",
        patience=None,
        validation_fraction=0.1,
        random_state=None,
        workers=1,
        strategy="single",
        compress=None,
        strategy_options=None,
        threads=None,
        precision="auto",
        device="auto",
        verbose=0,
    ):
        self.formula = formula
        self.init = init
        self.variables = variables
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.workers = workers
        self.strategy = strategy
        self.compress = compress
        self.strategy_options = strategy_options
        self.threads = threads
        self.precision = precision
        self.device = device
        self.verbose = verbose

    def _model_values(self) -> dict[str, Any]:
        if not isinstance(self.formula, str) or not self.formula.strip():
            raise ValueError(f"formula={self.formula!r} must be a formula text such as 'a*exp(b*x)'")
        init = {} if self.init is None else dict(self.init)
        return {"model": "formula", "formula": self.formula, "init": {k: float(v) for k, v in init.items()}}

    def _feature_columns(self, n_features: int) -> list[str]:
        if self.variables is not None:
            names = [self.variables] if isinstance(self.variables, str) else list(self.variables)
            if len(names) != n_features or not all(isinstance(name, str) for name in names):
                raise ValueError(
                    f"variables={self.variables!r} must name each of the {n_features} columns of X, in order"
                )
            return names
        if hasattr(self, "feature_names_in_"):
            return [str(name) for name in self.feature_names_in_]
        return ["x"] if n_features == 1 else [f"x{index}" for index in range(1, n_features + 1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # A fixed formula fits the data it was written for, not an arbitrary benchmark
        # set: scikit-learn's "R^2 > 0.5 on make_regression" check does not apply.
        tags.regressor_tags.poor_score = True
        return tags

    def _check_formula_uses(self, columns: list[str]) -> None:
        from paratrain.models.formula import parse_formula

        self._model_values()  # checks that the formula is text
        used, _ = parse_formula(self.formula).split_names(columns)
        if not used:
            raise ValueError(
                f"formula {self.formula!r} uses none of the columns of X: X has {len(columns)} feature(s), "
                f"named {', '.join(columns)}; write the formula in those names, or name the columns "
                "with variables=[...]"
            )

    def fit(self, X, y) -> "FormulaRegressor":
        """Fit the formula's parameters to ``X`` (n_samples, n_variables) and ``y``.

        Returns:
            self, fitted.

        Raises:
            ValueError: A bad formula (:class:`~paratrain.errors.FormulaError`), or one
                that uses none of the columns.
        """
        X, y = validate_data(self, X, y, dtype=_FEATURE_DTYPES, y_numeric=True)
        columns = self._feature_columns(X.shape[1])
        self._check_formula_uses(columns)
        target = _free_name("y", columns)
        config = self._config(len(X), "regression", target)
        self._train(self._table(X, y.astype(np.float64), target), config)
        self.params_ = self.model_.model.params_dict()
        return self

    def predict(self, X) -> np.ndarray:
        """Values of the fitted formula, shape (n_samples,)."""
        table = self._predict_table(X)  # checks fitted before model_ is touched
        return self.model_.predict(table)


# -- helpers ----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy scalars -> Python ones (the config checks for int and float)."""
    return value.item() if isinstance(value, np.generic) else value


def _hidden_sizes(value: Any) -> tuple[int, ...]:
    sizes = (value,) if isinstance(value, numbers.Integral) else value
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = None
    if sizes is None or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
        raise ValueError(
            f"hidden_layer_sizes={value!r} must be positive integers, one per hidden layer, e.g. (100,) or (64, 64)"
        )
    return tuple(int(size) for size in sizes)


def _strategy_option_names() -> tuple[str, ...]:
    """What an estimator passes through ``strategy_options``: every option some strategy declares
    (from the registry, so a new strategy's options join) except ``compress``, its own parameter,
    and ParallelConfig's ``timeout_s``. Whether an option applies to the strategy the config checks."""
    from paratrain.strategies import strategy_option_fields

    return tuple(sorted(set(strategy_option_fields()) - {"compress"})) + ("timeout_s",)


def _strategy_options(options: Any) -> dict[str, Any]:
    """The ``strategy_options`` dict, checked: known keys only (values are checked by the config)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"strategy_options={options!r} must be a dict such as {{'powersgd_warmup': 20}}, or None")
    known = _strategy_option_names()
    unknown = sorted(str(key) for key in options if key not in known)
    if unknown:
        raise ValueError(f"strategy_options has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return dict(options)


def _checked_learning_rate(value: Any) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"learning_rate={value!r} must be a number > 0, e.g. 1e-3")
    return float(value)


def _checked_verbose(value: Any) -> int:
    value = _plain(value)
    if not isinstance(value, (int, bool)) or value < 0:
        raise ValueError(f"verbose={value!r} must be 0 (quiet), 1 (one line per epoch) or 2 (debug)")
    return int(value)


def _seed(random_state: Any) -> int:
    """None -> 0 (repeatable by default); an int is the seed; a RandomState gives one."""
    random_state = _plain(random_state)
    if random_state is None:
        return 0
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**32:
            raise ValueError(f"random_state={random_state!r} must be in [0, 2**32)")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    raise ValueError(f"random_state={random_state!r} must be None, an int or a numpy RandomState")


def _free_name(name: str, taken: list[str]) -> str:
    """``name``, or ``name`` with underscores appended until it is not in ``taken``."""
    while name in taken:
        name += "_"
    return name


def _stratified_order(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray | None:
    """A row order under which the library's split holds out a class-stratified validation set.

    ``fit`` validates on the rows at the positions ``train_val_split(n, val_fraction, seed)``
    picks; putting a stratified sample of the rows at those positions makes its
    validation set stratified, and keeps every class in the training rows (a class held
    out entirely would never be learned). Returns None when no such split exists
    (a class with a single row, or fewer validation rows than classes).
    """
    from sklearn.model_selection import train_test_split

    train_positions, val_positions = train_val_split(len(labels), val_fraction, seed)
    if len(val_positions) == 0:
        return np.arange(len(labels))
    try:
        train_rows, val_rows = train_test_split(
            np.arange(len(labels)), test_size=len(val_positions), stratify=labels, random_state=seed
        )
    except ValueError:  # too few rows of some class to stratify
        return None
    if len(np.unique(labels[train_rows])) < len(np.unique(labels)):
        return None
    order = np.empty(len(labels), dtype=np.int64)
    order[train_positions] = train_rows
    order[val_positions] = val_rows
    return order
