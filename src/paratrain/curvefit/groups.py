"""``fit_groups``: the same formula fitted to every group of a table, as one batch.

Groups have different sizes, so each becomes a data set padded to the largest
group's row count; padding rows get weight 0 and drop out of every sum. One
batched Levenberg-Marquardt then moves all groups (times their starts) at once,
which is what makes 1,000 small fits cost little more than a few big ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from paratrain.curvefit.engine import solve
from paratrain.curvefit.evaluator import LocalEvaluator, thread_limit
from paratrain.curvefit.fit import FitSettings, to_frame, unidentifiable_message
from paratrain.curvefit.lm import Status
from paratrain.curvefit.problem import FitData, build_problem
from paratrain.curvefit.starts import design_starts
from paratrain.curvefit.stats import batched_stderr, fit_statistics
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
    problem = build_problem(formula, frame.drop(columns=[group_by]), target, p0=p0, bounds=bounds)
    model, k = problem.model, problem.model.k
    settings = settings.for_parameters(k)
    codes, labels = pd.factorize(frame[group_by], sort=False)
    sizes = np.bincount(codes, minlength=len(labels))
    data_sets = _pad(problem.data, codes, sizes)
    design = design_starts(problem.p0, settings.starts, problem.lower, problem.upper, seed)
    starts_tensor = design.unsqueeze(0).expand(len(labels), -1, -1).contiguous()
    evaluator = LocalEvaluator(model, data_sets)
    solution = solve(evaluator, starts_tensor, problem.lower, problem.upper, settings.solve)
    table = _table(model.param_names, labels, sizes, solution, evaluator.totals())
    return table.rename(columns={"group": group_by})


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
    """One row per group, built column-wise (a per-group Python loop would dominate 1,000 small fits)."""
    k = len(names)
    n = torch.as_tensor(sizes)
    stderr, flagged = batched_stderr(solution.R, solution.rss, n, k)
    fitted = n > k
    params = solution.params.numpy().copy()
    params[~fitted.numpy()] = np.nan
    stderr = stderr.numpy()
    stderr[~fitted.numpy()] = np.nan
    rss = solution.rss.numpy().copy()
    rss[~fitted.numpy()] = np.nan
    sw, swy, swy2 = totals.T
    tss = (swy2 - swy * swy / sw).numpy()
    with np.errstate(all="ignore"):
        r2 = np.where(tss > 0, 1 - rss / tss, np.nan)
    status = solution.status.numpy()
    converged = (status > 0) & fitted.numpy()
    messages = np.array([Status.TEXT.get(int(s), str(int(s))) for s in status], dtype=object)
    for g in np.flatnonzero(flagged.numpy() & fitted.numpy()):  # rare: build the long message only here
        st = fit_statistics(solution.R[g], float(solution.rss[g]), int(sizes[g]), k)
        messages[g] = unidentifiable_message(names, st) if st.unidentified else messages[g]
    for g in np.flatnonzero(~fitted.numpy()):
        messages[g] = f"only {int(sizes[g])} rows for {k} parameters: not fitted"
    columns = {"group": labels, "n": sizes}
    columns.update({name: params[:, j] for j, name in enumerate(names)})
    columns.update({f"{name}_stderr": stderr[:, j] for j, name in enumerate(names)})
    n_iter = solution.n_iter.numpy().copy()
    n_iter[~fitted.numpy()] = 0
    columns.update(rss=rss, r2=r2, n_iter=n_iter, converged=converged, message=messages)
    return pd.DataFrame(columns)
