"""The scikit-learn estimators: the full check_estimator suite, then real use.

Every estimator here uses ``threads=1``: the data are small, and on a busy machine
more intra-op threads only contend for the cores.
"""

from __future__ import annotations

import pickle
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification, make_friedman1
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from paratrain.errors import ConfigError, DivergenceError, FormulaError
from paratrain.estimators import FormulaRegressor, MLPClassifier, MLPRegressor

# Small and quick, yet accurate enough for check_regressors_train (R^2 > 0.5) and
# check_classifiers_train (accuracy > 0.83): many short steps rather than many epochs,
# since each epoch also writes a checkpoint.
_CHECKED = [
    MLPRegressor(hidden_layer_sizes=(16,), epochs=20, learning_rate=1e-2, batch_size=32, threads=1),
    MLPClassifier(hidden_layer_sizes=(16,), epochs=20, learning_rate=1e-2, batch_size=32, threads=1),
    FormulaRegressor("b0 + b1*x1", epochs=20, learning_rate=0.1, batch_size=32, threads=1),
]


@parametrize_with_checks(_CHECKED)
def test_sklearn_contract(estimator, check):
    check(estimator)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def friedman():
    X, y = make_friedman1(n_samples=2000, random_state=0)
    return X[:1500], y[:1500], X[1500:], y[1500:]


def _friedman_regressor(**overrides) -> MLPRegressor:
    params = dict(hidden_layer_sizes=(64, 64), epochs=40, learning_rate=3e-3, batch_size=64,
                  schedule="cosine", random_state=0, threads=1, precision="fp32")
    return MLPRegressor(**{**params, **overrides})


@pytest.fixture(scope="module")
def fitted_friedman(friedman):
    X, y, _, _ = friedman
    return _friedman_regressor().fit(X, y)


def _small_regression(n: int = 200, seed: int = 0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3))
    return X, 2 * X[:, 0] - X[:, 1] + 0.1 * rng.normal(size=n)


# -- accuracy ---------------------------------------------------------------------------


def test_regressor_fits_friedman1(friedman, fitted_friedman):
    _, _, X_test, y_test = friedman
    assert fitted_friedman.score(X_test, y_test) > 0.9
    assert fitted_friedman.n_iter_ == 40 and len(fitted_friedman.loss_curve_) == 40
    assert fitted_friedman.loss_curve_[-1] < fitted_friedman.loss_curve_[0]
    assert len(fitted_friedman.validation_scores_) == 40  # 10% of 1500 rows held out
    assert fitted_friedman.summary_["n_val"] == 150 and "run_dir" not in fitted_friedman.summary_


def test_classifier_with_string_labels():
    X, y = make_classification(n_samples=1000, n_features=10, random_state=0)
    labels = np.array(["no", "yes"])[y]
    model = MLPClassifier(hidden_layer_sizes=(32,), epochs=30, batch_size=64, random_state=0, threads=1)
    model.fit(X[:800], labels[:800])
    assert model.classes_.tolist() == ["no", "yes"]
    assert model.score(X[800:], labels[800:]) > 0.9
    proba = model.predict_proba(X[800:])
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X[800:]))
    assert np.allclose(np.exp(model.predict_log_proba(X[800:])), proba)


def test_classifier_keeps_a_rare_class_in_training():
    # Two rows of class "rare" among 200: a plain random split could hold both out,
    # and the model would never see the class it is asked to predict.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 2))
    y = np.where(X[:, 0] > 0, "pos", "neg").astype(object)
    y[:2] = "rare"
    for seed in range(5):
        model = MLPClassifier(hidden_layer_sizes=(8,), epochs=2, validation_fraction=0.5,
                              random_state=seed, threads=1).fit(X, y)
        assert model.classes_.tolist() == ["neg", "pos", "rare"]
        assert model.predict_proba(X).shape == (200, 3)


def test_classifier_with_a_single_row_class_holds_nothing_out():
    X, y = _small_regression(60)
    labels = (y > 0).astype(int)
    labels[0] = 2  # one row only: no stratified split can keep it in training and validation
    model = MLPClassifier(hidden_layer_sizes=(8,), epochs=2, threads=1).fit(X, labels)
    assert model.summary_["n_val"] == 0 and model.validation_scores_ == []
    assert model.classes_.tolist() == [0, 1, 2]


def test_tiny_data_trains_on_every_row():
    X, y = _small_regression(10)
    model = MLPRegressor(hidden_layer_sizes=(4,), epochs=3, validation_fraction=0.5, threads=1).fit(X, y)
    assert model.summary_["n_train"] == 10 and model.validation_scores_ == []


# -- scikit-learn tooling ---------------------------------------------------------------


def test_pipeline_with_scaler():
    X, y = _small_regression()
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("mlp", MLPRegressor(hidden_layer_sizes=(16,), epochs=30, batch_size=32,
                                              learning_rate=1e-2, random_state=0, threads=1))])
    assert pipeline.fit(X, y).score(X, y) > 0.9


def test_grid_search_over_a_parameter():
    X, y = _small_regression()
    search = GridSearchCV(
        MLPRegressor(hidden_layer_sizes=(16,), epochs=10, batch_size=32, random_state=0, threads=1),
        {"learning_rate": np.array([1e-4, 1e-2])},  # numpy values, as grids often are
        cv=2,
    )
    search.fit(X, y)
    assert search.best_params_["learning_rate"] == pytest.approx(1e-2)
    assert search.best_estimator_.score(X, y) > 0.8


def test_numpy_scalar_parameters_are_accepted():
    X, y = _small_regression(50)
    model = MLPRegressor(hidden_layer_sizes=(np.int64(8),), epochs=np.int64(2), batch_size=np.int32(16),
                         learning_rate=np.float32(1e-2), random_state=np.int64(3), threads=1)
    assert model.fit(X, y).n_iter_ == 2


def test_get_params_set_params_round_trip():
    model = MLPClassifier(hidden_layer_sizes=(8, 4), dropout=0.1, workers=2, strategy="ddp")
    params = model.get_params()
    assert params["hidden_layer_sizes"] == (8, 4) and params["strategy"] == "ddp"
    other = MLPClassifier().set_params(**params)
    assert other.get_params() == params
    assert clone(model).get_params() == params
    formula = FormulaRegressor("a*x + b", init={"a": 2.0}, variables=["x"])
    assert clone(formula).get_params() == formula.get_params()


def test_fitted_estimator_pickles(fitted_friedman, friedman):
    _, _, X_test, _ = friedman
    restored = pickle.loads(pickle.dumps(fitted_friedman))
    assert np.array_equal(restored.predict(X_test), fitted_friedman.predict(X_test))


def test_same_seed_same_model_other_seed_other_model():
    X, y = _small_regression(100)
    first = MLPRegressor(hidden_layer_sizes=(8,), epochs=3, random_state=1, threads=1).fit(X, y)
    again = MLPRegressor(hidden_layer_sizes=(8,), epochs=3, random_state=1, threads=1).fit(X, y)
    other = MLPRegressor(hidden_layer_sizes=(8,), epochs=3, random_state=2, threads=1).fit(X, y)
    assert np.array_equal(first.predict(X), again.predict(X))
    assert not np.array_equal(first.predict(X), other.predict(X))


def test_dataframe_input_records_feature_names():
    X, y = _small_regression(50)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = MLPRegressor(hidden_layer_sizes=(4,), epochs=2, threads=1).fit(frame, y)
    assert model.feature_names_in_.tolist() == ["a", "b", "c"]
    assert model.predict(frame).shape == (50,)


# -- side effects -----------------------------------------------------------------------


def test_fit_leaves_nothing_on_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    X, y = _small_regression(50)
    MLPRegressor(hidden_layer_sizes=(4,), epochs=2, threads=1).fit(X, y)
    with pytest.raises(ValueError):
        MLPRegressor(hidden_layer_sizes=(4,), epochs=2, threads=1).fit(X, np.full(50, np.nan))
    assert list(tmp_path.iterdir()) == []


def test_fit_leaves_the_callers_torch_random_state_alone():
    X, y = _small_regression(50)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    MLPRegressor(hidden_layer_sizes=(4,), epochs=2, threads=1).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


# -- parameter errors name the parameter --------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"learning_rate": -1.0}, "learning_rate=-1.0 must be a number > 0"),
    ({"hidden_layer_sizes": (8, 0)}, r"hidden_layer_sizes=\(8, 0\) must be positive integers"),
    ({"validation_fraction": 1.0}, r"validation_fraction=1.0 must be a number in \[0, 1\)"),
    ({"random_state": -3}, r"random_state=-3 must be in \[0, 2\*\*32\)"),
    ({"verbose": "loud"}, "verbose='loud' must be 0"),
])
def test_renamed_parameters_are_checked_by_their_own_name(params, message):
    X, y = _small_regression(30)
    with pytest.raises(ValueError, match=message):
        MLPRegressor(**params).fit(X, y)


def test_library_checks_the_other_parameters():
    X, y = _small_regression(30)
    with pytest.raises(ConfigError, match="activation='swish' is not one of"):
        MLPRegressor(activation="swish").fit(X, y)
    with pytest.raises(ConfigError, match="use --strategy ddp"):
        MLPRegressor(workers=2).fit(X, y)


def test_classifier_refuses_a_continuous_target():
    X, y = _small_regression(30)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, y)


# -- formula models -----------------------------------------------------------------------


def test_formula_recovers_its_parameters():
    x = np.linspace(0, 4, 200)[:, None]
    y = 2.0 * np.exp(-0.7 * x[:, 0])
    model = FormulaRegressor("a*exp(b*x)", init={"b": -1.0}, epochs=300, threads=1).fit(x, y)
    assert model.params_ == pytest.approx({"a": 2.0, "b": -0.7}, abs=0.05)
    assert model.score(x, y) > 0.99


def test_formula_variables_from_param_dataframe_or_default():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(100, 2))
    y = 3 * X[:, 0] - 2 * X[:, 1] + 1
    settings = dict(epochs=200, learning_rate=0.05, batch_size=32, threads=1)
    by_default = FormulaRegressor("a*x1 + b*x2 + c", **settings).fit(X, y)
    by_param = FormulaRegressor("a*t + b*y + c", variables=["t", "y"], **settings).fit(X, y)  # 'y' is a variable
    by_frame = FormulaRegressor("a*t + b*s + c", **settings).fit(pd.DataFrame(X, columns=["t", "s"]), y)
    for model in (by_default, by_param, by_frame):
        assert model.params_ == pytest.approx({"a": 3.0, "b": -2.0, "c": 1.0}, abs=0.05)


def test_formula_errors():
    X, y = _small_regression(30)
    with pytest.raises(ValueError, match=r"uses none of the columns of X: X has 3 feature\(s\), named x1, x2, x3"):
        FormulaRegressor("a*x + b").fit(X, y)
    with pytest.raises(ValueError, match="variables=.*must name each of the 3 columns"):
        FormulaRegressor("a*u + b", variables=["u"]).fit(X, y)
    with pytest.raises(FormulaError):
        FormulaRegressor("a*x1 +* b").fit(X, y)


# -- several processes --------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_ddp_with_two_workers_matches_single_process(friedman, fitted_friedman):
    X, y, X_test, y_test = friedman
    # Half the batch per worker keeps the global batch, and so the number of steps, the same.
    ddp = _friedman_regressor(workers=2, strategy="ddp", batch_size=32).fit(X, y)
    assert ddp.summary_["workers"] == 2
    single_r2 = fitted_friedman.score(X_test, y_test)
    assert ddp.score(X_test, y_test) == pytest.approx(single_r2, abs=0.03)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("params", [
    {"strategy": "ddp", "compress": "topk:0.1", "strategy_options": {"error_feedback": True}},
    {"strategy": "ddp", "compress": "powersgd:2", "strategy_options": {"powersgd_warmup": 4}},
    {"strategy": "sparse:0.05", "strategy_options": {"overlap": False}},
    {"strategy": "localsgd:4", "strategy_options": {"sync_warmup": 5}},
], ids=["ddp-topk", "ddp-powersgd", "sparse", "localsgd"])
def test_communication_efficient_strategies_from_the_estimator(friedman, fitted_friedman, params):
    """Compression and its options reach the run: its bytes per step are below dense all-reduce's,
    and the model still learns (R^2 within 0.1 of the single-process estimator's)."""
    X, y, X_test, y_test = friedman
    model = _friedman_regressor(workers=2, batch_size=32, epochs=20, **params).fit(X, y)
    assert model.summary_["workers"] == 2
    assert model.summary_["compression_ratio"] > 1.5, model.summary_
    assert model.score(X_test, y_test) > fitted_friedman.score(X_test, y_test) - 0.1


@pytest.mark.parametrize(("options", "message"), [
    ("fast", r"strategy_options='fast' must be a dict"),
    ({"turbo": 1, "overlap": False}, r"unknown key\(s\) turbo; known: .*powersgd_warmup.*sync_warmup"),
])
def test_bad_strategy_options_are_named(options, message):
    X, y = _small_regression(30)
    with pytest.raises(ValueError, match=message):
        MLPRegressor(strategy_options=options).fit(X, y)


def test_bad_compress_from_the_estimator_is_a_config_error():
    X, y = _small_regression(30)
    with pytest.raises(ConfigError, match=r"compress='zip' .*valid: fp16"):
        MLPRegressor(workers=2, strategy="ddp", compress="zip").fit(X, y)


def test_predict_refuses_a_model_whose_parameters_are_not_finite():
    X, y = _small_regression(60)
    model = MLPRegressor(hidden_layer_sizes=(8,), epochs=2, threads=1).fit(X, y)
    with torch.no_grad():
        next(model.model_.model.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match="this MLPRegressor has non-finite parameters"):
        model.predict(X)


def test_a_constant_target_has_nan_validation_scores():
    # metrics.jsonl writes the undefined R² as null; the estimator reads it back as NaN.
    X, _ = _small_regression(100)
    model = MLPRegressor(hidden_layer_sizes=(8,), epochs=2, validation_fraction=0.2, threads=1).fit(X, np.ones(100))
    assert len(model.validation_scores_) == 2 and all(np.isnan(model.validation_scores_))
    assert model.summary_["val_r2"] is None and "constant" in model.summary_["val_r2_note"]
