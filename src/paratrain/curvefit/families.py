"""``fit_families``: fit built-in model families, rank them by cross-validation, AIC and BIC.

Each family is a formula in one variable with a data-driven starting guess
(linear least squares on a linearised form where one exists). A family's K
cross-validation folds and its fit to all rows are K+1 data sets of one batched
solve (held-out rows get weight 0). With ``workers > 1`` families also run in
parallel, one process each (not threads: torch's forward-mode autodiff keeps
global state and is not thread-safe); for small tables one process is faster,
since starting a worker costs about a second.

Ranking: mean squared error on held-out rows (K-fold, seeded), then BIC. AIC and
BIC count the error variance as a parameter: ``n ln(RSS/n) + 2(k+1)`` and
``n ln(RSS/n) + (k+1) ln n``.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from paratrain.curvefit.engine import solve
from paratrain.curvefit.evaluator import LocalEvaluator, thread_limit
from paratrain.curvefit.fit import CurveFitWarning, FitSettings, explore_evaluator, make_result, to_frame
from paratrain.curvefit.problem import FitData, build_problem
from paratrain.curvefit.result import CurveFitResult
from paratrain.curvefit.starts import design_starts
from paratrain.errors import ConfigError, DataError, ParatrainError

__all__ = ["Family", "FAMILIES", "FamilyReport", "fit_families"]


@dataclass(frozen=True)
class Family:
    """A model family: formula template in ``{x}`` and a starting guess from the data."""

    name: str
    template: str
    guess: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    needs_positive_x: bool = False

    def formula(self, variable: str) -> str:
        return self.template.format(x=variable)


def _poly_guess(degree: int):
    def guess(x, y):
        coef = np.polynomial.polynomial.Polynomial.fit(x, y, degree).convert().coef
        coef = np.pad(coef, (0, degree + 1 - len(coef)))
        return {f"b{i}": float(c) for i, c in enumerate(coef)}
    return guess


def _exp_guess(x, y):
    # Decay towards (convex data) or growth away from (concave) an asymptote just beyond the
    # data: then log|y - c| is linear in x, and a line fit gives a and b.
    span = np.ptp(y) or 1.0
    convex = np.polyfit(x, y, 2)[0] > 0 if len(x) > 2 else True
    c = y.min() - 0.05 * span if convex else y.max() + 0.05 * span
    slope, intercept = np.polyfit(x, np.log(np.abs(y - c)), 1)
    return {"a": math.exp(intercept) * (1.0 if convex else -1.0), "b": float(slope), "c": float(c)}


def _log_guess(x, y):
    b, a = np.polyfit(np.log(x), y, 1)
    return {"a": float(a), "b": float(b)}


def _power_guess(x, y):
    if np.all(y > 0):
        b, log_a = np.polyfit(np.log(x), np.log(y), 1)
        return {"a": float(math.exp(log_a)), "b": float(b)}
    return {"a": float(np.mean(y)), "b": 1.0}


def _logistic_guess(x, y):
    increasing = np.corrcoef(x, y)[0, 1] >= 0 if np.ptp(x) > 0 and np.ptp(y) > 0 else True
    low, high = float(y.min()), float(y.max())
    mid = x[np.argmin(np.abs(y - (low + high) / 2))]
    rate = 4.0 / (np.ptp(x) or 1.0) * (1 if increasing else -1)
    return {"c": low, "d": high, "b": rate, "m": float(mid)}


def _gauss_guess(x, y):
    base = float(np.median(y))
    up = y.max() - base >= base - y.min()
    peak = int(np.argmax(y) if up else np.argmin(y))
    height = float(y[peak] - base)
    half = np.abs(y - base) >= abs(height) / 2
    width = float(np.ptp(x[half])) / 2.355 if half.sum() > 1 else float(np.ptp(x)) / 6
    return {"c": base, "a": height, "m": float(x[peak]), "s": max(width, 1e-3 * (np.ptp(x) or 1.0))}


def _rational_guess(x, y):
    # y (1 + c x) = a + b x  ->  y = a + b x - c x y, linear in (a, b, c).
    A = np.column_stack([np.ones_like(x), x, -x * y])
    a, b, c = np.linalg.lstsq(A, y, rcond=None)[0]
    return {"a": float(a), "b": float(b), "c": float(c)}


FAMILIES: tuple[Family, ...] = (
    Family("linear", "b0 + b1*{x}", _poly_guess(1)),
    *(Family(f"poly{d}", " + ".join(["b0", "b1*{x}"] + [f"b{i}*{{x}}^{i}" for i in range(2, d + 1)]),
             _poly_guess(d)) for d in range(2, 6)),
    Family("exponential", "a*exp(b*{x}) + c", _exp_guess),
    Family("logarithmic", "a + b*log({x})", _log_guess, needs_positive_x=True),
    Family("power", "a*{x}^b", _power_guess, needs_positive_x=True),
    Family("logistic", "c + (d - c)/(1 + exp(-b*({x} - m)))", _logistic_guess),
    Family("gaussian", "c + a*exp(-({x} - m)^2/(2*s^2))", _gauss_guess),
    Family("rational", "(a + b*{x})/(1 + c*{x})", _rational_guess),
)
"""The built-in families, in the order the ranking table breaks exact ties."""


@dataclass
class FamilyReport:
    """Ranked families: ``table`` (one row per family, best first) and each full-data fit."""

    table: pd.DataFrame
    fits: dict[str, CurveFitResult]

    @property
    def best(self) -> str:
        return str(self.table.iloc[0]["family"])


def fit_families(data=None, *, x=None, y=None, target: str | None = None, variable: str | None = None,
                 families="all", folds: int = 5, starts: int = 32, seed: int = 0,
                 workers: int | None = None) -> FamilyReport:
    """Fit every built-in family and rank them (see the module docstring).

    Args:
        data: A DataFrame, or give ``x`` and ``y`` arrays.
        target: Response column (default ``"y"``).
        variable: The input column (default: the only other numeric column).
        families: ``"all"`` or a list of names from ``FAMILIES``.
        folds: K of K-fold cross-validation (2 or more).
        starts: Starting points per fit, around the family's data-driven guess.
        seed: Seeds the folds and the start design.
        workers: Processes fitting families in parallel (default 1: in this process).

    Example:
        >>> xs = np.linspace(1, 10, 60)
        >>> report = fit_families(x=xs, y=2 + 3 * np.log(xs), starts=4)
        >>> report.best
        'logarithmic'
    """
    frame, target = to_frame(data, x, y, target)
    variable = _variable(frame, target, variable)
    chosen = _families(families)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds={folds!r} must be a whole number >= 2")
    n = len(frame)
    if n < 2 * folds:
        raise DataError(f"{n} rows are too few for {folds}-fold cross-validation; need at least {2 * folds}")
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    jobs = [(family.name, frame[[variable, target]], target, variable, fold_of, folds, starts, seed)
            for family in chosen]
    workers = workers or 1
    if workers > 1:
        context = multiprocessing.get_context("spawn")  # a clean interpreter, never a fork of torch's threads
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            outcomes = list(pool.map(_evaluate_job, jobs))
    else:
        with thread_limit():
            outcomes = [_evaluate_job(job) for job in jobs]
    rows = [row for row, _ in outcomes]
    fits = {row["family"]: fit for row, fit in outcomes if fit is not None}
    table = pd.DataFrame(rows)
    table["_ok"] = table["cv_mse"].notna()
    table = table.sort_values(["_ok", "cv_mse", "bic"], ascending=[False, True, True], kind="stable")
    table = table.drop(columns="_ok").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return FamilyReport(table, fits)


def _variable(frame: pd.DataFrame, target: str, variable: str | None) -> str:
    if variable is not None:
        if variable not in frame.columns:
            raise DataError(f"variable {variable!r} is not a column (columns: {', '.join(map(str, frame.columns))})")
        return variable
    others = [c for c in frame.columns if str(c) != target and pd.api.types.is_numeric_dtype(frame[c])]
    if len(others) != 1:
        raise ConfigError(f"cannot tell which column is the input: numeric columns besides the target are "
                          f"{others or 'none'}; name one (variable=... / --x COLUMN)")
    return str(others[0])


def _families(families) -> list[Family]:
    if families == "all":
        return list(FAMILIES)
    by_name = {f.name: f for f in FAMILIES}
    names = [families] if isinstance(families, str) else list(families)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(f"unknown families {unknown}; known families: {', '.join(by_name)}")
    return [by_name[name] for name in names]


def _evaluate_job(job):
    """CV error, AIC/BIC and the full-data fit of one family (errors become a table row).

    A module-level function of plain arguments, so a worker process can run it.
    """
    name, frame, target, variable, fold_of, folds, starts, seed = job
    family = {f.name: f for f in FAMILIES}[name]
    formula = family.formula(variable)
    row = {"family": family.name, "formula": formula, "k": None, "cv_mse": np.nan, "aic": np.nan,
           "bic": np.nan, "rss": np.nan, "r2": np.nan, "converged": False, "note": ""}
    try:
        problem = build_problem(formula, frame[[variable, target]], target)
        row["k"] = problem.model.k
        x = problem.data.X[0, :, 0].numpy()
        yv = problem.data.y[0].numpy()
        if family.needs_positive_x and np.any(x <= 0):
            raise DataError(f"{variable} must be > 0 for this family")
        with np.errstate(all="ignore"):
            guess = family.guess(x, yv)
        p0 = torch.tensor([guess.get(name, 1.0) if math.isfinite(guess.get(name, 1.0)) else 1.0
                           for name in problem.model.param_names], dtype=torch.float64)
        problem = problem.__class__(problem.model, problem.data, p0, problem.lower, problem.upper, target, True)
        train = torch.as_tensor(np.stack([fold_of != f for f in range(folds)] + [np.ones_like(fold_of, bool)]))
        data = FitData(problem.data.X.expand(folds + 1, -1, -1), problem.data.y.expand(folds + 1, -1),
                       train.to(torch.float64))
        design = design_starts(p0, starts, problem.lower, problem.upper, seed)
        # Ranking needs a few digits, not fifteen; and a family that does not fit has no
        # minimum (logistic on log-shaped data drifts to infinity), so cap the polish.
        settings = FitSettings(starts=starts, seed=seed, ftol=1e-10, xtol=1e-10, gtol=1e-10,
                               max_iter=200).for_parameters(problem.model.k)
        evaluator = LocalEvaluator(problem.model, data)
        solution = solve(evaluator, design.unsqueeze(0).expand(folds + 1, -1, -1).contiguous(),
                         problem.lower, problem.upper, settings.solve, explore_evaluator(problem.model, data, settings))
        predictions = evaluator.predict(solution.params[:folds], torch.arange(folds))
        held_out = ~train[:folds]
        sse = ((predictions - problem.data.y) ** 2 * held_out).sum().item()
        n = len(yv)
        with warnings.catch_warnings():  # the table's `converged` column says it, per family
            warnings.simplefilter("ignore", CurveFitWarning)
            full = make_result(problem, solution, evaluator.totals()[folds], "warn", index=folds, n_obs=n)
        kk = problem.model.k + 1
        row.update(cv_mse=sse / n if math.isfinite(sse) else np.nan,
                   aic=n * math.log(max(full.rss, 1e-300) / n) + 2 * kk,
                   bic=n * math.log(max(full.rss, 1e-300) / n) + kk * math.log(n),
                   rss=full.rss, r2=full.r2, converged=full.converged)
        return row, full
    except (ParatrainError, RuntimeError, ValueError) as error:
        row["note"] = " ".join(str(error).split())[:200]
        return row, None
