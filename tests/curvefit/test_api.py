"""``curve_fit`` as a library: inputs, results, and agreement with scipy where scipy is right."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit as scipy_curve_fit

from paratrain.curvefit import CurveFitResult, curve_fit


@pytest.fixture
def noisy():
    rng = np.random.default_rng(7)
    x = np.linspace(0, 6, 80)
    y = 4.0 * np.exp(-0.8 * x) + 0.5 + 0.02 * rng.normal(size=x.size)
    return x, y


def test_covariance_and_stderr_match_scipy(noisy):
    x, y = noisy
    ours = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=8)
    popt, pcov = scipy_curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0],
                                 ftol=1e-14, xtol=1e-14)
    assert list(ours.params.values()) == pytest.approx(popt, rel=1e-7)
    assert ours.covariance == pytest.approx(pcov, rel=1e-5)
    assert list(ours.stderr.values()) == pytest.approx(np.sqrt(np.diag(pcov)), rel=1e-5)


def test_sigma_weights_match_scipy(noisy):
    x, y = noisy
    sigma = np.linspace(0.01, 0.05, x.size)
    ours = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], sigma=sigma, starts=4)
    popt, pcov = scipy_curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0], sigma=sigma,
                                 ftol=1e-14, xtol=1e-14)
    assert list(ours.params.values()) == pytest.approx(popt, rel=1e-7)
    assert ours.covariance == pytest.approx(pcov, rel=1e-5)


def test_dataframe_with_two_variables_and_named_p0():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x1": rng.uniform(0, 2, 60), "x2": rng.uniform(0, 2, 60), "noise": 0.0})
    frame["out"] = 1.5 * frame.x1 ** 2 + np.exp(0.4 * frame.x2)
    fit = curve_fit("p*x1^2 + exp(q*x2)", frame, target="out", p0={"q": 0.1}, starts=8)
    assert fit.params == pytest.approx({"p": 1.5, "q": 0.4}, rel=1e-9)
    assert list(fit.params) == ["p", "q"]  # order of first appearance in the formula


def test_target_may_be_an_expression_of_columns():
    x = np.linspace(1, 5, 40)
    frame = pd.DataFrame({"x": x, "y": np.exp(2.0 - 0.3 * x)})
    fit = curve_fit("a + b*x", frame, target="log(y)", starts=2)
    assert fit.params == pytest.approx({"a": 2.0, "b": -0.3}, rel=1e-10)
    assert fit.target == "log(y)"


def test_explicit_starts_array_and_result_dict_round_trip():
    x = np.linspace(0, 3, 20)
    starts = np.array([[1.0, 1.0], [3.0, 0.1], [0.5, 2.0]])
    fit = curve_fit("a*exp(b*x)", x=x, y=2 * np.exp(0.5 * x), starts=starts)
    assert fit.starts_used == 3
    payload = json.loads(json.dumps(fit.to_dict()))
    assert set(payload) >= {"params", "stderr", "covariance", "rss", "r2", "n_iter", "converged", "starts_used"}
    assert payload["params"]["b"] == pytest.approx(0.5, rel=1e-10)


def test_confidence_intervals_use_t_with_n_minus_k_dof():
    result = CurveFitResult({"a": 1.0}, {"a": 0.5}, np.eye(1) * 0.25, 2.0, 0.9, 4, True, 1, n_obs=4)
    low, high = result.confidence_intervals(0.95)["a"]
    assert high - 1.0 == pytest.approx(0.5 * 3.182446305284263, rel=1e-9)  # t(0.975, 3)
    assert result.dof == 3


def test_large_data_explores_on_a_subset_and_polishes_on_all_rows():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 20_000)
    y = 3 * np.exp(-0.4 * x) + 1 + 0.01 * rng.normal(size=x.size)
    fit = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=64)
    popt, _ = scipy_curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[3, 0.4, 1], ftol=1e-14)
    assert list(fit.params.values()) == pytest.approx(popt, rel=1e-8)
    assert fit.n_obs == 20_000


def test_millions_of_rows_path_polishes_one_candidate_on_all_rows():
    # Above 16 x 4096 rows, candidates are ranked on 4096 rows first (the "middle" stage).
    rng = np.random.default_rng(9)
    x = rng.uniform(0, 10, 70_000)
    y = 2 * np.exp(-0.3 * x) + 0.5 + 0.01 * rng.normal(size=x.size)
    fit = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=32)
    popt, _ = scipy_curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[2, 0.3, 0.5], ftol=1e-14)
    assert list(fit.params.values()) == pytest.approx(popt, rel=1e-8)
    assert fit.converged
