"""Tests for the safe formula parser, its torch evaluation and the built-in families."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from paratrain.errors import ConfigError, DataError, FormulaError
from paratrain.models import families, formula as formula_module
from paratrain.models.families import FAMILIES, family_formula
from paratrain.models.formula import FormulaModel, evaluate_batched, parse_formula

RNG = np.random.default_rng(0)
X_POSITIVE = RNG.uniform(0.5, 3.0, size=50)  # positive so log/sqrt/fractional powers are defined
Y_ANY = RNG.uniform(-2.0, 2.0, size=50)


def _evaluate(text: str, **values: np.ndarray | float) -> np.ndarray:
    env = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}
    return parse_formula(text).evaluate(env).numpy()


# --- values ------------------------------------------------------------------

CASES = [
    ("2^3^2", lambda x, y: 512.0),
    ("2**3**2", lambda x, y: 512.0),
    ("-x^2", lambda x, y: -(x**2)),
    ("-x**2 + y", lambda x, y: -(x**2) + y),
    ("(-x)^2", lambda x, y: x**2),
    ("x/y/3", lambda x, y: (x / y) / 3),
    ("x - y - 1", lambda x, y: (x - y) - 1),
    ("1 + 2*x^2/4 - y", lambda x, y: 1 + 2 * x**2 / 4 - y),
    ("x^-1.5 * +y", lambda x, y: x**-1.5 * y),
    ("2^-x*3", lambda x, y: 2.0**-x * 3),
    ("- - x", lambda x, y: x),
    ("1.5e-3*x + 2E2 + .5", lambda x, y: 1.5e-3 * x + 200 + 0.5),
    ("pi*x + e", lambda x, y: np.pi * x + np.e),
    ("exp(y) + log(x) + log10(x) + log2(x) + sqrt(x)", lambda x, y: np.exp(y) + np.log(x) + np.log10(x) + np.log2(x) + np.sqrt(x)),
    ("abs(y) + sin(x) + cos(x) + tan(y/2)", lambda x, y: np.abs(y) + np.sin(x) + np.cos(x) + np.tan(y / 2)),
    ("arctan(y) + atan(x) + sinh(y) + cosh(y) + tanh(y)", lambda x, y: np.arctan(y) + np.arctan(x) + np.sinh(y) + np.cosh(y) + np.tanh(y)),
    ("sigmoid(y) + erf(y)", lambda x, y: 1 / (1 + np.exp(-y)) + np.array([math.erf(v) for v in y])),
    ("min(x, y) + max(x, 1) + pow(x, y)", lambda x, y: np.minimum(x, y) + np.maximum(x, 1) + x**y),
    ("exp(-(x - y)^2 / 2)", lambda x, y: np.exp(-((x - y) ** 2) / 2)),
    ("2*pi", lambda x, y: 2 * np.pi),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[c[0] for c in CASES])
def test_values_match_numpy(text, expected):
    got = _evaluate(text, x=X_POSITIVE, y=Y_ANY)
    np.testing.assert_allclose(np.broadcast_to(got, X_POSITIVE.shape), np.broadcast_to(expected(X_POSITIVE, Y_ANY), X_POSITIVE.shape), rtol=1e-12)


def test_precedence_results():
    assert _evaluate("2^3^2").item() == 512.0
    assert _evaluate("-2^2").item() == -4.0
    assert _evaluate("8/4/2").item() == 1.0
    assert _evaluate("2*3+4*5").item() == 26.0
    assert _evaluate("1/0").item() == math.inf  # torch semantics, not ZeroDivisionError


def test_float_and_int_inputs_follow_tensor_dtype():
    f = parse_formula("a*x + b")
    out = f.evaluate({"a": 2.0, "x": torch.tensor([1.0, 2.0], dtype=torch.float64), "b": torch.tensor(1)})
    assert out.dtype == torch.float64
    assert out.tolist() == [3.0, 5.0]


def test_broadcasting_params_over_data():
    f = parse_formula("b1*exp(b2*x)")
    b1, b2 = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[0.0], [0.5], [1.0]])
    x = torch.linspace(0, 1, 7)
    out = f.evaluate({"b1": b1, "b2": b2, "x": x})
    assert out.shape == (3, 7)
    torch.testing.assert_close(out, b1 * torch.exp(b2 * x))


def test_missing_name_is_reported_with_position():
    with pytest.raises(FormulaError, match=r"no value given for 'b2' at position 8 in 'b1\*exp\(b2\*x\)'"):
        parse_formula("b1*exp(b2*x)").evaluate({"b1": 1.0, "x": torch.ones(3)})


# --- gradients ---------------------------------------------------------------

GRADIENT_CASES = [
    ("b1*(1-exp(-b2*x))", {"b1": 2.0, "b2": 0.7}),
    ("b1/(1+exp(-b2*(x-b3)))", {"b1": 1.5, "b2": 1.3, "b3": 1.1}),
    ("b1*x^b2", {"b1": 0.8, "b2": 1.7}),
    ("b0 + b1*x + b2*x^2", {"b0": 0.1, "b1": -0.4, "b2": 0.3}),
    ("a*sin(w*x + p) + c*log(x)", {"a": 1.2, "w": 0.9, "p": 0.2, "c": -0.5}),
    ("sqrt(k*x) * tanh(m/x) + max(k, m)", {"k": 1.4, "m": 0.6}),
]


@pytest.mark.parametrize("text, params", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_gradients_match_finite_differences(text, params):
    f = parse_formula(text)
    x = torch.as_tensor(X_POSITIVE, dtype=torch.float64)
    weights = torch.as_tensor(RNG.normal(size=x.shape), dtype=torch.float64)

    def loss(values: dict[str, float]) -> torch.Tensor:
        env = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
        return (weights * f.evaluate({**env, "x": x})).sum(), env

    total, leaves = loss(params)
    total.backward()
    step = 1e-6
    for name, value in params.items():
        plus, _ = loss({**params, name: value + step})
        minus, _ = loss({**params, name: value - step})
        numeric = (plus - minus).item() / (2 * step)
        assert leaves[name].grad.item() == pytest.approx(numeric, rel=1e-6, abs=1e-8), name


# --- names -------------------------------------------------------------------


def test_names_in_order_of_first_appearance_without_functions_and_constants():
    f = parse_formula("c + b1*exp(x*b2) - pi*b1 + e^y + x")
    assert f.names == ("c", "b1", "x", "b2", "y")
    assert f.split_names(["y", "x", "unused"]) == (["x", "y"], ["c", "b1", "b2"])
    assert f.split_names([]) == ([], ["c", "b1", "x", "b2", "y"])
    assert str(f) == f.text


# --- refused inputs ----------------------------------------------------------

REFUSED = [
    ("__import__('os')", "names starting with '__' are not allowed", 1),
    ("b1*__class__", "names starting with '__' are not allowed", 4),
    ("os.system('ls')", "attribute access with '.' is not allowed", 3),
    ("x.real", "attribute access with '.' is not allowed", 2),
    ("(x).real", "attribute access with '.' is not allowed", 4),
    ("foo(x)", "unknown function 'foo'", 1),
    ("b1*foo(x)", "unknown function 'foo'", 4),
    ("(b1*x", "unclosed '(' opened", 1),
    ("exp(b1*x", "unclosed '(' opened", 4),
    ("b1*x)", "unexpected ')'", 5),
    ("b1*x[0]", "subscripts with '[' are not allowed", 5),
    ("b1;x", "unexpected character ';'", 3),
    ("lambda: 1", "unexpected character ':'", 7),
    ("b1 = x", "unexpected character '='", 4),
    ("b1@x", "unexpected character '@'", 3),
    ("$x", "unexpected character '$'", 1),
    ("b1*'x'", "strings are not allowed", 4),
    ('b1*"x"', "strings are not allowed", 4),
    ("", "formula is empty", 1),
    ("   ", "formula is empty", 1),
    ("b1 x", "missing operator before 'x'", 4),
    ("2x", "missing operator before 'x'", 2),
    ("(b1)(x)", "missing operator before '('", 5),
    ("b1*x (2)", "unknown function 'x'", 4),
    ("exp(x, 2)", "function 'exp' takes 1 argument but got 2", 1),
    ("max(x)", "function 'max' takes 2 arguments but got 1", 1),
    ("exp()", "function 'exp' takes 1 argument but got 0", 1),
    ("2(x)", "the number '2' cannot be called like a function", 1),
    ("pi(x)", "'pi' is a constant, not a function", 1),
    ("b1*exp", "'exp' is a function and needs arguments", 4),
    ("b1*", "formula ends where a number, name or '(' is expected", 4),
    ("b1*/x", "expected a number, name or '(' but found '/'", 4),
    ("()", "expected a number, name or '(' but found ')'", 2),
    ("b1, x", "unexpected ','", 3),
    ("1e999*x", "number '1e999' is too large", 1),
    ("x²", "unexpected character '²'", 2),
    ("(" * 60 + "x" + ")" * 60, "nested more than 50 levels deep", 51),
    ("+".join(["x"] * 300), "levels deep (at most 200)", None),
]


@pytest.mark.parametrize("text, fragment, position", REFUSED, ids=[repr(c[0][:20]) for c in REFUSED])
def test_refused_inputs_name_problem_and_position(text, fragment, position):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    message = str(info.value)
    assert fragment in message
    if position is not None:
        assert f"at position {position} in " in message
    assert isinstance(info.value, ValueError)  # FormulaError is a ValueError for callers


def test_unknown_function_lists_known_functions():
    with pytest.raises(FormulaError, match=r"known functions: abs, arctan, atan, cos, .*tanh"):
        parse_formula("b1*foo(x)")


def test_non_string_formula_is_refused():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(42)


def test_source_never_calls_eval_exec_or_compile():
    forbidden = {"eval", "exec", "compile", "__import__", "getattr"}
    for module in (formula_module, families):
        source = Path(module.__file__).read_text()
        # The lookbehind allows re.compile(...), a method, while refusing the builtins.
        assert not re.search(r"(?<![.\w])(eval|exec|compile|__import__)\s*\(", source), module.__name__
        # Same check on the syntax tree of our own (trusted) source, immune to formatting.
        called = {node.func.id for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert not called & forbidden, (module.__name__, called & forbidden)


# --- FormulaModel and evaluate_batched ---------------------------------------


def test_formula_model_forward_shapes_and_params():
    model = FormulaModel("b1*exp(b2*t) + c*u", ["u", "unused", "t"], init={"b2": 0.5, "c": -2.0})
    assert model.param_names == ["b1", "b2", "c"]
    assert model.variable_names == ["u", "unused", "t"]
    assert model.params_dict() == {"b1": 1.0, "b2": 0.5, "c": -2.0}
    assert [p.shape for p in model.parameters()] == [torch.Size([])] * 3
    X = torch.randn(9, 3)
    out = model(X)
    assert out.shape == (9, 1) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.exp(0.5 * X[:, 2]) - 2.0 * X[:, 0])
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_formula_model_without_variables_broadcasts_and_follows_module_dtype():
    model = FormulaModel("a + b", ["x"]).double()
    out = model(torch.zeros(4, 1))
    assert out.shape == (4, 1) and out.dtype == torch.float64
    assert out[:, 0].tolist() == [2.0] * 4


def test_formula_model_refusals():
    with pytest.raises(FormulaError, match="has no parameters"):
        FormulaModel("x^2 + pi", ["x"])
    with pytest.raises(FormulaError, match=r"init gives values for \['x', 'z'\]"):
        FormulaModel("b1*x", ["x"], init={"z": 1.0, "x": 2.0})
    with pytest.raises(FormulaError, match="must be a finite number"):
        FormulaModel("b1*x", ["x"], init={"b1": float("nan")})
    with pytest.raises(DataError, match="listed more than once"):
        FormulaModel("b1*x", ["x", "x"])
    with pytest.raises(TypeError, match="sequence of column names"):
        FormulaModel("b1*x", "x")
    with pytest.raises(DataError, match=r"shape \(n, 2\)"):
        FormulaModel("b1*x", ["x", "y"])(torch.zeros(5, 3))
    with pytest.raises(FormulaError, match="unknown function"):
        FormulaModel("b1*foo(x)", ["x"])


def test_formula_model_param_names_that_clash_with_torch_attributes():
    model = FormulaModel("type*x + values", ["x"])  # a ParameterDict would refuse these names
    assert model.params_dict() == {"type": 1.0, "values": 1.0}


def test_evaluate_batched_shape_and_values():
    f = parse_formula("b1/(1+exp(-b2*(x-b3))) + 0*z")
    params = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.5, 1.0]], dtype=torch.float64)
    X = torch.tensor(np.column_stack([Y_ANY, X_POSITIVE]))  # columns x, z
    out = evaluate_batched(f, params, ["b1", "b2", "b3"], X, ["x", "z"])
    assert out.shape == (2, 50)
    for row, (b1, b2, b3) in enumerate(params.tolist()):
        np.testing.assert_allclose(out[row].numpy(), b1 / (1 + np.exp(-b2 * (Y_ANY - b3))), rtol=1e-12)
    single = FormulaModel(f, ["x", "z"], init={"b1": 3.0, "b2": 0.5, "b3": 1.0}, dtype=torch.float64)
    torch.testing.assert_close(single(X)[:, 0], out[1])


def test_evaluate_batched_refusals():
    f = parse_formula("a*x")
    with pytest.raises(FormulaError, match=r"shape \(B, 1\)"):
        evaluate_batched(f, torch.ones(3), ["a"], torch.ones(4, 1), ["x"])
    with pytest.raises(DataError, match=r"shape \(n, 1\)"):
        evaluate_batched(f, torch.ones(3, 1), ["a"], torch.ones(4, 2), ["x"])
    with pytest.raises(FormulaError, match="both as parameters and as variables"):
        evaluate_batched(f, torch.ones(3, 2), ["a", "x"], torch.ones(4, 1), ["x"])
    with pytest.raises(FormulaError, match="no value given for 'a'"):
        evaluate_batched(f, torch.ones(3, 1), ["b"], torch.ones(4, 1), ["x"])


# --- families ----------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_families_parse_and_evaluate(name):
    text, init = family_formula(name)
    f = parse_formula(text)
    variables, params = f.split_names(["x"])
    assert variables == ["x"] and params == list(init)
    model = FormulaModel(text, ["x"], init=init, dtype=torch.float64)
    out = model(torch.as_tensor(X_POSITIVE, dtype=torch.float64).unsqueeze(1))
    assert out.shape == (50, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("degree", [1, 2, 5, 10])
def test_polynomial_degree(degree):
    text, init = family_formula("polynomial", degree=degree)
    assert list(init) == [f"b{k}" for k in range(degree + 1)]
    coefficients = RNG.normal(size=degree + 1)
    got = _evaluate(text, x=X_POSITIVE, **{f"b{k}": c for k, c in enumerate(coefficients)})
    np.testing.assert_allclose(got, np.polynomial.polynomial.polyval(X_POSITIVE, coefficients), rtol=1e-10)


def test_family_refusals():
    with pytest.raises(ConfigError, match="known families: polynomial, exponential, logarithmic, power, logistic"):
        family_formula("gaussian")
    for degree in (0, 11, 2.5, True):
        with pytest.raises(ConfigError, match="must be an integer from 1 to 10"):
            family_formula("polynomial", degree=degree)


def test_family_init_is_a_copy():
    _, init = family_formula("logistic")
    init["b1"] = 99.0
    assert family_formula("logistic")[1]["b1"] == 1.0
