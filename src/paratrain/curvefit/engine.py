"""Multi-start search, then polish: the strategy shared by single fits, groups and folds.

For each of D data sets (one data set; or one per group; or one per CV fold):

1. **Explore**: Levenberg-Marquardt from all S starts at once, with loose
   tolerances. Starts that merge (same 1% cell in every parameter) are retired as
   duplicates, and after 6 steps starts whose RSS is still 100x the best of their
   data set are dropped: a few steps sort most starts into a handful of basins,
   and following every copy would cost most of the time. When a data set has more rows
   than ``explore_rows``, exploration sees an evenly spread subset of rows: basins
   are found just as well, at a fraction of the cost (1,000 starts x 10,000 rows
   would be 10^7 residuals per step).
2. **Polish**: the ``refine`` best distinct end points per data set continue on
   all rows with tight tolerances (ftol = xtol = gtol = 1e-15 by default), as one
   batch, then take a few undamped Gauss-Newton steps to the stationary point
   (:func:`~paratrain.curvefit.lm.gauss_newton_refine`). This is where NIST's
   certified digits are won.
3. Keep the lowest RSS per data set. Ties (RSS equal within ``tie_rtol``, or within
   rounding noise ~eps^2 * sum(w y^2)) are common:
   exchanging the two peaks of a Gaussian mixture, the terms of a sum of
   exponentials (Lanczos, Gauss, ENSO) or the sign of b2 in Eckerle4 gives the same
   fit under other labels. Among tied optima, the one reached from p0 itself wins
   (else the one nearest p0), because p0 says which labelling the user means; p0's
   own end point is therefore always among the polished candidates.

Exploration stops after ``explore.max_iter`` (30) iterations whether or not every
start converged: it only has to rank basins, and starts that wander in flat
regions would otherwise cost most of the time. The polish continues from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from paratrain.curvefit.lm import LMOptions, LMResult, Status, gauss_newton_refine, levenberg_marquardt

__all__ = ["SolveOptions", "Solution", "solve"]


@dataclass(frozen=True)
class SolveOptions:
    """How hard to search and how tightly to converge."""

    explore_rows: int = 256
    """Rows seen while exploring, when a data set has more (evenly spread)."""
    refine: int = 4
    """Distinct candidates per data set polished on all rows."""
    explore: LMOptions = field(default_factory=lambda: LMOptions(
        ftol=1e-8, xtol=1e-8, gtol=1e-10, max_iter=30, dedupe_every=2, dedupe_tol=1e-2, cull_after=6))
    polish: LMOptions = field(default_factory=lambda: LMOptions(
        ftol=1e-15, xtol=1e-15, gtol=1e-15, max_iter=1000, race_after=30))
    tie_rtol: float = 1e-8
    """Optima whose RSS agree to this relative tolerance count as ties (see the module docstring)."""


@dataclass
class Solution:
    """Per data set: the best parameters and what the solver knows about them."""

    params: torch.Tensor
    rss: torch.Tensor
    R: torch.Tensor
    n_iter: torch.Tensor
    status: torch.Tensor
    starts_used: int


def solve(full, starts: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
          options: SolveOptions = SolveOptions(), explore=None, middle=None) -> Solution:
    """Fit every data set from its starts; ``explore`` is an evaluator on fewer rows (or None).

    Args:
        full: Evaluator on all rows.
        starts: (D, S, k) starting points; ``starts[d, 0]`` is the data set's p0.
        lower, upper: (k,) bounds.
        options: Search and tolerance settings.
        explore: Evaluator used for exploration (default: ``full``).
        middle: For very large data, an evaluator on a few thousand rows: the candidates
            are polished there first and only each set's winner on all rows.
    """
    D, S, k = starts.shape
    index = torch.arange(D).repeat_interleave(S)
    P = starts.reshape(D * S, k)
    if S > 1:
        explored = levenberg_marquardt(explore or full, P, index, lower, upper, options.explore)
        pick = _candidates(explored, index, D, options.refine)
        from_p0 = (pick % S) == 0
        P, index, spent = explored.params[pick], index[pick], explored.n_iter[pick]
    else:
        spent = torch.zeros(D, dtype=torch.long)
        from_p0 = torch.ones(D, dtype=torch.bool)
    if middle is not None and P.shape[0] > D:
        # Millions of rows: choose among the candidates on a few thousand rows, so that
        # only one fit per data set pays for every row.
        staged = levenberg_marquardt(middle, P, index, lower, upper, options.polish, protected=from_p0)
        pick = _best_per_set(staged, index, starts[:, 0], from_p0, options.tie_rtol, _noise_floor(middle))
        P, index, from_p0 = staged.params[pick], index[pick], from_p0[pick]
        spent = spent[pick] + staged.n_iter[pick]
    polished = levenberg_marquardt(full, P, index, lower, upper, options.polish, protected=from_p0)
    polished = gauss_newton_refine(full, polished, index, lower, upper)
    best = _best_per_set(polished, index, starts[:, 0], from_p0, options.tie_rtol, _noise_floor(full))
    return Solution(polished.params[best], polished.rss[best], polished.R[best],
                    polished.n_iter[best] + spent[best], polished.status[best], S)


def _noise_floor(evaluator) -> torch.Tensor:
    """Per data set, the RSS below which differences are rounding: ~eps^2 * sum(w y^2).

    Lanczos1 fits to an RSS of 1e-25, where relative RSS differences mean nothing;
    such values are ties however different their ratio.
    """
    return 100 * torch.finfo(torch.float64).eps ** 2 * evaluator.totals()[:, 2]


def _candidates(result: LMResult, index: torch.Tensor, D: int, refine: int) -> torch.Tensor:
    """Per data set: p0's end point, then up to ``refine`` distinct lowest-RSS end points."""
    picks = []
    usable = (result.status != Status.FAILED) & (result.status != Status.DUPLICATE) & torch.isfinite(result.rss)
    for d in range(D):
        own = torch.nonzero(index == d).flatten()
        rows = own[usable[own]]
        if rows.numel() == 0:
            picks.append(own[:1])
            continue
        rows = rows[torch.argsort(result.rss[rows], stable=True)]
        first = int(own[0])  # the start at p0 (retired duplicates stopped inside a better start's basin)
        chosen: list[int] = [first] if bool(torch.isfinite(result.rss[first])) else []
        for row in rows.tolist():
            p = result.params[row]
            if all(((p - result.params[c]).abs() / (p.abs() + result.params[c].abs()).clamp_min(1e-12)).max() > 1e-3
                   for c in chosen):
                chosen.append(row)
            if len(chosen) == refine + 1:
                break
        picks.append(torch.tensor(chosen, dtype=torch.long))
    return torch.cat(picks)


def _best_per_set(result: LMResult, index: torch.Tensor, p0: torch.Tensor, from_p0: torch.Tensor,
                  tie_rtol: float, floor: torch.Tensor) -> torch.Tensor:
    """Per data set, the lowest RSS; among ties, p0's own end point, else the one nearest p0.

    Vectorised over data sets (1,000 groups must not mean 1,000 Python iterations).
    """
    D = p0.shape[0]
    rss = torch.where(torch.isfinite(result.rss), result.rss, torch.full_like(result.rss, torch.inf))
    low = torch.full((D,), torch.inf, dtype=rss.dtype).scatter_reduce(0, index, rss, reduce="amin")
    tied = rss <= low[index] + tie_rtol * low[index].abs() + floor[index]
    P, origin = result.params, p0[index]
    distance = ((P - origin).abs() / (P.abs() + origin.abs()).clamp_min(1e-300)).sum(dim=1)
    # Lower score wins: p0's own tied end point (-1), other tied points by distance, the rest last.
    score = torch.where(tied, torch.where(from_p0, torch.full_like(distance, -1.0), distance),
                        torch.full_like(distance, torch.inf))
    order = torch.argsort(score, stable=True)
    order = order[torch.argsort(index[order], stable=True)]
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = index[order][1:] != index[order][:-1]
    return order[first]
