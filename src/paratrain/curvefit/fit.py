"""``curve_fit``: nonlinear least squares of a formula, with many starts and exact Jacobians."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from paratrain.curvefit.engine import SolveOptions, Solution, solve
from paratrain.curvefit.evaluator import LocalEvaluator, thread_limit
from paratrain.curvefit.lm import LMOptions, Status
from paratrain.curvefit.problem import FitData, Problem, build_problem, frame_from_arrays
from paratrain.curvefit.result import CurveFitResult
from paratrain.curvefit.starts import design_starts
from paratrain.curvefit.stats import fit_statistics, r_squared
from paratrain.errors import ConfigError, DataError, ParatrainError

__all__ = ["curve_fit", "CurveFitWarning", "IdentifiabilityError", "FitSettings", "to_frame"]


class CurveFitWarning(UserWarning):
    """The fit did not converge (the result says ``converged: False``)."""


class IdentifiabilityError(ParatrainError, ValueError):
    """The data cannot determine some parameters separately; names them."""


@dataclass(frozen=True)
class FitSettings:
    """Everything about the search that is not the data: validated once, shared by all entry points."""

    starts: int = 256
    seed: int = 0
    ftol: float = 1e-15
    xtol: float = 1e-15
    gtol: float = 1e-15
    max_iter: int = 1000
    explore_rows: int | None = None
    """Rows seen while exploring (None: 32 per parameter, 64 to 256; see ``auto_explore_rows``)."""
    refine: int = 4
    threads: int | None = None
    solve: SolveOptions = field(init=False, repr=False)

    def __post_init__(self):
        for name in ("starts", "max_iter", "explore_rows", "refine"):
            value = getattr(self, name)
            if name == "explore_rows" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"threads={self.threads!r} must be a whole number >= 1 (or None for 1)")
        for name in ("ftol", "xtol", "gtol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ConfigError(f"{name}={value!r} must be a number in [0, 1), e.g. 1e-12")
        polish = LMOptions(ftol=self.ftol, xtol=self.xtol, gtol=self.gtol, max_iter=self.max_iter, race_after=30)
        base = SolveOptions()
        object.__setattr__(self, "solve", replace(base, explore_rows=self.explore_rows or base.explore_rows,
                                                  refine=self.refine, polish=polish))

    def for_parameters(self, k: int) -> FitSettings:
        """These settings with ``explore_rows`` resolved for a k-parameter model."""
        return self if self.explore_rows else replace(self, explore_rows=auto_explore_rows(k))


def auto_explore_rows(k: int) -> int:
    """Rows to explore on: 32 per parameter, at least 64, at most 256.

    Enough evenly spread points to tell the basins of a k-parameter curve apart;
    the Jacobian's cost is linear in rows, so every row saved speeds up all starts.
    """
    return min(256, max(64, 32 * k))


def curve_fit(formula: str, data=None, *, target: str | None = None, x=None, y=None, p0=None, bounds=None,
              sigma=None, starts: int = 256, seed: int = 0, workers: int = 1, threads: int | None = None,
              ftol: float = 1e-15, xtol: float = 1e-15, gtol: float = 1e-15, max_iter: int = 1000,
              explore_rows: int | None = None, refine: int = 4, on_unidentifiable: str = "raise") -> CurveFitResult:
    """Fit ``target ~ formula`` by nonlinear least squares from many starting points.

    Names in the formula that are columns of ``data`` are variables; every other
    name is a parameter. Start 0 is ``p0``; the other starts spread around it
    (see :mod:`paratrain.curvefit.starts`); all run as one batched
    Levenberg-Marquardt, and the best is polished to tight tolerances.

    Args:
        formula: e.g. ``"b1*(1-exp(-b2*x))"``.
        data: A DataFrame (or dict of columns). Or give ``x`` and ``y`` instead:
            ``x`` (n,) is the column ``x``, (n, v) gives ``x1..xv``, a dict keeps its names.
        target: Response column, or an expression of columns such as ``"log(y)"``
            (default ``"y"``).
        p0: Starting values: dict by name, sequence in parameter order, or None (all 1).
        bounds: ``{"b1": (0, 10)}`` or ``"b1=0:10,b2=0:inf"``; enforced by projection.
        sigma: Per-row standard deviations (weights 1/sigma^2), as in scipy.
        starts: Number of starting points (1 = p0 only), or an explicit (S, k) array of
            starting points (row 0 plays the role of p0).
        seed: Seed of the start design.
        workers: Processes for data-parallel evaluation of very large data (>1
            starts that many local processes that all-reduce over gloo). In a process that
            torchrun started, ``workers`` equal to its WORLD_SIZE fits across the job's ranks
            instead (every rank must call ``curve_fit`` alike; each gets the same result),
            and 1 fits in this process alone.
        threads: Intra-op threads (default 1; see :func:`~paratrain.curvefit.evaluator.thread_limit`).
        ftol, xtol, gtol, max_iter: Tolerances and limit of the final polish.
        explore_rows: Rows seen while exploring when there are more (default 32 per parameter,
            64 to 256).
        refine: Distinct candidates polished on all rows.
        on_unidentifiable: ``"raise"`` (IdentifiabilityError) or ``"warn"`` (stderr inf).

    Returns:
        The best fit, with standard errors and covariance.

    Raises:
        FormulaError, DataError, ConfigError: Bad input; the message says what to fix.
        IdentifiabilityError: Some parameters cannot be told apart by the data.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 5, 50)
        >>> fit = curve_fit("a*exp(-b*x)", x=x, y=3 * np.exp(-0.7 * x), p0={"a": 1, "b": 1}, starts=8)
        >>> round(fit.params["a"], 6), round(fit.params["b"], 6)
        (3.0, 0.7)
    """
    if on_unidentifiable not in ("raise", "warn"):
        raise ConfigError(f"on_unidentifiable={on_unidentifiable!r} must be 'raise' or 'warn'")
    explicit = None
    if not isinstance(starts, (int, np.integer)) or isinstance(starts, bool):
        explicit = np.asarray(starts, dtype=float)
        if explicit.ndim != 2 or len(explicit) == 0:
            raise ConfigError(f"starts must be a count or an (S, k) array of starting points, got shape "
                              f"{explicit.shape}")
        starts = len(explicit)
    settings = FitSettings(starts=int(starts), seed=seed, ftol=ftol, xtol=xtol, gtol=gtol, max_iter=max_iter,
                           explore_rows=explore_rows, refine=refine, threads=threads)
    frame, target = to_frame(data, x, y, target)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a whole number >= 1")
    torchrun = _torchrun_world(workers)
    # One intra-op thread unless asked: see thread_limit for why.
    with thread_limit(threads):
        problem = _problem(formula, frame, target, p0, bounds, sigma, explicit)
        settings = settings.for_parameters(problem.model.k)
        if torchrun is not None:
            from paratrain.curvefit.distributed import fit_under_torchrun

            solution, totals = fit_under_torchrun(problem, settings, torchrun)
        elif workers > 1:
            from paratrain.curvefit.distributed import fit_distributed

            solution, totals = fit_distributed(problem, settings, workers)
        else:
            middle = (explore_evaluator(problem.model, problem.data, settings, rows=MIDDLE_ROWS)
                      if problem.data.X.shape[1] > 16 * MIDDLE_ROWS else None)
            solution, totals = run_fit(problem, settings, LocalEvaluator(problem.model, problem.data),
                                       explore_evaluator(problem.model, problem.data, settings), middle)
        return make_result(problem, solution, totals, on_unidentifiable)


def _torchrun_world(workers: int):
    """The TorchrunEnv when the fit is to span a torchrun job's ranks; None to fit here or launch locally."""
    from paratrain.launch.torchrun_env import torchrun_env

    env = torchrun_env()
    if env is None or workers == 1:
        return None
    if workers != env.world_size:
        # Local workers started from inside every torchrun rank would multiply the processes.
        raise ConfigError(f"workers={workers} in a process that torchrun started: give workers={env.world_size} "
                          "(WORLD_SIZE) to fit across its ranks, or workers=1 to fit in this process alone")
    return env


def _problem(formula, frame, target, p0, bounds, sigma, explicit) -> Problem:
    """The checked problem, with explicit starting points when the caller gave an array."""
    if explicit is not None and p0 is None:
        p0 = explicit[0]
    problem = build_problem(formula, frame, target, p0=p0, bounds=bounds, sigma=sigma)
    if explicit is not None:
        if explicit.shape[1] != problem.model.k:
            raise ConfigError(f"starts has {explicit.shape[1]} columns but the formula has {problem.model.k} "
                              f"parameters ({', '.join(problem.model.param_names)})")
        problem = replace(problem, starts=torch.tensor(explicit, dtype=torch.float64))
    return problem


def to_frame(data, x, y, target: str | None) -> tuple[pd.DataFrame, str]:
    """The table and target name from either ``data`` or ``x``/``y``."""
    if data is not None and (x is not None or y is not None):
        raise ConfigError("give either data (a table) or x and y (arrays), not both")
    if data is None:
        if x is None or y is None:
            raise ConfigError("no data: give data=<DataFrame> (with target=<column>) or x=<array>, y=<array>")
        name = target or "y"
        return frame_from_arrays(x, y, name), name
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data)) if isinstance(data, Mapping) \
        else None
    if frame is None:
        raise DataError(f"data must be a pandas DataFrame or a dict of columns, got {type(data).__name__}")
    if len(frame) == 0:
        raise DataError("data has no rows")
    return frame, target or "y"


MIDDLE_ROWS = 4096
"""Rows of the intermediate polish used when a data set has more than 16 times as many."""


def explore_evaluator(model, data: FitData, settings: FitSettings, seed: int | None = None,
                      rows: int | None = None):
    """An evaluator on ``rows`` evenly spread rows (default: explore_rows), or None if there are no more."""
    m = data.X.shape[1]
    rows = rows or settings.solve.explore_rows
    if m <= rows:
        return None
    if data.X.shape[2] == 1:  # one variable: every (m/rows)-th point along x
        order = torch.argsort(data.X[0, :, 0], stable=True)
        pick = order[torch.linspace(0, m - 1, rows).round().long()]
    else:
        generator = torch.Generator().manual_seed(settings.seed if seed is None else seed)
        pick = torch.randperm(m, generator=generator)[:rows]
    return LocalEvaluator(model, data.rows(torch.sort(pick).values))


def run_fit(problem: Problem, settings: FitSettings, full, explore, middle=None) -> tuple[Solution, torch.Tensor]:
    """Design the starts and solve; the same code runs in every worker of a data-parallel fit."""
    starts = problem.starts if problem.starts is not None else design_starts(
        problem.p0, settings.starts, problem.lower, problem.upper, settings.seed)
    with thread_limit(settings.threads):
        solution = solve(full, starts.unsqueeze(0), problem.lower, problem.upper, settings.solve, explore, middle)
        return solution, full.totals()[0]


def make_result(problem: Problem, solution: Solution, totals: torch.Tensor, on_unidentifiable: str,
                index: int = 0, n_obs: int | None = None) -> CurveFitResult:
    """Statistics, checks and warnings for data set ``index`` of a solution."""
    names = problem.model.param_names
    k = len(names)
    n = int(n_obs if n_obs is not None else totals_count(problem.data, index))
    rss = float(solution.rss[index])
    status = int(solution.status[index])
    if status == Status.FAILED:
        raise DataError(f"the formula {problem.model.formula.text!r} is not finite at any of the "
                        f"{solution.starts_used} starting points (e.g. log or sqrt of a negative value, "
                        "or overflow); give a p0 where the model is defined, or bounds")
    st = fit_statistics(solution.R[index], rss, n, k)
    params = {name: float(v) for name, v in zip(names, solution.params[index].tolist())}
    if st.unidentified:
        message = unidentifiable_message(names, st)
        if on_unidentifiable == "raise":
            raise IdentifiabilityError(message)
        warnings.warn(message, CurveFitWarning, stacklevel=3)
    converged = status > 0
    if not converged:
        warnings.warn(f"the fit did not converge ({Status.TEXT.get(status, status)}); the result is the best "
                      "point found, not a verified minimum: raise max_iter or starts, or give a better p0",
                      CurveFitWarning, stacklevel=3)
    return CurveFitResult(
        params=params, stderr=dict(zip(names, st.stderr.tolist())), covariance=st.covariance, rss=rss,
        r2=r_squared(rss, totals), n_iter=int(solution.n_iter[index]), converged=converged,
        starts_used=solution.starts_used, n_obs=n, formula=problem.model.formula.text, target=problem.target,
        message=Status.TEXT.get(status, str(status)), condition=st.condition)


def totals_count(data: FitData, index: int = 0) -> int:
    return int((data.w[index] > 0).sum())


def unidentifiable_message(names, st) -> str:
    """Which parameters the data cannot separate, and what to do about it."""
    parts = []
    for direction in st.unidentified:
        if direction[0][1] < 0:  # a null direction's sign is arbitrary (rounding picks it): show one form
            direction = [(j, -w) for j, w in direction]
        involved = [names[j] for j, _ in direction]
        if len(involved) == 1:
            parts.append(f"{involved[0]} has no effect on the predictions at the solution")
        else:
            combo = " ".join(f"{'+' if w >= 0 else '-'} {abs(w):.2f}*{names[j]}" for j, w in direction).lstrip("+ ")
            parts.append(f"{', '.join(involved[:-1])} and {involved[-1]} cannot be separated (the data do not "
                         f"change along {combo}, in scaled units)")
    k = len(names)
    return (f"parameters cannot be identified: {'; '.join(parts)}. The Jacobian at the solution has rank "
            f"{st.rank} of {k}. Rewrite the formula with fewer parameters (e.g. one parameter in place of a "
            "product like b1*b2) or add data that tells them apart")

