"""``fit_groups``: the same formula fitted to every group of a table, as one batch.

Groups have different sizes, so each becomes a data set padded to the largest
group's row count; padding rows get weight 0 and drop out of every sum. One
batched Levenberg-Marquardt then moves all groups at once, which is what makes
1,000 small fits cost little more than a few big ones.

With one start per group (the default) the batch runs on NumPy
(:mod:`~paratrain.curvefit.fastlm`): there the general solver's fixed torch cost
per step would dominate 1,000 fits of 50 points. Several starts per group take
the general multi-start search (:mod:`~paratrain.curvefit.engine`), as does a
formula calling a function without a derivative rule in
:mod:`~paratrain.curvefit.symbolic`. Both take every converged group to full
float64 precision with Gauss-Newton steps, and tabulate the same statistics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from paratrain.curvefit.arrays import ArrayEvaluator, GroupArrays
from paratrain.curvefit.engine import Solution, solve
from paratrain.curvefit.evaluator import LocalEvaluator, thread_limit
from paratrain.curvefit.fastlm import solve_one_start
from paratrain.curvefit.fit import FitSettings, to_frame, unidentifiable_message
from paratrain.curvefit.lm import Status
from paratrain.curvefit.problem import FitData, Problem, build_problem
from paratrain.curvefit.starts import design_starts
from paratrain.curvefit.stats import batched_stderr, fit_statistics
from paratrain.curvefit.symbolic import compile_formula, supported
from paratrain.data.tables import missing_mask, preview_names
from paratrain.errors import DataError

__all__ = ["fit_groups"]


def fit_groups(formula: str, data: pd.DataFrame, *, group_by: str, target: str | None = None, p0=None,
               bounds=None, starts: int = 1, seed: int = 0, threads: int | None = None, ftol: float = 1e-10,
               xtol: float = 1e-10, gtol: float = 1e-10, max_iter: int = 1000) -> pd.DataFrame:
    """Fit ``formula`` separately to each group of ``data``; one result row per group.

    Args:
        formula: As for :func:`~paratrain.curvefit.curve_fit`; the group column is not a variable.
        data: The table.
        group_by: Column whose values name the groups.
        target: Response column or expression (default ``"y"``).
        p0, bounds: Shared by all groups.
        starts: Starting points per group (1: p0 only, like a loop of scipy's curve_fit).
        seed, threads, ftol, xtol, gtol, max_iter: As for ``curve_fit``, but the tolerances default to
            1e-10: a batch moves at the pace of its slowest group, and the Gauss-Newton steps that
            end every fit take each group from there to full float64 precision anyway.

    Returns:
        One row per group (in order of first appearance): the group value, ``n``,
        each parameter, ``<param>_stderr``, ``rss``, ``r2``, ``n_iter``, ``converged``
        and ``message``. A group with no more rows than parameters gets NaN values
        and says so in ``message``.

    Example:
        >>> x = np.tile(np.linspace(0, 4, 20), 2)
        >>> frame = pd.DataFrame({"g": np.repeat(["a", "b"], 20), "x": x,
        ...                       "y": np.repeat([2.0, 3.0], 20) * np.exp(-0.5 * x)})
        >>> out = fit_groups("A*exp(-k*x)", frame, group_by="g", p0={"A": 1, "k": 1})
        >>> out["A"].round(6).tolist()
        [2.0, 3.0]
    """
    settings = FitSettings(starts=starts, seed=seed, ftol=ftol, xtol=xtol, gtol=gtol, max_iter=max_iter,
                           threads=threads)
    frame, target = to_frame(data, None, None, target)
    # One intra-op thread unless asked: see thread_limit for why.
    with thread_limit(threads):
        return _fit_groups(formula, frame, group_by, target, p0, bounds, settings, seed)


def _fit_groups(formula, frame, group_by, target, p0, bounds, settings, seed) -> pd.DataFrame:
    """Check the group column, pad the groups, solve them as one batch, tabulate."""
    if group_by not in frame.columns:
        raise DataError(f"group_by column {group_by!r} is not in the data (columns: "
                        f"{preview_names(map(str, frame.columns))})")
    gaps = np.flatnonzero(missing_mask(frame[group_by]))
    if gaps.size:
        raise DataError(f"group_by column {group_by!r} is missing at row {gaps[0] + 1} ({gaps.size} in all); "
                        "every row needs a group")
    # Checks (formula, columns, NaN, p0, bounds) on the whole table; the group column is no variable.
    problem = build_problem(formula, frame.loc[:, frame.columns != group_by], target, p0=p0, bounds=bounds)
    settings = settings.for_parameters(problem.model.k)
    codes, labels = _split(frame[group_by])
    sizes = np.bincount(codes, minlength=len(labels))
    if settings.starts == 1 and supported(problem.model.formula):
        solution, totals = _solve_fast(problem, codes, sizes, settings)
    else:
        solution, totals = _solve_general(problem, codes, sizes, settings, seed)
    table = _table(problem.model.param_names, labels, sizes, solution, totals)
    table.columns = [group_by if name == "group" else name for name in table.columns]  # rename() copies
    return table


def _split(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Group code of every row and the group values, in order of first appearance (as pd.factorize).

    A numeric column whose groups are contiguous runs (a tidy table) is split from the run
    boundaries, ~10x faster than factorize's hash table; anything else goes to factorize.
    """
    values = column.to_numpy()
    if values.dtype.kind in "biuf" and values.size:
        starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
        labels = values[starts]
        ordered = np.sort(labels)
        if (ordered[1:] != ordered[:-1]).all():  # every group is one run
            lengths = np.diff(np.append(starts, values.size))
            return np.repeat(np.arange(labels.size), lengths), pd.Index(labels, dtype=column.dtype)
    return pd.factorize(column, sort=False)


def _solve_general(problem: Problem, codes, sizes, settings, seed) -> tuple[Solution, torch.Tensor]:
    """Every group padded to one torch batch, searched from ``settings.starts`` starts each."""
    data_sets = _pad(problem.data, codes, sizes)
    design = design_starts(problem.p0, settings.starts, problem.lower, problem.upper, seed)
    starts_tensor = design.unsqueeze(0).expand(len(sizes), -1, -1).contiguous()
    evaluator = LocalEvaluator(problem.model, data_sets)
    solution = solve(evaluator, starts_tensor, problem.lower, problem.upper, settings.solve)
    return solution, evaluator.totals()


def _solve_fast(problem: Problem, codes, sizes, settings) -> tuple[Solution, torch.Tensor]:
    """One start (p0) per group, on NumPy; groups with no more rows than parameters are left out."""
    model, k, G = problem.model, problem.model.k, len(sizes)
    fitted = np.flatnonzero(sizes > k)
    params = np.full((G, k), np.nan)
    rss = np.full(G, np.nan)
    R = np.zeros((G, k + 1, k + 1))
    n_iter = np.zeros(G, dtype=np.int64)
    status = np.full(G, Status.FAILED, dtype=np.int64)
    if fitted.size:
        evaluator = ArrayEvaluator(compile_formula(model.formula, model.param_names, model.variables),
                                   _group_arrays(problem.data, codes, sizes, fitted))
        P0 = np.tile(problem.p0.numpy(), (fitted.size, 1))
        result = solve_one_start(evaluator, P0, problem.lower.numpy(), problem.upper.numpy(), settings.solve.polish)
        params[fitted], rss[fitted], R[fitted] = result.params.numpy(), result.rss.numpy(), result.R.numpy()
        n_iter[fitted], status[fitted] = result.n_iter.numpy(), result.status.numpy()
    solution = Solution(torch.from_numpy(params), torch.from_numpy(rss), torch.from_numpy(R),
                        torch.from_numpy(n_iter), torch.from_numpy(status), 1)
    totals = np.zeros((G, 3))  # a group left out has no RSS, so no R^2 either
    if fitted.size:
        totals[fitted] = evaluator.totals().numpy()
    return solution, torch.from_numpy(totals)


def _group_arrays(data: FitData, codes: np.ndarray, sizes: np.ndarray, groups: np.ndarray) -> GroupArrays:
    """The rows of ``groups`` as (len(groups), largest size) arrays, weight-0 padding after each group's rows."""
    slot = np.full(len(sizes), -1)
    slot[groups] = np.arange(groups.size)
    X, y, w = data.X[0].numpy(), data.y[0].numpy(), data.w[0].numpy()
    counts = sizes[groups]
    m = int(counts.max())
    unit = bool((w == 1).all())
    if groups.size == len(sizes) and (counts == m).all() and (np.diff(codes) >= 0).all():
        # Rows already sorted by group, all groups the same size (a tidy table): plain reshapes.
        return GroupArrays(tuple(np.ascontiguousarray(X[:, j].reshape(-1, m)) for j in range(X.shape[1])),
                           y.reshape(-1, m), None if unit else np.sqrt(w).reshape(-1, m))
    order = np.flatnonzero(slot[codes] >= 0)
    order = order[np.argsort(codes[order], kind="stable")]
    group = slot[codes[order]]
    position = np.arange(order.size) - np.repeat(np.cumsum(counts) - counts, counts)  # row within its group
    columns = []
    for j in range(X.shape[1]):
        column = np.zeros((groups.size, m))
        column[group, position] = X[order, j]
        columns.append(column)
    target = np.zeros((groups.size, m))
    target[group, position] = y[order]
    sqrt_w = None
    if not (unit and (counts == m).all()):
        sqrt_w = np.zeros((groups.size, m))
        sqrt_w[group, position] = np.sqrt(w[order])
    return GroupArrays(tuple(columns), target, sqrt_w)


def _pad(data: FitData, codes: np.ndarray, sizes: np.ndarray) -> FitData:
    """(G, max size, v) tensors; each group's rows first, weight-0 padding after."""
    G, m, v = len(sizes), int(sizes.max()), data.X.shape[2]
    order = np.argsort(codes, kind="stable")
    position = np.arange(len(codes)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # row within its group
    group = codes[order]
    X = np.zeros((G, m, v))
    y = np.zeros((G, m))
    w = np.zeros((G, m))
    X[group, position] = data.X[0].numpy()[order]
    y[group, position] = data.y[0].numpy()[order]
    w[group, position] = data.w[0].numpy()[order]
    return FitData(torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(w))


def _table(names, labels, sizes: np.ndarray, solution, totals: torch.Tensor) -> pd.DataFrame:
    """One row per group, built column-wise (a per-group Python loop would dominate 1,000 small fits).

    A group where the model is not finite at p0 keeps p0, with NaN standard errors; a group
    with no more rows than parameters gets NaN values. Both say so in ``message``.
    """
    k = len(names)
    stderr, flagged = batched_stderr(solution.R, solution.rss, torch.as_tensor(sizes), k)
    fitted = sizes > k
    finite = torch.isfinite(solution.R).flatten(1).all(dim=1).numpy()  # False where the model failed at p0
    params = solution.params.numpy().copy()
    params[~fitted] = np.nan
    stderr = stderr.numpy()
    stderr[~fitted | ~finite] = np.nan
    rss = solution.rss.numpy().copy()
    rss[~fitted] = np.nan
    sw, swy, swy2 = totals.T
    tss = (swy2 - swy * swy / sw).numpy()
    with np.errstate(all="ignore"):
        r2 = np.where(tss > 0, 1 - rss / tss, np.nan)
    status = solution.status.numpy()
    converged = (status > 0) & fitted
    messages = np.empty(len(status), dtype=object)
    for code in set(status.tolist()):  # a handful of distinct codes, not one lookup per group
        messages[status == code] = Status.TEXT.get(int(code), str(int(code)))
    for g in np.flatnonzero(flagged.numpy() & fitted & finite):  # rare: build the long message only here
        st = fit_statistics(solution.R[g], float(solution.rss[g]), int(sizes[g]), k)
        messages[g] = unidentifiable_message(names, st) if st.unidentified else messages[g]
    for g in np.flatnonzero(~fitted):
        messages[g] = f"only {int(sizes[g])} rows for {k} parameters: not fitted"
    columns = {"group": labels, "n": sizes}
    columns.update({name: params[:, j] for j, name in enumerate(names)})
    columns.update({f"{name}_stderr": stderr[:, j] for j, name in enumerate(names)})
    n_iter = solution.n_iter.numpy().copy()
    n_iter[~fitted] = 0
    columns.update(rss=rss, r2=r2, n_iter=n_iter, converged=converged, message=messages)
    return pd.DataFrame(columns)
