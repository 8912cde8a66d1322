"""Curve fitting with random formulas: curvefit's own compiler (symbolic.py) agrees with the
parser's torch evaluation, and a fit ends in a finite result or a one-line ParatrainError."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from paratrain.curvefit import curve_fit, fit_groups
from paratrain.curvefit.fit import CurveFitWarning
from paratrain.curvefit.symbolic import compile_formula, dense
from paratrain.errors import ParatrainError
from paratrain.models.formula import parse_formula
from tests.property.formula_trees import render, trees
from tests.property.helpers import THOROUGH, one_line

X = np.linspace(0.2, 3.0, 9)
P = np.array([[0.7, 1.3, -0.4], [1.5, 0.6, 0.9]])  # two parameter sets for a, b, c


def _torch_values_and_jacobian(formula, names, x):
    X_t = torch.tensor(x)

    def model(p):
        env = {n: p[:, j:j + 1] for j, n in enumerate(names)}
        env["x"] = X_t
        if "t" in formula.names:
            env["t"] = X_t
        return torch.broadcast_to(formula.evaluate(env), (p.shape[0], len(x)))

    p = torch.tensor(P[:, :len(names)])
    # Reverse mode: torch's forward-mode rule for minimum/maximum cancels catastrophically
    # (jvp of minimum(b, b**81) at b=2 is 0, not 1), found by this property.
    full = torch.func.jacrev(model)(p)  # (parameter sets, rows, parameter sets, parameters)
    sets = torch.arange(p.shape[0])
    jacobian = [full[sets, :, sets, j].numpy() for j in range(len(names))]
    return model(p).numpy(), jacobian


@given(tree=trees)
@example(tree=("pow", ("name", "a"), ("name", "x")))
@example(tree=("min", ("name", "b"), ("pow", ("name", "b"), ("number", "81.0"))))
@example(tree=("pow", ("/", ("name", "a"), ("number", "0.0")), ("number", "0.0")))
@example(tree=("/", ("name", "a"), ("-", ("name", "x"), ("name", "x"))))
def test_compiled_formula_matches_torch(tree):
    formula = parse_formula(render(tree))
    names = [n for n in formula.names if n in ("a", "b", "c")]
    variables = [n for n in formula.names if n in ("x", "t")]
    program = compile_formula(formula, names, variables)
    columns = [np.broadcast_to(X, (len(P), len(X))) for _ in variables]
    with np.errstate(all="ignore"):
        value, jacobian = program.evaluate([P[:, j:j + 1] for j in range(len(names))], columns)
        expected_value, expected = _torch_values_and_jacobian(formula, names, X)
    value = np.broadcast_to(value, expected_value.shape)
    finite = np.isfinite(expected_value) & (np.abs(expected_value) < 1e100)
    np.testing.assert_allclose(value[finite], expected_value[finite], rtol=1e-9, atol=1e-12)
    for j, name in enumerate(names):
        got = np.broadcast_to(dense(jacobian[j]), expected[j].shape)
        ok = finite & np.isfinite(expected[j]) & (np.abs(expected[j]) < 1e100)
        np.testing.assert_allclose(got[ok], expected[j][ok], rtol=1e-7, atol=1e-9, err_msg=f"d/d{name}")


def _fit_or_refuse(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CurveFitWarning)
        try:
            return call()
        except ParatrainError as error:
            assert one_line(str(error)), str(error)
            return None


@settings(max_examples=200 if THOROUGH else 40)
@given(tree=trees, noise=st.floats(0, 0.1))
@example(tree=("*", ("name", "a"), ("exp", ("*", ("name", "b"), ("name", "x")))), noise=0.01)
@example(tree=("log", ("-", ("name", "a"), ("number", "100"))), noise=0.0)
def test_curve_fit_is_finite_or_refused(tree, noise):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": X, "t": X[::-1], "y": np.sin(X) + noise * rng.normal(size=len(X))})
    result = _fit_or_refuse(lambda: curve_fit(render(tree), frame, starts=4, max_iter=50, refine=1,
                                              on_unidentifiable="warn"))
    if result is not None:
        # No silent NaN model: a result's parameters and residual sum of squares are numbers.
        assert all(np.isfinite(v) for v in result.params.values()), result.params
        assert np.isfinite(result.rss)


@settings(max_examples=100 if THOROUGH else 25)
@given(tree=trees)
def test_fit_groups_marks_every_nan(tree):
    rng = np.random.default_rng(1)
    x = np.tile(X, 3)
    frame = pd.DataFrame({"g": np.repeat(["p", "q", "r"], len(X)), "x": x, "t": x,
                          "y": np.exp(-x) + 0.01 * rng.normal(size=len(x))})
    table = _fit_or_refuse(lambda: fit_groups(render(tree), frame, group_by="g", starts=1, max_iter=30))
    if table is not None:
        names = [n for n in parse_formula(render(tree)).names if n in ("a", "b", "c")]
        for _, row in table.iterrows():
            # A NaN parameter is only allowed where the row's message and flag say the fit failed.
            if not all(np.isfinite(row[name]) for name in names):
                assert not row["converged"] and row["message"], row
