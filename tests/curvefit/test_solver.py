"""The solver's pieces: exact Jacobians, batched Levenberg-Marquardt, starts, bounds, ties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from paratrain.curvefit import curve_fit
from paratrain.curvefit.evaluator import LocalEvaluator
from paratrain.curvefit.lm import LMOptions, Status, gauss_newton_refine, levenberg_marquardt
from paratrain.curvefit.problem import build_problem
from paratrain.curvefit.starts import design_starts

INF = torch.full((2,), math.inf, dtype=torch.float64)


def _problem(formula="b1*(1-exp(-b2*x))", n=30, noise=0.0, seed=0, truth=(5.0, 0.3)):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.5, 10, n)
    y = truth[0] * (1 - np.exp(-truth[1] * x)) + noise * rng.normal(size=n)
    return build_problem(formula, pd.DataFrame({"x": x, "y": y}), "y")


def test_jacobian_is_exact_against_the_analytic_derivative():
    problem = _problem()
    evaluator = LocalEvaluator(problem.model, problem.data)
    P = torch.tensor([[5.0, 0.3], [2.0, 1.5]], dtype=torch.float64)
    f, J = evaluator.jacobian(P, torch.zeros(2, dtype=torch.long))
    x = problem.data.X[0, :, 0]
    for row, (b1, b2) in enumerate(P.tolist()):
        assert torch.allclose(J[row, :, 0], 1 - torch.exp(-b2 * x), rtol=0, atol=1e-15)
        assert torch.allclose(J[row, :, 1], b1 * x * torch.exp(-b2 * x), rtol=1e-15, atol=1e-15)


def test_triangular_factor_reproduces_normal_equations_across_chunks():
    problem = _problem(n=57, noise=0.1)
    small_chunks = LocalEvaluator(problem.model, problem.data, chunk_elements=10)  # forces ~20 chunks
    P = torch.tensor([[4.0, 0.2], [6.0, 0.4], [5.0, 0.3]], dtype=torch.float64)
    index = torch.zeros(3, dtype=torch.long)
    R = small_chunks.triangular(P, index)
    f, J = small_chunks.jacobian(P, index)
    A = torch.cat([J, (f - problem.data.y).unsqueeze(-1)], dim=-1)
    assert torch.allclose(R.transpose(1, 2) @ R, A.transpose(1, 2) @ A, rtol=1e-12, atol=1e-10)
    assert torch.allclose((R[:, :, -1] ** 2).sum(1), small_chunks.rss(P, index), rtol=1e-12)


def test_each_start_converges_on_its_own():
    problem = _problem(noise=0.05)
    evaluator = LocalEvaluator(problem.model, problem.data)
    starts = torch.tensor([[5.0, 0.3], [1.0, 1.0], [50.0, 0.01], [0.1, 3.0]], dtype=torch.float64)
    result = levenberg_marquardt(evaluator, starts, torch.zeros(4, dtype=torch.long), -INF, INF,
                                 LMOptions(ftol=1e-14, xtol=1e-14, max_iter=500))
    assert result.converged.all()
    assert (result.n_iter[0] < result.n_iter[2])  # a start at the answer needs fewer steps than a far one
    assert torch.allclose(result.params, result.params[0].expand(4, 2), rtol=1e-8)


def test_a_start_where_the_model_is_not_finite_fails_alone():
    problem = _problem("b1*log(b2*x)")
    evaluator = LocalEvaluator(problem.model, problem.data)
    starts = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    result = levenberg_marquardt(evaluator, starts, torch.zeros(2, dtype=torch.long), -INF, INF)
    assert result.status[0] == Status.FAILED and result.status[1] > 0


def test_known_answer_to_many_digits():
    x = np.linspace(0, 4, 25)
    fit = curve_fit("a*exp(-b*x) + c", x=x, y=2.5 * np.exp(-1.3 * x) + 0.7, p0=[1, 1, 0], starts=16)
    assert fit.params == pytest.approx({"a": 2.5, "b": 1.3, "c": 0.7}, rel=1e-10)
    assert fit.converged and fit.rss < 1e-20


def test_bounds_are_respected_and_active_at_the_solution():
    x = np.linspace(0, 4, 30)
    y = 2.5 * np.exp(-1.3 * x)
    fit = curve_fit("a*exp(-b*x)", x=x, y=y, p0={"a": 1, "b": 0.5}, bounds="b=0:1", starts=32)
    assert fit.params["b"] == pytest.approx(1.0, abs=1e-12)
    assert 0 <= fit.params["b"] <= 1


def test_start_design_keeps_p0_first_and_respects_bounds():
    p0 = torch.tensor([2.0, 0.0, 5.0], dtype=torch.float64)
    lower = torch.tensor([-math.inf, -1.0, 1.0], dtype=torch.float64)
    upper = torch.tensor([math.inf, 1.0, 1000.0], dtype=torch.float64)
    starts = design_starts(p0, 64, lower, upper, seed=3)
    assert starts.shape == (64, 3) and torch.equal(starts[0], p0)
    assert (starts >= lower).all() and (starts <= upper).all()
    ratios = starts[1:, 0].abs() / 2.0  # spread across orders of magnitude around p0
    assert ratios.min() < 0.1 and ratios.max() > 10
    assert torch.equal(design_starts(p0, 64, lower, upper, seed=3), starts)  # seeded


def test_gauss_newton_refinement_does_not_move_an_exact_optimum():
    problem = _problem(noise=0.05)
    evaluator = LocalEvaluator(problem.model, problem.data)
    index = torch.zeros(1, dtype=torch.long)
    result = levenberg_marquardt(evaluator, torch.tensor([[5.0, 0.3]], dtype=torch.float64), index, -INF, INF,
                                 LMOptions(ftol=1e-8, xtol=1e-8))
    refined = gauss_newton_refine(evaluator, result, index, -INF, INF)
    assert refined.rss[0] <= result.rss[0] * (1 + 1e-13)
    grad = torch.einsum("ij,i->j", refined.R[0, :2, :2], refined.R[0, :2, 2])
    assert grad.abs().max() < 1e-10 * refined.R[0, :2, :2].abs().max()


def test_symmetric_optima_keep_the_labels_p0_asks_for():
    # Two Gaussian peaks: swapping them gives the same RSS; p0 names the left one "a".
    x = np.linspace(0, 10, 120)
    y = 3 * np.exp(-(x - 3) ** 2) + 1.5 * np.exp(-(x - 7) ** 2)
    formula = "ha*exp(-(x-ma)^2) + hb*exp(-(x-mb)^2)"
    left = curve_fit(formula, x=x, y=y, p0={"ha": 2, "ma": 2.5, "hb": 1, "mb": 7.5}, starts=64)
    right = curve_fit(formula, x=x, y=y, p0={"ha": 1, "ma": 7.5, "hb": 2, "mb": 2.5}, starts=64)
    assert left.params["ma"] == pytest.approx(3, rel=1e-9) and right.params["ma"] == pytest.approx(7, rel=1e-9)


def test_many_starts_escape_a_bad_p0():
    # NIST BoxBOD from start 1 defeats plain Levenberg-Marquardt; the start design recovers it.
    x = np.array([1, 2, 3, 5, 7, 10.0])
    y = np.array([109, 149, 149, 191, 213, 224.0])
    single = curve_fit("b1*(1-exp(-b2*x))", x=x, y=y, p0=[1, 1], starts=1, on_unidentifiable="warn")
    many = curve_fit("b1*(1-exp(-b2*x))", x=x, y=y, p0=[1, 1], starts=64)
    assert many.rss < single.rss
    assert many.params["b1"] == pytest.approx(2.1380940889e2, rel=1e-8)
