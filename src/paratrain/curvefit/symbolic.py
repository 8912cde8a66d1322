"""A formula's values and exact partial derivatives as a handful of NumPy array ops.

The fast group path (:mod:`~paratrain.curvefit.fastlm`) needs the Jacobian of
1,000 small fits every iteration. Torch's forward-mode autodiff under vmap costs
a few milliseconds of dispatch per call whatever the size; a NumPy op costs a
few microseconds, so at 50,000 elements the arithmetic itself dominates, and
what counts is the number of passes over (fits x rows) arrays.

The syntax tree (from the safe parser, :mod:`paratrain.models.formula`; text is
never evaluated) is compiled once into a flat post-order list of steps. Each
step computes one node's value and its *tangents*: its partial derivative with
respect to each parameter it depends on. A node that does not depend on a
parameter carries no tangent for it (forward-mode differentiation, with the
sparsity of the tree).

Every quantity is kept as a pair ``(factor, array)`` meaning ``factor * array``,
where the factor is constant along the rows (a scalar, or (fits, 1) like a
parameter) and the array is (fits, rows), or None for 1. Multiplying by a
parameter, negating or dividing by a constant then only touches the small
factor; the full array is formed when an addition or a function needs it. For
``a*exp(-b*x) + c`` that is five passes for the value and one for all three
derivatives (d/db = -a * (x exp(-b x)) stays a factor -a times one array, and
d/dc is the pair (1, None)); the normal equations take the factors out of their
dot products.

Derivative conventions at kinks and zeros follow torch's autograd, so this
Jacobian and the general path's agree: abs'(0) = 0, d/du u^v = 0 where v = 0,
d/dv u^v = 0 where u = 0 and v >= 0, and min/max split a tie evenly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from paratrain.models.formula import Binary, Call, Formula, Name, Number, Unary, children

__all__ = ["CompiledFormula", "compile_formula", "supported", "dense", "ONE", "Workspace"]

ONE = np.float64(1.0)
"""The unit factor; products with it are skipped (tested by identity)."""


def _sigmoid(u, out=None):
    from scipy.special import expit  # lazy: scipy.special costs a noticeable import

    return expit(u, out=out)


def _erf(u, out=None):
    from scipy.special import erf

    return erf(u, out=out)


# name -> (value, derivative from (argument, value)). A function of the parser's FUNCTIONS
# missing here (and from _TWO_ARGUMENTS) sends its formulas to the general path.
_ONE_ARGUMENT: dict[str, tuple[Callable, Callable]] = {
    "exp": (np.exp, lambda u, v: v),
    "log": (np.log, lambda u, v: 1.0 / u),
    "log10": (np.log10, lambda u, v: 1.0 / (u * math.log(10.0))),
    "log2": (np.log2, lambda u, v: 1.0 / (u * math.log(2.0))),
    "sqrt": (np.sqrt, lambda u, v: 0.5 / v),
    "abs": (np.abs, lambda u, v: np.sign(u)),
    "sin": (np.sin, lambda u, v: np.cos(u)),
    "cos": (np.cos, lambda u, v: -np.sin(u)),
    "tan": (np.tan, lambda u, v: 1.0 + v * v),
    "arctan": (np.arctan, lambda u, v: 1.0 / (1.0 + u * u)),
    "atan": (np.arctan, lambda u, v: 1.0 / (1.0 + u * u)),
    "sinh": (np.sinh, lambda u, v: np.cosh(u)),
    "cosh": (np.cosh, lambda u, v: np.sinh(u)),
    "tanh": (np.tanh, lambda u, v: 1.0 - v * v),
    "sigmoid": (_sigmoid, lambda u, v: v * (1.0 - v)),
    "erf": (_erf, lambda u, v: (2.0 / math.sqrt(math.pi)) * np.exp(-u * u)),
}
_TWO_ARGUMENTS = ("min", "max", "pow")


def supported(formula: Formula) -> bool:
    """Whether every function the formula calls has a derivative rule here."""
    stack = [formula.root]
    while stack:
        node = stack.pop()
        if isinstance(node, Call) and node.function not in _ONE_ARGUMENT and node.function not in _TWO_ARGUMENTS:
            return False
        stack.extend(children(node))
    return True


def dense(quantity: tuple, workspace: Workspace | None = None):
    """``factor * array`` of a (factor, array) pair: an array, or the factor alone when array is None."""
    factor, array = quantity
    if array is None:
        return factor
    return array if factor is ONE else np.multiply(factor, array, out=_out(workspace))


class Workspace:
    """Output arrays reused from one evaluation to the next (all of the data's shape).

    Why: an evaluation makes a handful of (fits x rows) temporaries. Freed each time, glibc
    returns that memory to the system and the next evaluation faults it back in page by
    page: measured, up to ~1,000 page faults and 2 ms of system time per ``fit_groups`` of
    1,000 x 50 rows. Arrays handed out stay valid until the next :meth:`start`.
    """

    def __init__(self):
        self._buffers: list[np.ndarray] = []
        self._used = 0
        self._shape: tuple[int, ...] = ()

    def start(self, shape: tuple[int, ...]) -> None:
        """Begin an evaluation on data of ``shape``: every buffer is free again."""
        self._used, self._shape = 0, shape

    def next(self) -> np.ndarray:
        size = math.prod(self._shape)
        if self._used == len(self._buffers):
            self._buffers.append(np.empty(size))
        elif self._buffers[self._used].size < size:
            self._buffers[self._used] = np.empty(size)
        self._used += 1
        return self._buffers[self._used - 1][:size].reshape(self._shape)


def _out(workspace: Workspace | None) -> np.ndarray | None:
    """Where a data-shaped result goes: a reused buffer, or None (NumPy allocates)."""
    return None if workspace is None else workspace.next()


class CompiledFormula:
    """``evaluate(params, columns)`` -> (values, [d values / d param_j as (factor, array) pairs]).

    Args:
        formula: The parsed formula.
        param_names: Parameter order of ``params`` and of the derivatives.
        variables: Order of ``columns``.

    Example:
        >>> from paratrain.models.formula import parse_formula
        >>> f = compile_formula(parse_formula("a*x^2 + b"), ["a", "b"], ["x"])
        >>> value, (da, db) = f.evaluate([np.array([[2.0]]), np.array([[1.0]])], [np.array([[3.0]])])
        >>> value.tolist(), dense(da).tolist(), float(dense(db))
        ([[19.0]], [[9.0]], 1.0)
    """

    def __init__(self, formula: Formula, param_names: Sequence[str], variables: Sequence[str]):
        if not supported(formula):
            raise ValueError(f"formula {formula.text!r} calls a function without a derivative rule")
        self.formula = formula
        self.k = len(param_names)
        self._steps: list[tuple[Callable, tuple[int, ...], object]] = []
        self._compile(formula.root, {n: j for j, n in enumerate(param_names)},
                      {n: j for j, n in enumerate(variables)})

    def _compile(self, root, params, variables) -> None:
        # Post-order without recursion (the parser allows trees 200 levels deep).
        slots: dict[int, int] = {}
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            kids = children(node)
            if not ready and kids:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(kids))
                continue
            args = tuple(slots[id(child)] for child in kids)
            slots[id(node)] = len(self._steps)
            self._steps.append(_step(node, args, params, variables))

    def evaluate(self, params: Sequence[np.ndarray], columns: Sequence[np.ndarray],
                 derivatives: bool = True, workspace: Workspace | None = None) -> tuple[np.ndarray, list]:
        """Values and (if asked) the k partial derivatives.

        Args:
            params: k arrays, typically (G, 1): one value per data set.
            columns: The variables, typically (G, m).
            derivatives: False: values only (the derivative list is empty).
            workspace: Where to put the (fits x rows) results (see :class:`Workspace`); None: new arrays.

        Returns:
            The values (broadcastable to the columns' shape) and k (factor, array) pairs
            (see the module docstring and :func:`dense`). NumPy's floating-point warnings are
            the caller's to silence: a trial point may overflow, and that is an answer.
        """
        values: list = [None] * len(self._steps)
        tangents: list = [None] * len(self._steps)
        ws = workspace
        for i, (function, args, data) in enumerate(self._steps):
            values[i], tangents[i] = function(data, args, values, tangents, params, columns, derivatives, ws)
        tangent = tangents[-1] or {}
        jacobian = [tangent.get(j, (np.float64(0.0), None)) for j in range(self.k)] if derivatives else []
        return dense(values[-1], ws), jacobian


def compile_formula(formula: Formula, param_names: Sequence[str], variables: Sequence[str]) -> CompiledFormula:
    """Compile once, evaluate every iteration (see :class:`CompiledFormula`)."""
    return CompiledFormula(formula, param_names, variables)


# -- arithmetic on (factor, array) pairs ----------------------------------------------


def _scale(f1, f2):
    return f2 if f1 is ONE else f1 if f2 is ONE else f1 * f2


def _mul(p: tuple, q: tuple, ws: Workspace | None) -> tuple:
    (f1, a1), (f2, a2) = p, q
    factor = _scale(f1, f2)
    if a1 is None:
        return factor, a2
    if a2 is None:
        return factor, a1
    return factor, np.multiply(a1, a2, out=_out(ws))


def _div(p: tuple, q: tuple, ws: Workspace | None) -> tuple:
    (f1, a1), (f2, a2) = p, q
    factor = f1 if f2 is ONE else f1 / f2
    if a2 is None:
        return factor, a1
    return factor, np.divide(1.0 if a1 is None else a1, a2, out=_out(ws))


def _neg(p: tuple) -> tuple:
    return -p[0], p[1]


def _add(p: tuple, q: tuple, ws: Workspace | None) -> tuple:
    (f1, a1), (f2, a2) = p, q
    if a1 is a2:  # both row-constant, or the same array
        return f1 + f2, a1
    return ONE, np.add(dense(p, ws), dense(q, ws), out=_out(ws))


def _wrap(value) -> tuple:
    """An evaluated value as a pair: row-constant values (scalar or (n, 1)) stay factors."""
    if np.ndim(value) == 0 or value.shape[-1] == 1:
        return value, None
    return ONE, value


# -- steps: each returns (value, {parameter index: tangent}) as pairs ------------------


def _step(node, args, params, variables):
    if isinstance(node, Number):
        return _number, args, (np.float64(node.value), None)
    if isinstance(node, Name):
        if node.name in params:
            return _parameter, args, params[node.name]
        return _variable, args, variables[node.name]
    if isinstance(node, Unary):
        return _negate, args, None
    if isinstance(node, Binary):
        return _BINARY[node.op], args, None
    if node.function in _ONE_ARGUMENT:
        return _call, args, _ONE_ARGUMENT[node.function]
    return {"min": _minimum, "max": _maximum, "pow": _power}[node.function], args, None


def _number(value, args, values, tangents, params, columns, derivatives, ws):
    return value, None


def _parameter(j, args, values, tangents, params, columns, derivatives, ws):
    return (params[j], None), {j: (ONE, None)}


def _variable(j, args, values, tangents, params, columns, derivatives, ws):
    return (ONE, columns[j]), None


def _combine(left: dict | None, right: dict | None, on_left, on_right, on_both) -> dict | None:
    """Tangents of a binary node from its children's, applying a rule per case."""
    if not left and not right:
        return None
    out = {}
    for j in (left or {}).keys() | (right or {}).keys():
        in_left, in_right = left is not None and j in left, right is not None and j in right
        if in_left and in_right:
            out[j] = on_both(left[j], right[j])
        elif in_left:
            out[j] = on_left(left[j])
        else:
            out[j] = on_right(right[j])
    return out


def _negate(_, args, values, tangents, params, columns, derivatives, ws):
    (a,) = args
    tangent = tangents[a]
    return _neg(values[a]), ({j: _neg(t) for j, t in tangent.items()} if derivatives and tangent else None)


def _plus(_, args, values, tangents, params, columns, derivatives, ws):
    a, b = args
    tangent = _combine(tangents[a], tangents[b], lambda s: s, lambda t: t, lambda s, t: _add(s, t, ws)) \
        if derivatives else None
    return _add(values[a], values[b], ws), tangent


def _minus(_, args, values, tangents, params, columns, derivatives, ws):
    a, b = args
    tangent = _combine(tangents[a], tangents[b], lambda s: s, _neg, lambda s, t: _add(s, _neg(t), ws)) \
        if derivatives else None
    return _add(values[a], _neg(values[b]), ws), tangent


def _times(_, args, values, tangents, params, columns, derivatives, ws):
    a, b = args
    u, v = values[a], values[b]
    tangent = _combine(tangents[a], tangents[b], lambda s: _mul(s, v, ws), lambda t: _mul(u, t, ws),
                       lambda s, t: _add(_mul(s, v, ws), _mul(u, t, ws), ws)) if derivatives else None
    return _mul(u, v, ws), tangent


def _divide(_, args, values, tangents, params, columns, derivatives, ws):
    a, b = args
    u, v = values[a], values[b]
    q = _div(u, v, ws)
    if not derivatives or not (tangents[a] or tangents[b]):
        return q, None
    # d(u/v) = (du - q dv) / v
    tangent = _combine(tangents[a], tangents[b], lambda s: _div(s, v, ws),
                       lambda t: _neg(_div(_mul(q, t, ws), v, ws)),
                       lambda s, t: _div(_add(s, _neg(_mul(q, t, ws)), ws), v, ws))
    return q, tangent


def _pow(u, v, du: dict | None, dv: dict | None, derivatives: bool, ws: Workspace | None):
    u, v = dense(u, ws), dense(v, ws)
    value = np.power(u, v)
    if not derivatives or not (du or dv):
        return _wrap(value), None
    # torch's conventions: d/du is 0 where v == 0; d/dv is 0 where u == 0 and v >= 0. torch
    # masks after the chain rule, so the u-term is 0 there even when u's own tangent is not
    # finite (u = a/0, say): the mask is applied to the product, not to the factor alone.
    if du:
        base = _wrap(v * np.power(u, v - 1.0))
        zero_exponent = v == 0
    if dv:
        exponent = _wrap(np.where((u == 0) & (v >= 0), 0.0, value * np.log(u)))

    def through_u(s: tuple) -> tuple:
        if not np.any(zero_exponent):
            return _mul(s, base, ws)
        if np.ndim(zero_exponent) == 0:
            return np.float64(0.0), None
        return _wrap(np.where(zero_exponent, 0.0, dense(_mul(s, base, ws), ws)))

    tangent = _combine(du, dv, through_u, lambda t: _mul(t, exponent, ws),
                       lambda s, t: _add(through_u(s), _mul(t, exponent, ws), ws))
    return _wrap(value), tangent


def _power(_, args, values, tangents, params, columns, derivatives, ws):
    a, b = args
    return _pow(values[a], values[b], tangents[a], tangents[b], derivatives, ws)


def _call(rule, args, values, tangents, params, columns, derivatives, ws):
    (a,) = args
    function, derivative = rule
    u = dense(values[a], ws)
    value = function(u) if values[a][1] is None else function(u, out=_out(ws))
    tangent = tangents[a]
    if not derivatives or not tangent:
        return _wrap(value), None
    slope = _wrap(derivative(u, value))
    return _wrap(value), {j: _mul(slope, t, ws) for j, t in tangent.items()}


def _extreme(pick, args, values, tangents, derivatives, ws):
    """min / max: the chosen argument's tangent; the mean of both at a tie (as torch)."""
    a, b = args
    u, v = dense(values[a], ws), dense(values[b], ws)
    value = pick(u, v)
    if not derivatives or not (tangents[a] or tangents[b]):
        return _wrap(value), None
    # weight of u's tangent: 1 where u wins, 1/2 at a tie, 0 where v wins (or NaN).
    winner = (u < v) if pick is np.minimum else (u > v)
    weight = np.where(u == v, 0.5, winner.astype(np.float64))
    left, right = _wrap(weight), _wrap(1.0 - weight)
    tangent = _combine(tangents[a], tangents[b], lambda s: _mul(s, left, ws), lambda t: _mul(t, right, ws),
                       lambda s, t: _add(_mul(s, left, ws), _mul(t, right, ws), ws))
    return _wrap(value), tangent


def _minimum(_, args, values, tangents, params, columns, derivatives, ws):
    return _extreme(np.minimum, args, values, tangents, derivatives, ws)


def _maximum(_, args, values, tangents, params, columns, derivatives, ws):
    return _extreme(np.maximum, args, values, tangents, derivatives, ws)


_BINARY = {"+": _plus, "-": _minus, "*": _times, "/": _divide, "^": _power}
