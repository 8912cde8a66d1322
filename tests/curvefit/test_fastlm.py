"""The one-start group path (fastlm on NumPy) against the general multi-start path, and its pieces."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from paratrain.curvefit import batched_linalg, fit_groups, groups, symbolic
from paratrain.curvefit.stats import RANK_TOL, batched_stderr


def _general(formula, frame, **kwargs):
    """fit_groups forced onto the general (torch, engine.solve) path."""
    original = groups.supported
    groups.supported = lambda parsed: False
    try:
        return fit_groups(formula, frame, **kwargs)
    finally:
        groups.supported = original


def _agree(fast, general, names, rtol=1e-9):
    assert list(fast.columns) == list(general.columns) and (fast.dtypes == general.dtypes).all()
    for column in [*names, *(f"{n}_stderr" for n in names), "rss", "r2"]:
        np.testing.assert_allclose(fast[column].to_numpy(float), general[column].to_numpy(float), rtol=rtol,
                                   err_msg=column)
    assert fast["converged"].tolist() == general["converged"].tolist()


@pytest.fixture
def uneven():
    """Three groups of different sizes (padding), interleaved, and one too small to fit."""
    rng = np.random.default_rng(1)
    frames = []
    for label, (a, b, c), n in [("p", (2, .5, .1), 30), ("q", (4, 1.2, -.3), 18), ("r", (1, .2, 0), 25),
                                ("s", (1, 1, 1), 2)]:
        t = np.sort(rng.uniform(0, 6, n))
        y = a * np.exp(-b * t) + c + 0.01 * rng.normal(size=n)
        frames.append(pd.DataFrame({"batch": label, "t": t, "y": y}))
    return pd.concat(frames, ignore_index=True).sample(frac=1, random_state=0)


def test_fast_path_matches_the_general_path(uneven):
    kwargs = dict(group_by="batch", p0={"a": 1, "b": 1, "c": 0})
    fast, general = fit_groups("a*exp(-b*t) + c", uneven, **kwargs), _general("a*exp(-b*t) + c", uneven, **kwargs)
    _agree(fast, general, ["a", "b", "c"])
    assert fast.set_index("batch").loc["s", "message"] == "only 2 rows for 3 parameters: not fitted"


def test_bounds_hold_parameters_as_the_general_path_does():
    rng = np.random.default_rng(2)
    x = np.tile(np.linspace(0, 4, 30), 5)
    y = 2.5 * np.exp(-np.repeat([1.3, 0.5, 2.0, 0.8, 3.0], 30) * x) + 0.001 * rng.normal(size=x.size)
    frame = pd.DataFrame({"g": np.repeat(np.arange(5), 30), "x": x, "y": y})
    kwargs = dict(group_by="g", p0={"a": 1, "b": 0.5}, bounds="b=0:1")
    fast, general = fit_groups("a*exp(-b*x)", frame, **kwargs), _general("a*exp(-b*x)", frame, **kwargs)
    _agree(fast, general, ["a", "b"])
    assert (fast["b"] <= 1).all() and (fast["b"] == 1).sum() == 3


def test_a_group_where_the_model_fails_keeps_p0_and_says_so():
    x = np.concatenate([np.linspace(1, 5, 20), np.linspace(-5, -1, 20)])
    y = np.concatenate([2 * np.log(3 * x[:20]), np.ones(20)])
    frame = pd.DataFrame({"g": np.repeat([0, 1], 20), "x": x, "y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fit_groups("a*log(b*x)", frame, group_by="g", p0={"a": 1, "b": 1})
    assert out.loc[0, "converged"] and out.loc[0, ["a", "b"]].tolist() == pytest.approx([2.0, 3.0])
    failed = out.loc[1]
    assert not failed["converged"] and failed["message"] == "model not finite at the start"
    assert [failed["a"], failed["b"]] == [1.0, 1.0] and np.isnan(failed["a_stderr"])


def test_ill_conditioned_groups_take_the_qr_polish(monkeypatch):
    rng = np.random.default_rng(7)
    x = np.tile(np.linspace(100, 110, 40), 4)
    frame = pd.DataFrame({"g": np.repeat(np.arange(4), 40), "x": x,
                          "y": 1 + 2 * x + 0.003 * x ** 2 + 0.01 * rng.normal(size=x.size)})
    polished = []
    original = groups.solve_one_start.__globals__["gauss_newton_refine"]

    def spy(evaluator, result, index, *args, **kwargs):
        polished.append(index.numel())
        return original(evaluator, result, index, *args, **kwargs)

    monkeypatch.setitem(groups.solve_one_start.__globals__, "gauss_newton_refine", spy)
    fast = fit_groups("a + b*x + c*x^2", frame, group_by="g", p0=[1, 1, 0])
    assert polished == [4]  # cond(J) ~ 1e8: all four through QR
    exact = [np.polynomial.polynomial.polyfit(x[:40], frame["y"].to_numpy()[40 * g:40 * g + 40], 2) for g in range(4)]
    np.testing.assert_allclose(fast[["a", "b", "c"]].to_numpy(float), exact, rtol=1e-5)
    general = _general("a + b*x + c*x^2", frame, group_by="g", p0=[1, 1, 0])
    np.testing.assert_allclose(fast[["a_stderr", "b_stderr", "c_stderr"]].to_numpy(float),
                               general[["a_stderr", "b_stderr", "c_stderr"]].to_numpy(float), rtol=1e-8)


def test_unidentifiable_groups_are_named_as_on_the_general_path():
    rng = np.random.default_rng(3)
    x = np.tile(np.linspace(0, 4, 20), 2)
    frame = pd.DataFrame({"g": np.repeat([0, 1], 20), "x": x, "y": 3 * x + 0.01 * rng.normal(size=40)})
    fast = fit_groups("a*b*x", frame, group_by="g", p0=[1, 1])
    general = _general("a*b*x", frame, group_by="g", p0=[1, 1])
    assert fast["message"].tolist() == general["message"].tolist()
    assert "a and b cannot be separated" in fast.loc[0, "message"] and np.isinf(fast.loc[0, "a_stderr"])


def test_max_iter_and_exact_data_match_the_general_path():
    rng = np.random.default_rng(4)
    x = np.tile(np.linspace(0, 8, 50), 4)
    frame = pd.DataFrame({"g": np.repeat(np.arange(4), 50), "x": x,
                          "y": 3 * np.exp(-0.7 * x) + 0.5 + 0.02 * rng.normal(size=200)})
    kwargs = dict(group_by="g", p0={"a": 1, "b": .5, "c": 0}, max_iter=3)
    fast, general = fit_groups("a*exp(-b*x) + c", frame, **kwargs), _general("a*exp(-b*x) + c", frame, **kwargs)
    _agree(fast, general, ["a", "b", "c"])
    assert fast["message"].eq("reached max_iter").all() and fast["n_iter"].eq(3).all()
    exact = frame.assign(y=3 * np.exp(-0.7 * x) + 0.5)
    out = fit_groups("a*exp(-b*x) + c", exact, group_by="g", p0={"a": 1, "b": .5, "c": 0})
    np.testing.assert_allclose(out[["a", "b", "c"]].to_numpy(float), [[3, 0.7, 0.5]] * 4, rtol=1e-13)


def test_formulas_without_derivative_rules_and_several_starts_take_the_general_path(monkeypatch, uneven):
    def refuse(*args, **kwargs):
        raise AssertionError("the fast path should not run")

    monkeypatch.setattr(groups, "solve_one_start", refuse)
    fit_groups("a*exp(-b*t) + c", uneven, group_by="batch", p0=[1, 1, 0], starts=4)
    monkeypatch.delitem(symbolic._ONE_ARGUMENT, "exp")
    out = fit_groups("a*exp(-b*t) + c", uneven, group_by="batch", p0=[1, 1, 0])
    assert out["converged"].sum() == 3


def test_group_split_matches_factorize():
    for column in [pd.Series([3, 3, 1, 1, 1, 2]), pd.Series([3, 1, 3]), pd.Series(["a", "a", "b"]),
                   pd.Series([1.5, 1.5, 2.0]), pd.Series(np.array([5, 5, 7], dtype=np.int32))]:
        codes, labels = groups._split(column)
        expected_codes, expected_labels = pd.factorize(column, sort=False)
        assert codes.tolist() == expected_codes.tolist() and list(labels) == list(expected_labels)
        assert labels.dtype == expected_labels.dtype


def test_batched_solves_match_numpy():
    rng = np.random.default_rng(5)
    for n in (3, 300):  # below and above the LAPACK crossover
        J = rng.normal(size=(n, 20, 3))
        A = np.einsum("nmi,nmj->ijn", J, J)
        grad, damping = rng.normal(size=(3, n)), rng.uniform(0.1, 1, (3, n))
        step = batched_linalg.damped_step(A, grad, damping)
        expected = np.linalg.solve(A.transpose(2, 0, 1) + damping.T[:, :, None] * np.eye(3), -grad.T[:, :, None])
        np.testing.assert_allclose(step, expected[:, :, 0].T, rtol=1e-10)
    with np.errstate(all="ignore"):
        singular = batched_linalg.cholesky(np.zeros((2, 2, 1)))
    assert np.isnan(batched_linalg.pivots(singular)).all()


def test_batched_stderr_matches_an_svd_per_fit():
    rng = np.random.default_rng(6)
    J = torch.from_numpy(rng.uniform(size=(50, 30, 4)))
    J[:20, :, 1] = J[:20, :, 0] * (1 + torch.logspace(-14, -4, 20, dtype=torch.float64)[:, None])  # near-dependent
    R = torch.linalg.qr(J, mode="r")[1]
    rss, n = torch.from_numpy(rng.uniform(size=50)), torch.full((50,), 30)
    stderr, flagged = batched_stderr(R, rss, n, 3)
    for g in range(50):
        Rs = R[g, :3, :3] / R[g, :3, :3].norm(dim=0)
        S = torch.linalg.svdvals(Rs)
        assert bool(flagged[g]) == bool(S[-1] <= RANK_TOL * S[0])
        if not flagged[g]:
            covariance = torch.linalg.inv(R[g, :3, :3].T @ R[g, :3, :3]) * rss[g] / 27
            np.testing.assert_allclose(stderr[g].numpy(), covariance.diagonal().sqrt().numpy(), rtol=1e-6)
