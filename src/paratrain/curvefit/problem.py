"""From user input (formula text, a table, target, p0, bounds) to checked float64 tensors.

Everything the user can get wrong is refused here, before any fitting, with a
message that names the column, row, parameter or value: the solver below can
then assume finite data, more rows than parameters and starts inside the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from paratrain.data.tables import numeric_values, preview_names
from paratrain.errors import ConfigError, DataError, FormulaError
from paratrain.models.formula import Formula, parse_formula

__all__ = ["Model", "FitData", "Problem", "build_problem", "parse_bounds", "parse_p0", "frame_from_arrays"]

DTYPE = torch.float64


@dataclass(frozen=True)
class Model:
    """A formula with its names split into parameters and data columns.

    Attributes:
        formula: The parsed formula.
        param_names: Parameters, in order of first appearance in the formula.
        variables: Data columns the formula uses, in order of first appearance.
    """

    formula: Formula
    param_names: tuple[str, ...]
    variables: tuple[str, ...]

    @property
    def k(self) -> int:
        return len(self.param_names)

    def predict(self, params: Sequence[torch.Tensor], columns: Sequence[torch.Tensor]) -> torch.Tensor:
        """Evaluate for B parameter sets: ``params[j]`` is (B, 1), ``columns[j]`` is (m,) or (B, m)."""
        env = dict(zip(self.param_names, params))
        env.update(zip(self.variables, columns))
        return self.formula.evaluate(env)


@dataclass(frozen=True)
class FitData:
    """D data sets padded to the same m rows: one per group, fold, or just one.

    Attributes:
        X: (D, m, v) values of the variables.
        y: (D, m) target values.
        w: (D, m) row weights; 0 marks padding (or rows held out of a fold).
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor

    @property
    def n_sets(self) -> int:
        return self.X.shape[0]

    def rows(self, index: torch.Tensor) -> FitData:
        """The same data sets restricted to the row positions ``index``."""
        return FitData(self.X[:, index], self.y[:, index], self.w[:, index])

    def counts(self) -> torch.Tensor:
        """Rows with a positive weight, per data set."""
        return (self.w > 0).sum(dim=1)


@dataclass(frozen=True)
class Problem:
    """A checked single-data-set problem: model, data and the parameters' p0 and bounds."""

    model: Model
    data: FitData
    p0: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    target: str
    p0_given: bool
    starts: torch.Tensor | None = None
    """Explicit (S, k) starting points, when the caller gave them instead of a count."""


def build_problem(formula: str | Formula, frame: pd.DataFrame, target: str, p0=None, bounds=None,
                  sigma=None) -> Problem:
    """Check the inputs and turn them into tensors (see the module docstring).

    Args:
        formula: Formula text; names that are columns of ``frame`` are variables,
            every other name is a parameter.
        frame: The data.
        target: A column, or an expression of columns such as ``log(y)``.
        p0: Starting values: a dict by name, a sequence in parameter order, or None (all 1).
        bounds: Dict name -> (low, high), or text ``"b1=0:10,b2=0:inf"``.
        sigma: Optional per-row standard deviations (weights 1/sigma^2), as in scipy.

    Raises:
        FormulaError: The formula does not parse, names no column, or uses the target.
        DataError: A used column is missing, not numeric, NaN or infinite, or there
            are no more rows than parameters.
        ConfigError: p0 or bounds name unknown parameters or are malformed.
    """
    parsed = formula if isinstance(formula, Formula) else parse_formula(formula)
    columns = [str(c) for c in frame.columns]
    target_values, target_columns = _target(target, frame, columns)
    variables, params = parsed.split_names(columns)
    if not variables:
        raise FormulaError(
            f"formula {parsed.text!r} uses none of the data columns ({preview_names(columns)}); "
            "name the column(s) that hold the input, e.g. 'b1*exp(-b2*x)' for a column x")
    clash = sorted(set(variables) & set(target_columns))
    if clash:
        raise FormulaError(f"formula {parsed.text!r} uses the target column(s) {clash}; "
                           "the target is what the formula predicts, so it cannot be an input")
    if not params:
        raise FormulaError(f"formula {parsed.text!r} has no parameters to fit: every name in it is a "
                           f"data column ({', '.join(variables)}) or a constant")
    model = Model(parsed, tuple(params), tuple(variables))
    X = np.column_stack([_finite_column(frame, name) for name in variables])
    _check_finite(target_values, f"target {target!r}")
    n, k = len(target_values), model.k
    if n <= k:
        raise DataError(f"{n} data rows but {k} parameters ({', '.join(params)}): a least-squares fit "
                        f"needs more rows than parameters; add data or simplify the formula")
    weights = _weights(sigma, n)
    data = FitData(torch.tensor(X, dtype=DTYPE)[None], torch.tensor(target_values, dtype=DTYPE)[None],
                   torch.tensor(weights, dtype=DTYPE)[None])
    start, given = parse_p0(p0, model.param_names)
    lower, upper = parse_bounds(bounds, model.param_names)
    outside = [f"{name}={value:g} not in [{lo:g}, {hi:g}]" for name, value, lo, hi
               in zip(model.param_names, start.tolist(), lower.tolist(), upper.tolist()) if not lo <= value <= hi]
    if outside:
        raise ConfigError(f"p0 is outside the bounds: {'; '.join(outside)}; give a p0 inside the bounds")
    return Problem(model, data, start, lower, upper, target, given)


def parse_p0(p0, names: Sequence[str]) -> tuple[torch.Tensor, bool]:
    """p0 as a (k,) tensor; missing names start at 1.0 (as scipy's curve_fit does)."""
    values = dict.fromkeys(names, 1.0)
    if p0 is None:
        return torch.tensor(list(values.values()), dtype=DTYPE), False
    if isinstance(p0, str):
        p0 = _parse_p0_text(p0, names)
    if isinstance(p0, Mapping):
        unknown = [name for name in p0 if name not in values]
        if unknown:
            raise ConfigError(f"p0 names {unknown}, which are not parameters of the formula; "
                              f"the parameters are {', '.join(names)}")
        values.update({name: float(v) for name, v in p0.items()})
    else:
        seq = [float(v) for v in np.asarray(p0, dtype=float).ravel()]
        if len(seq) != len(names):
            raise ConfigError(f"p0 has {len(seq)} values but the formula has {len(names)} parameters "
                              f"({', '.join(names)}); give one value per parameter, in that order")
        values = dict(zip(names, seq))
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"p0 must be finite, but {bad} are not")
    return torch.tensor(list(values.values()), dtype=DTYPE), True


def _parse_p0_text(text: str, names: Sequence[str]):
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        if all("=" in item for item in items):
            return {name.strip(): float(value) for name, value in (item.split("=", 1) for item in items)}
        return [float(item) for item in items]
    except ValueError:
        raise ConfigError(f"p0={text!r} must be numbers like '1,0.1' or 'b1=1,b2=0.1'") from None


def parse_bounds(bounds, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds as (lower, upper) tensors; ``"b1=0:10,b2=0:inf"`` or {name: (low, high)}.

    Example:
        >>> lo, hi = parse_bounds("b2=0:inf", ["b1", "b2"])
        >>> lo.tolist(), hi.tolist()
        ([-inf, 0.0], [inf, inf])
    """
    lower = dict.fromkeys(names, -math.inf)
    upper = dict.fromkeys(names, math.inf)
    if isinstance(bounds, str):
        bounds = _parse_bounds_text(bounds)
    for name, pair in (bounds or {}).items():
        if name not in lower:
            raise ConfigError(f"bounds name {name!r}, which is not a parameter; the parameters are "
                              f"{', '.join(names)}")
        lo, hi = (float(v) for v in pair)
        if not lo < hi:
            raise ConfigError(f"bounds for {name}: low < high must hold, but got low={lo:g}, high={hi:g}")
        lower[name], upper[name] = lo, hi
    return (torch.tensor(list(lower.values()), dtype=DTYPE), torch.tensor(list(upper.values()), dtype=DTYPE))


def _parse_bounds_text(text: str) -> dict[str, tuple[float, float]]:
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, span = item.partition("=")
        low, colon, high = span.partition(":")
        try:
            out[name.strip()] = (_bound(low, -math.inf), _bound(high, math.inf))
        except ValueError:
            colon = ""
        if not sep or not colon:
            raise ConfigError(f"bounds={text!r}: {item!r} must look like NAME=LOW:HIGH, e.g. b1=0:10 or "
                              "b2=0:inf (leave a side empty for no bound: b3=:5)")
    return out


def _bound(text: str, default: float) -> float:
    text = text.strip().lower()
    return default if text in ("", "none") else float(text)


def _target(target: str, frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """The response: a column, or an expression of columns (e.g. ``log(y)``: NIST's Nelson)."""
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"target={target!r} must name a column (or an expression of columns such as "
                          "'log(y)')")
    if target in columns:
        return _finite_column(frame, target), [target]
    try:
        expression = parse_formula(target)
    except FormulaError:
        expression = None
    unknown = [n for n in expression.names if n not in columns] if expression else [target]
    if expression is None or unknown or not expression.names:
        raise DataError(f"target {target!r} is not a column (columns: {preview_names(columns)}) nor an "
                        "expression of columns such as 'log(y)'")
    env = {name: torch.tensor(_finite_column(frame, name), dtype=DTYPE) for name in expression.names}
    values = torch.broadcast_to(expression.evaluate(env), (len(frame),)).numpy().copy()
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"target {target!r} is not finite at row {bad[0] + 1} ({bad.size} rows in all), "
                        "e.g. log of a value <= 0; drop those rows or choose another target")
    return values, list(expression.names)


def _finite_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    values = numeric_values(frame[name], f"column {name!r}")
    _check_finite(values, f"column {name!r}")
    return values


def _check_finite(values: np.ndarray, label: str) -> None:
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        raise DataError(f"{label} has a missing value (NaN) at row {missing[0] + 1} ({missing.size} in all); "
                        "drop or fill those rows before fitting")


def _weights(sigma, n: int) -> np.ndarray:
    if sigma is None:
        return np.ones(n)
    sigma = np.asarray(sigma, dtype=float).ravel()
    if sigma.shape != (n,) or not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ConfigError(f"sigma must hold {n} positive finite values (one per row), got shape {sigma.shape}")
    return 1.0 / sigma**2


def frame_from_arrays(x, y, target: str = "y") -> pd.DataFrame:
    """A table from arrays: ``x`` (n,) is column ``x``; (n, v) gives ``x1..xv``; a dict keeps its names."""
    if isinstance(x, Mapping):
        frame = pd.DataFrame({str(name): np.asarray(v, dtype=float).ravel() for name, v in x.items()})
    else:
        arr = np.asarray(x, dtype=float)
        if arr.ndim == 1:
            frame = pd.DataFrame({"x": arr})
        elif arr.ndim == 2:
            frame = pd.DataFrame(arr, columns=[f"x{j + 1}" for j in range(arr.shape[1])])
        else:
            raise DataError(f"x must be 1-D (n,) or 2-D (n, v), got shape {arr.shape}")
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != len(frame):
        raise DataError(f"x has {len(frame)} rows but y has {len(y)}; give one y per row of x")
    frame[target] = y
    return frame
