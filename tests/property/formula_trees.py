"""Random syntax trees for the formula grammar, rendered as text and evaluated by a reference."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from paratrain.models.formula import FUNCTIONS

UNARY_FUNCTIONS = sorted(name for name, (arity, _) in FUNCTIONS.items() if arity == 1)
BINARY_FUNCTIONS = sorted(name for name, (arity, _) in FUNCTIONS.items() if arity == 2)
PARAMETERS = ("a", "b", "c")
VARIABLES = ("x", "t")

# numpy twins of the parser's torch functions, to check values independently.
_NUMPY = {
    "exp": np.exp, "log": np.log, "log10": np.log10, "log2": np.log2, "sqrt": np.sqrt, "abs": np.abs,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "arctan": np.arctan, "atan": np.arctan, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "sigmoid": lambda u: 1.0 / (1.0 + np.exp(-u)),
    "erf": np.vectorize(math.erf, otypes=[float]),
    "min": np.minimum, "max": np.maximum, "pow": np.power,
}

_LEAF = st.one_of(
    st.sampled_from(PARAMETERS + VARIABLES).map(lambda n: ("name", n)),
    st.floats(0, 100, allow_nan=False).map(lambda v: ("number", repr(round(v, 3)))),
    st.sampled_from(["pi", "e", "2", "0.5", "1e-3", "3E2", ".25"]).map(lambda t: ("number", t)),
)


def _extend(children):
    return st.one_of(
        st.tuples(st.just("neg"), children),
        st.tuples(st.sampled_from(["+", "-", "*", "/", "^", "**"]), children, children),
        st.tuples(st.sampled_from(UNARY_FUNCTIONS), children),
        st.tuples(st.sampled_from(BINARY_FUNCTIONS), children, children),
    )


trees = st.recursive(_LEAF, _extend, max_leaves=12)
"""A tree as nested tuples: ('name', n), ('number', text), ('neg', t), (op, l, r), (function, *args)."""


def render(tree, space: str = "") -> str:
    """Fully parenthesised text, so the text's meaning is the tree's whatever the precedence."""
    kind = tree[0]
    if kind in ("name", "number"):
        return tree[1]
    if kind == "neg":
        return f"(-{render(tree[1], space)})"
    if kind in ("+", "-", "*", "/", "^", "**"):
        return f"({render(tree[1], space)}{space}{kind}{space}{render(tree[2], space)})"
    return f"{kind}({', '.join(render(child, space) for child in tree[1:])})"


def reference(tree, env: dict[str, np.ndarray]) -> np.ndarray:
    """The tree's value with numpy, independent of the parser."""
    kind = tree[0]
    if kind == "name":
        return env[tree[1]]
    if kind == "number":
        return np.float64({"pi": math.pi, "e": math.e}.get(tree[1]) or float(tree[1]))
    args = [reference(child, env) for child in tree[1:]]
    if kind == "neg":
        return -args[0]
    if kind in ("^", "**"):
        return np.power(*args)
    if kind in ("+", "-", "*", "/"):
        left, right = args
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[kind](left, right)
    return _NUMPY[kind](*args)


def names_in(tree) -> set[str]:
    if tree[0] == "name":
        return {tree[1]}
    if tree[0] == "number":
        return set()
    return set().union(*(names_in(child) for child in tree[1:]))


def renamed(tree, mapping: dict[str, str]):
    """The tree with its names replaced (e.g. x -> x0 to use a table's column)."""
    if tree[0] == "name":
        return ("name", mapping.get(tree[1], tree[1]))
    if tree[0] == "number":
        return tree
    return (tree[0], *(renamed(child, mapping) for child in tree[1:]))
