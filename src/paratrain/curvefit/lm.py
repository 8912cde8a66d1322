"""Batched Levenberg-Marquardt: many starting points, each with its own damping and stopping.

One iteration, for every still-active start at once:

1. From R~ = QR([J | r]) (see :mod:`~paratrain.curvefit.evaluator`) take R (k x k),
   c = Qᵀr and solve the damped problem ``min ||[R; sqrt(lam) D] d + [c; 0]||``
   with a small batched QR. This is Marquardt's step with his scaling
   ``D = diag(column norms of J)`` (kept as a running maximum, as MINPACK does),
   solved without ever forming JᵀJ.
2. Project the trial point into the bounds (clamping), evaluate its RSS only.
3. Gain ratio = actual / predicted reduction. Accept if > 1e-4; update the
   damping with Nielsen's rule (lam *= max(1/3, 1-(2 rho-1)^3) on success,
   lam *= nu, nu *= 2 on failure), which adapts faster than halving/doubling.
4. Recompute R~ only for the accepted starts.

Stopping, per start (MINPACK's tests): ftol (actual and predicted relative
reductions of the RSS both <= ftol), xtol (scaled step <= xtol * scaled |p|),
gtol (largest cosine between r and a column of J <= gtol), an exactly zero RSS,
or max_iter (not converged). Starts that land within ``dedupe_tol`` of a
better start of the same data set are retired as duplicates: after a few
iterations most of 1,000 starts sit in a handful of basins, and following
every copy to convergence would be wasted work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["LMOptions", "LMResult", "levenberg_marquardt", "gauss_newton_refine", "Status"]


class Status:
    """Per-start outcome codes: positive means converged."""

    RUNNING, FTOL, XTOL, GTOL, ZERO = 0, 1, 2, 3, 4
    MAX_ITER, FAILED, DUPLICATE, OUTRUN = -1, -2, -3, -4
    TEXT = {0: "running", 1: "relative reduction of the RSS below ftol", 2: "relative step below xtol",
            3: "gradient below gtol", 4: "zero residuals", -1: "reached max_iter",
            -2: "model not finite at the start", -3: "duplicate of a better start",
            -4: "stopped: another start of the same data set converged to a clearly lower RSS"}


@dataclass(frozen=True)
class LMOptions:
    """Tolerances and limits (see the module docstring)."""

    ftol: float = 1e-10
    xtol: float = 1e-10
    gtol: float = 1e-10
    max_iter: int = 200
    dedupe_every: int = 0
    """Check for duplicate starts every this many iterations (0: never)."""
    dedupe_tol: float = 1e-4
    """Two starts are duplicates when every parameter agrees to this relative tolerance."""
    lam0: float = 1e-3
    """Initial damping relative to Marquardt's scaling."""
    race_after: int = 0
    """After this many iterations (0: never), stop a start once another start of its data set has
    converged to an RSS lower by more than 0.1%: it is crawling through a valley that cannot end
    better (its RSS only decreases, but the batch would wait for it up to max_iter)."""
    cull_after: int = 0
    """After this many iterations (0: never), stop starts whose RSS is still ``cull_factor`` times the
    lowest of their data set: exploration only ranks basins, and a start that far behind after a
    few steps is not the one that will be polished."""
    cull_factor: float = 100.0


@dataclass
class LMResult:
    """Per start: final parameters, RSS, R~, iterations and status."""

    params: torch.Tensor
    rss: torch.Tensor
    R: torch.Tensor
    n_iter: torch.Tensor
    status: torch.Tensor

    @property
    def converged(self) -> torch.Tensor:
        return self.status > 0


def levenberg_marquardt(evaluator, P0: torch.Tensor, index: torch.Tensor, lower: torch.Tensor,
                        upper: torch.Tensor, options: LMOptions = LMOptions(),
                        protected: torch.Tensor | None = None) -> LMResult:
    """Minimise the RSS from every row of ``P0`` (see the module docstring).

    Args:
        evaluator: Has ``rss(P, index)`` and ``triangular(P, index)``.
        P0: (B, k) starting points (clamped into the bounds first).
        index: (B,) data set of each start.
        lower, upper: (k,) bounds (+-inf for none).
        options: Tolerances and limits.
        protected: (B,) starts never retired as outrun (p0's own start: it decides ties).
    """
    B, k = P0.shape
    protected = torch.zeros(B, dtype=torch.bool) if protected is None else protected
    P = torch.minimum(torch.maximum(P0, lower), upper).clone()
    R = evaluator.triangular(P, index)
    rss = _rss_of(R)
    status = torch.zeros(B, dtype=torch.long)
    status[~torch.isfinite(R).flatten(1).all(1) | ~torch.isfinite(rss)] = Status.FAILED
    rss[status == Status.FAILED] = torch.inf
    status[(rss == 0) & (status == 0)] = Status.ZERO
    D = _update_scale(None, R, k)
    lam = torch.full((B,), options.lam0, dtype=P.dtype)
    nu = torch.full((B,), 2.0, dtype=P.dtype)
    n_iter = torch.zeros(B, dtype=torch.long)
    for iteration in range(1, options.max_iter + 1):
        active = torch.nonzero(status == Status.RUNNING).flatten()
        if active.numel() == 0:
            break
        if options.dedupe_every and iteration % options.dedupe_every == 0:
            _retire_duplicates(P, rss, status, index, options.dedupe_tol)
            active = torch.nonzero(status == Status.RUNNING).flatten()
        if options.cull_after and iteration > options.cull_after:
            _retire_far_behind(rss, status, index, options.cull_factor)
            active = torch.nonzero(status == Status.RUNNING).flatten()
        if options.race_after and iteration > options.race_after:
            _retire_outrun(rss, status, index, protected)
            active = torch.nonzero(status == Status.RUNNING).flatten()
            if active.numel() == 0:
                break
        _iterate(evaluator, active, P, R, rss, D, lam, nu, status, index, lower, upper, options)
        n_iter[active] += 1
    status[status == Status.RUNNING] = Status.MAX_ITER
    return LMResult(P, rss, R, n_iter, status)


def _iterate(evaluator, a, P, R, rss, D, lam, nu, status, index, lower, upper, options) -> None:
    """One damped step for the active starts ``a``; updates the state tensors in place."""
    k = P.shape[1]
    Ra, Pa, rss_a, Da = R[a], P[a], rss[a], D[a]
    Rk, c = Ra[:, :k, :k], Ra[:, :k, k]
    # gtol at the current point: cos(angle) between r and each column of J.
    grad = torch.einsum("bij,bi->bj", Rk, c)
    # A parameter on a bound whose descent direction (-grad) points out of the box is
    # held there: its column leaves the step and its gradient the gtol test. Without
    # this, the clipped joint step keeps creeping and never meets a stopping test.
    held = ((Pa <= lower) & (grad > 0)) | ((Pa >= upper) & (grad < 0))
    grad = torch.where(held, torch.zeros_like(grad), grad)
    Rk = torch.where(held.unsqueeze(1), torch.zeros_like(Rk), Rk)
    colnorm = Rk.norm(dim=1)
    cosine = (grad.abs() / (colnorm * rss_a.sqrt().unsqueeze(1)).clamp_min(1e-300)).amax(dim=1)
    step = _damped_step(Rk, c, Da, lam[a])
    trial = torch.minimum(torch.maximum(Pa + step, lower), upper)
    step = trial - Pa
    predicted = (c * c).sum(1) - ((c + torch.einsum("bij,bj->bi", Rk, step)) ** 2).sum(1)
    rss_trial = evaluator.rss(trial, index[a])
    ratio = (rss_a - rss_trial) / predicted.clamp_min(1e-300)
    accept = (predicted > 0) & (ratio > 1e-4) & torch.isfinite(rss_trial)
    lam[a] = torch.where(accept, lam[a] * torch.clamp(1 - (2 * ratio - 1) ** 3, min=1 / 3), lam[a] * nu[a])
    nu[a] = torch.where(accept, torch.full_like(nu[a], 2.0), nu[a] * 2)
    # Convergence tests (relative, so they hold for any units of the parameters).
    xnorm = (Da * Pa).norm(dim=1)
    dnorm = (Da * step).norm(dim=1)
    conv_x = dnorm <= options.xtol * xnorm.clamp_min(1e-300)
    conv_f = accept & ((rss_a - rss_trial).abs() <= options.ftol * rss_a) & (predicted <= options.ftol * rss_a)
    conv_g = cosine <= options.gtol
    stalled = lam[a] > 1e32  # damping exhausted: no step in any direction decreases the RSS
    new_status = torch.zeros_like(a)
    new_status[stalled] = Status.XTOL
    new_status[conv_g] = Status.GTOL
    new_status[conv_x] = Status.XTOL
    new_status[conv_f] = Status.FTOL
    zero = accept & (rss_trial == 0)
    new_status[zero] = Status.ZERO
    status[a] = new_status
    if accept.any():
        acc = a[accept]
        P[acc] = trial[accept]
        rss[acc] = rss_trial[accept]
        R_new = evaluator.triangular(P[acc], index[acc])
        bad = ~torch.isfinite(R_new).flatten(1).all(1)
        R_new[bad] = R[acc][bad]  # keep the last finite factor; the point itself is fine
        R[acc] = R_new
        D[acc] = _update_scale(D[acc], R_new, k)


def _damped_step(Rk: torch.Tensor, c: torch.Tensor, D: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Solve min ||[R; sqrt(lam) diag(D)] d + [c; 0]|| for every start (2k x k systems)."""
    A = torch.cat([Rk, torch.diag_embed(lam.sqrt().unsqueeze(1) * D)], dim=1)
    b = torch.cat([-c, torch.zeros_like(c)], dim=1).unsqueeze(-1)
    Q, T = torch.linalg.qr(A)
    rhs = Q.transpose(1, 2) @ b
    # T is triangular and non-singular when lam > 0 and D > 0.
    return torch.linalg.solve_triangular(T, rhs, upper=True).squeeze(-1)


def _update_scale(D: torch.Tensor | None, R: torch.Tensor, k: int) -> torch.Tensor:
    norms = R[:, :k, :k].norm(dim=1)
    norms = torch.where(torch.isfinite(norms), norms, torch.zeros_like(norms))
    D = torch.maximum(D, norms) if D is not None else norms
    return torch.where(D > 0, D, torch.ones_like(D))


def _rss_of(R: torch.Tensor) -> torch.Tensor:
    return (R[:, :, -1] ** 2).sum(dim=1)


def _best_rss_per_set(rss, index, mask) -> torch.Tensor:
    best = torch.full((int(index.max()) + 1,), torch.inf, dtype=rss.dtype)
    return best.scatter_reduce(0, index[mask], rss[mask], reduce="amin")


def _retire_far_behind(rss, status, index, factor) -> None:
    """Stop running starts whose RSS is still ``factor`` times the lowest of their data set."""
    best = _best_rss_per_set(rss, index, torch.isfinite(rss))
    status[(status == Status.RUNNING) & (rss > factor * best[index])] = Status.OUTRUN


def _retire_outrun(rss, status, index, protected) -> None:
    """Stop running starts whose data set already has a converged start with a clearly lower RSS."""
    done = status > 0
    if not done.any():
        return
    best = _best_rss_per_set(rss, index, done)
    outrun = (status == Status.RUNNING) & (best[index] < rss * (1 - 1e-3)) & ~protected
    status[outrun] = Status.OUTRUN


def _retire_duplicates(P, rss, status, index, tol) -> None:
    """Mark running starts that share a cell of relative size ``tol`` with a better start of their set.

    Cells are buckets of sign and log|p| per parameter (a hash, O(B log B)), rather
    than all pairwise distances (O(B^2 k): 1,000 starts made that the costliest
    step). Two close points on opposite sides of a cell border are missed; they are
    caught when they merge further, or simply polished twice.
    """
    alive = torch.nonzero(status >= 0).flatten()
    if alive.numel() < 2:
        return
    Pa = P[alive]
    magnitude = torch.floor(torch.log(Pa.abs().clamp_min(1e-300)) / math.log1p(tol)).long()
    key = torch.cat([index[alive].unsqueeze(1), torch.sign(Pa).long(), torch.where(Pa == 0, 0, magnitude)], dim=1)
    _, cell = torch.unique(key, dim=0, return_inverse=True)
    # Keep the lowest RSS of each cell (ties: lowest index); the other running members are duplicates.
    order = torch.argsort(rss[alive], stable=True)
    order = order[torch.argsort(cell[order], stable=True)]
    keep = torch.ones_like(order, dtype=torch.bool)
    keep[1:] = cell[order][1:] != cell[order][:-1]
    dropped = alive[order[~keep]]
    status[dropped[status[dropped] == Status.RUNNING]] = Status.DUPLICATE


def gauss_newton_refine(evaluator, result: LMResult, index: torch.Tensor, lower: torch.Tensor,
                        upper: torch.Tensor, max_steps: int = 8, rtol: float = 1e-15) -> LMResult:
    """Undamped Gauss-Newton steps from converged points, to the last digit float64 allows.

    Why: near a minimum the RSS is flat to machine precision over a region about
    sqrt(eps) standard errors wide, so any test on the RSS (ftol, the gain ratio)
    stops there; parameters with large relative standard errors then keep only ~6
    digits (ENSO). The Gauss-Newton step R d = -Qᵀr is computed from J and r, not
    from RSS differences, and is accurate to ~eps * cond(J): iterating it until the
    step is below ``rtol`` (or the RSS rises beyond rounding) reaches the
    stationary point itself. Failed starts are left alone.
    """
    P, R, rss = result.params.clone(), result.R.clone(), result.rss.clone()
    k = P.shape[1]
    live = torch.nonzero(result.status > 0).flatten()
    for _ in range(max_steps):
        if live.numel() == 0:
            break
        Rk, c = R[live, :k, :k], R[live, :k, k]
        diag = torch.diagonal(Rk, dim1=1, dim2=2).abs()
        ok = (diag > 1e-14 * diag.amax(dim=1, keepdim=True)).all(dim=1)  # skip rank-deficient points
        live, Rk, c = live[ok], Rk[ok], c[ok]
        if live.numel() == 0:
            break
        step = torch.linalg.solve_triangular(Rk, -c.unsqueeze(-1), upper=True).squeeze(-1)
        trial = torch.minimum(torch.maximum(P[live] + step, lower), upper)
        rss_trial = evaluator.rss(trial, index[live])
        # Accept a step that keeps the RSS within rounding of its value.
        accept = torch.isfinite(rss_trial) & (rss_trial <= rss[live] * (1 + 1e-13) + 1e-300)
        live = live[accept]
        if live.numel() == 0:
            break
        moved = (trial[accept] - P[live]).abs() > rtol * P[live].abs()
        P[live], rss[live] = trial[accept], rss_trial[accept]
        R_new = evaluator.triangular(P[live], index[live])
        finite = torch.isfinite(R_new).flatten(1).all(1)
        R[live[finite]] = R_new[finite]
        live = live[finite & moved.any(dim=1)]
    return LMResult(P, rss, R, result.n_iter, result.status)
