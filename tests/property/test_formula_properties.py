"""Formula text from anywhere: the parser gives a Formula or a one-line FormulaError, never
runs the text, and a parsed formula means what it says (checked against numpy)."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from paratrain.errors import FormulaError, ParatrainError
from paratrain.models.formula import MAX_TREE_DEPTH, FormulaModel, parse_formula
from tests.property.formula_trees import names_in, reference, render, trees
from tests.property.helpers import one_line

# Formula-like text: the grammar's own characters plus the ones it must refuse.
_FORMULA_ALPHABET = st.sampled_from(list("abxyz019.e+-*/^(),_ ") + ["**", "exp", "log", "pi", "__", "'", "[", "]",
                                                                     "lambda", ":", "=", ";", "\n", "@", "é", "²"])
formula_like = st.lists(_FORMULA_ALPHABET, max_size=30).map("".join)

HOSTILE = [
    "__import__('os').system('touch {sentinel}')",
    "__import__(\"os\").system(\"touch {sentinel}\")",
    "exec(\"open('{sentinel}', 'w')\")",
    "eval('1')",
    "open('{sentinel}', 'w')",
    "lambda: open('{sentinel}', 'w')",
    "(lambda x: x)(1)",
    "x.__class__",
    "x.__class__.__mro__[1].__subclasses__()",
    "().__class__.__bases__[0]",
    "a.real",
    "exp.__globals__",
    "__builtins__",
    "__dict__ + a",
    "globals()",
    "os.system('touch {sentinel}')",
    "[a for a in b]",
    "a if b else c",
    "a; import os",
    "a\nimport os",
    "f'{{a}}'",
    "b'x'",
    "x[0]",
    "a = 1",
    "a == b",
    "a @ b",
    "a % b",
    "a // b",
    "~a",
    "a and b",
    "not a",
    "a < b",
    "a, b",
    "print(a)",
    "getattr(a, 'b')",
    "breakpoint()",
    "__import__",
    "sin(x, y)",
    "sin()",
    "max(a)",
    "pi(x)",
    "2(x)",
    "()",
    "(",
    ")",
    "",
    "   ",
    "1e999*x",
    "a" * 5000 + "(",
    "(" * 1000 + "a" + ")" * 1000,
    "-" * 1000 + "a",
    "a^" * 300 + "a",
]


def _parse_or_refuse(text):
    try:
        formula = parse_formula(text)
    except FormulaError as error:
        assert one_line(str(error)), repr(str(error))
        assert len(str(error)) < 600, "the message quotes a long formula in full"
        return None
    return formula


@given(text=formula_like)
@example(text="a" * 10000)
@example(text="a+" * 2000 + "a")
def test_formula_like_text_parses_or_refuses(text):
    formula = _parse_or_refuse(text)
    if formula is not None:
        assert set(formula.names) <= set(text.replace("(", " ").replace(")", " ").split()) | {
            n for n in formula.names if n in text}


@given(text=st.text(max_size=40))
def test_any_text_parses_or_refuses(text):
    _parse_or_refuse(text)


@pytest.mark.parametrize("template", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_refused_and_nothing_runs(template, tmp_path):
    sentinel = tmp_path / "ran"
    text = template.format(sentinel=sentinel)
    called = []

    def forbidden(*args, **kwargs):
        called.append(args)
        raise AssertionError("the parser called a Python code runner")

    # Only around the parse itself: pytest needs these builtins afterwards.
    saved = {name: getattr(builtins, name) for name in ("eval", "exec", "compile")}
    error = None
    try:
        for name in saved:
            setattr(builtins, name, forbidden)
        parse_formula(text)
    except FormulaError as refused:
        error = refused
    finally:
        for name, runner in saved.items():
            setattr(builtins, name, runner)
    assert error is not None, f"{text!r} was accepted"
    assert not called and not sentinel.exists()
    assert one_line(str(error)), str(error)


@pytest.mark.parametrize("text", ["a.real", "x.__class__", "exp.__globals__"])
def test_attribute_access_names_the_dot(text):
    with pytest.raises(FormulaError, match="attribute access|'__'"):
        parse_formula(text)


# --- random syntax trees ----------------------------------------------------------------

X = np.linspace(0.3, 2.7, 7)
T = np.linspace(-1.5, 1.5, 7)
VALUES = {"a": 0.7, "b": 1.3, "c": -0.4, "x": X, "t": T}


@given(tree=trees, space=st.sampled_from(["", " ", "  "]))
@example(tree=("^", ("number", "2"), ("^", ("number", "3"), ("number", "2"))), space="")
@example(tree=("neg", ("^", ("name", "x"), ("number", "2"))), space=" ")
def test_parsed_tree_evaluates_like_numpy(tree, space):
    text = render(tree, space)
    formula = parse_formula(text)
    assert set(formula.names) == names_in(tree)
    env = {name: torch.as_tensor(value, dtype=torch.float64) for name, value in VALUES.items()}
    got = np.broadcast_to(formula.evaluate(env).numpy(), X.shape)
    with np.errstate(all="ignore"):
        expected = np.broadcast_to(reference(tree, {k: np.asarray(v, dtype=np.float64) for k, v in VALUES.items()}),
                                   X.shape)
    finite = np.isfinite(expected) & (np.abs(expected) < 1e100)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-12)


@given(tree=trees)
def test_rendered_text_round_trips(tree):
    """Parsing the text of a parsed formula again gives the same names and values."""
    text = render(tree)
    first = parse_formula(text)
    second = parse_formula(f"({text})")
    assert first.names == second.names


@given(depth=st.integers(1, 400))
def test_deep_nesting_is_refused_not_a_recursion_error(depth):
    for text in ("(" * depth + "a" + ")" * depth, "-" * depth + "a", "exp(" * depth + "a" + ")" * depth,
                 "a^" * depth + "a"):
        formula = _parse_or_refuse(text)
        if formula is not None:
            formula.evaluate({"a": torch.tensor([0.5], dtype=torch.float64)})


@given(tree=trees)
def test_formula_model_predicts_or_refuses(tree):
    """A training formula model: a clean module (finite or honestly non-finite output) or a FormulaError."""
    text = render(tree)
    try:
        model = FormulaModel(text, ["x", "t"], dtype=torch.float64)
    except ParatrainError as error:
        assert one_line(str(error))
        return
    X2 = torch.as_tensor(np.stack([X, T], axis=1))
    out = model(X2)
    assert out.shape == (len(X), 1)
