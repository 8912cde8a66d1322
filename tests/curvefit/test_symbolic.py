"""The compiled formula: values and exact derivatives, checked against torch's forward-mode autodiff."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paratrain.curvefit import symbolic
from paratrain.curvefit.symbolic import Workspace, compile_formula, dense, supported
from paratrain.models.formula import FUNCTIONS, parse_formula

FORMULAS = [
    "a*exp(-b*x) + c",
    "a/(1 + exp(-b*(x - c)))",
    "a*x^b",
    "pow(x, a)*b",
    "sqrt(a*x + b)",
    "log(a*x) + b*log10(x) + log2(b*x)",
    "sin(a*x) + cos(b*x) + tan(a*x/10)",
    "arctan(a*x) + atan(b) + sinh(a*x/5) + cosh(b*x/5) + tanh(a*x)",
    "sigmoid(a*x) + erf(b*x)",
    "min(a*x, b) + max(a, b*x)",
    "abs(a*x - b)",
    "a^b^x",
    "-a/b + x/a - (x - b)/(a*b)",
    "a*2^x + b*x^2 - pi*e*a",
    "a*b*x",
    "a/x + b/(a*b) - 3/b + x/2 - (a - b)",
    "x*a - x*b + (a + b)*(x + 1) + a*a*x",
    "-(-a*x) - (-(b))",
    "a + b + x*0",
]


def _torch_reference(formula, names, P, x):
    """Values and d/d(each parameter) by torch.func.jvp on the parser's own torch evaluation."""
    parsed = parse_formula(formula)
    X = torch.tensor(x)

    def model(p):
        env = {n: p[:, j:j + 1] for j, n in enumerate(names)}
        return torch.broadcast_to(parsed.evaluate({**env, "x": X}), x.shape)

    p = torch.tensor(P)
    derivatives = []
    for j in range(len(names)):
        direction = torch.zeros_like(p)
        direction[:, j] = 1
        derivatives.append(torch.func.jvp(model, (p,), (direction,))[1].numpy())
    return model(p).numpy(), derivatives


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("with_workspace", [False, True])
def test_values_and_derivatives_match_autodiff(formula, with_workspace):
    rng = np.random.default_rng(0)
    parsed = parse_formula(formula)
    names = [n for n in parsed.names if n != "x"]
    x = rng.uniform(0.1, 3, (4, 7))
    P = rng.uniform(0.5, 2, (4, len(names)))
    program = compile_formula(parsed, names, ["x"])
    workspace = Workspace() if with_workspace else None
    if workspace is not None:
        workspace.start(x.shape)
    value, jacobian = program.evaluate([P[:, j:j + 1] for j in range(len(names))], [x], workspace=workspace)
    expected_value, expected = _torch_reference(formula, names, P, x)
    np.testing.assert_allclose(np.broadcast_to(value, x.shape), expected_value, rtol=1e-14)
    for j, name in enumerate(names):
        np.testing.assert_allclose(np.broadcast_to(dense(jacobian[j]), x.shape), expected[j], rtol=1e-12,
                                   atol=1e-12, err_msg=f"d/d{name} of {formula}")


def test_kinks_follow_torch_conventions():
    # abs'(0) = 0; d/du u^v = 0 at v = 0; d/dv u^v = 0 at u = 0, v >= 0; a tie of min splits evenly.
    x = np.array([[0.0, 1.0, 2.0]])
    for formula, P in [("abs(a*x)", [[1.0]]), ("x^a", [[0.0]]), ("a^x", [[0.0]]), ("min(a*x, 1)", [[1.0]])]:
        program = compile_formula(parse_formula(formula), ["a"], ["x"])
        with np.errstate(all="ignore"):  # 0^-1 and log(0) on the way, as in torch
            _, (da,) = program.evaluate([np.array(P)], [x])
        _, expected = _torch_reference(formula, ["a"], np.array(P), x)
        np.testing.assert_array_equal(np.broadcast_to(dense(da), x.shape), expected[0])


def test_row_constant_derivatives_stay_small():
    # d/dc of "... + c" is the pair (1, None): no (fits x rows) array is ever formed for it.
    program = compile_formula(parse_formula("a*exp(-b*x) + c"), ["a", "b", "c"], ["x"])
    P = np.array([[2.0, 0.5, 1.0]])
    _, (da, db, dc) = program.evaluate([P[:, j:j + 1] for j in range(3)], [np.linspace(0, 1, 5)[None]])
    assert dc[1] is None and float(dc[0]) == 1.0
    assert db[0].shape == (1, 1)  # the factor -a, times one array x*exp(-b*x)


def test_every_parser_function_has_a_rule():
    assert all(supported(parse_formula(f"{name}(x)" if arity == 1 else f"{name}(x, a)"))
               for name, (arity, _) in FUNCTIONS.items())


def test_a_function_without_a_rule_is_reported(monkeypatch):
    monkeypatch.delitem(symbolic._ONE_ARGUMENT, "erf")
    assert not supported(parse_formula("a*erf(b*x)"))
    with pytest.raises(ValueError, match="without a derivative rule"):
        compile_formula(parse_formula("a*erf(b*x)"), ["a", "b"], ["x"])


def test_workspace_reuses_its_buffers():
    workspace = Workspace()
    workspace.start((3, 4))
    first = [workspace.next() for _ in range(2)]
    workspace.start((2, 4))
    again = workspace.next()
    assert again.shape == (2, 4) and np.shares_memory(again, first[0])
