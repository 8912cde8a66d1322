"""Levenberg-Marquardt for many small independent fits with one start each, in NumPy.

``fit_groups`` with one start per group (the default, and what a loop of scipy's
``curve_fit`` does) is, say, 1,000 fits of 50 points: 50,000 residuals per step,
where the general solver's fixed cost per step (torch dispatch, vmapped autodiff,
batched QR: a few milliseconds) outweighs the arithmetic. Here a step is about a
hundred NumPy calls of a few microseconds each:

* residuals, JᵀJ and Jᵀr from the compiled formula's exact derivatives
  (:mod:`~paratrain.curvefit.arrays`, :mod:`~paratrain.curvefit.symbolic`);
* the damped system ``(JᵀJ + lam D²) d = -Jᵀr`` for all fits at once
  (:mod:`~paratrain.curvefit.batched_linalg`);
* the running fits' state packed in one array with a contiguous row per quantity, so
  that dropping the fits that stopped is one copy and the last steps of the few slow
  fits cost little.

The iteration (Marquardt's scaling, Nielsen's damping update, clamping to the
bounds, parameters held on a bound, MINPACK's ftol/xtol/gtol tests) is that of
:mod:`~paratrain.curvefit.lm`, written for normal equations. Then undamped
Gauss-Newton steps take each converged fit to full float64 precision, and R~
(the triangular factor of ``[J | r]`` that the statistics read) comes from the
Cholesky factor of ``[J | r]ᵀ[J | r]``.

Why normal equations are safe here: forming JᵀJ squares J's condition number,
which slows Gauss-Newton's convergence and costs R~ digits, but does not move
its fixed point (Jᵀr = 0, where rounding in Jᵀr is a perturbation of r of
relative size ~m eps, as with QR). Fits whose column-scaled JᵀJ is worse
conditioned than ``WELL_CONDITIONED`` allows get R~ by Householder QR and the
general path's QR-based polish (:func:`~paratrain.curvefit.lm.gauss_newton_refine`)
instead: the same factor and digits as the general path.

Layout: per-fit quantities are "structure of arrays" (P is (k, n), JᵀJ (k, k, n)),
see :mod:`~paratrain.curvefit.batched_linalg`; the public entry point takes and
returns the usual (G, k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from paratrain.curvefit import batched_linalg as linalg
from paratrain.curvefit.arrays import ArrayEvaluator
from paratrain.curvefit.lm import LMOptions, LMResult, Status, gauss_newton_refine

__all__ = ["solve_one_start", "WELL_CONDITIONED"]

WELL_CONDITIONED = 1e-3
"""Smallest Cholesky pivot of the column-scaled JᵀJ (about 1/cond(J)) for which the normal
equations serve the polish and the statistics: R~ from JᵀJ then carries a relative error of
about cond(J)² eps, ~1e-10 at this threshold (the tests hold standard errors to the QR
path's within 1e-8). Below it: QR, as in the general path."""


def solve_one_start(evaluator: ArrayEvaluator, P0: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                    options: LMOptions = LMOptions()) -> LMResult:
    """Fit data set g from ``P0[g]``, for every g at once: damped steps, then Gauss-Newton to full precision.

    Args:
        evaluator: The data sets; row g of ``P0`` starts data set g.
        P0: (G, k) starting points (clamped into the bounds first).
        lower, upper: (k,) bounds (+-inf for none).
        options: ftol, xtol, gtol and max_iter as in :func:`~paratrain.curvefit.lm.levenberg_marquardt`
            (the multi-start options do not apply: one start per data set).

    Returns:
        Per data set: parameters (G, k), RSS, R~ at the end point, iterations and status, as torch tensors.

    Example:
        >>> from paratrain.models.formula import parse_formula
        >>> from paratrain.curvefit.arrays import GroupArrays
        >>> from paratrain.curvefit.symbolic import compile_formula
        >>> x = np.tile(np.linspace(0, 4, 20), (2, 1))
        >>> y = np.array([[2.0], [3.0]]) * np.exp(-0.5 * x)
        >>> program = compile_formula(parse_formula("A*exp(-k*x)"), ["A", "k"], ["x"])
        >>> inf = np.full(2, np.inf)
        >>> fit = solve_one_start(ArrayEvaluator(program, GroupArrays((x,), y, None)), np.ones((2, 2)), -inf, inf)
        >>> fit.params.numpy().round(9).tolist()
        [[2.0, 0.5], [3.0, 0.5]]
    """
    lower, upper = lower[:, None], upper[:, None]  # against (k, n)
    fits = _levenberg_marquardt(evaluator, np.ascontiguousarray(P0.T, dtype=np.float64), lower, upper, options)
    _gauss_newton(evaluator, fits, lower, upper)
    R, well = _triangular_from_gram(fits.A, fits.g, fits.rss)
    failed = fits.status == Status.FAILED
    R[failed] = np.nan  # as the QR of a non-finite [J | r]
    params, rss, R = torch.from_numpy(np.ascontiguousarray(fits.P.T)), torch.from_numpy(fits.rss), torch.from_numpy(R)
    status, n_iter = torch.from_numpy(fits.status), torch.from_numpy(fits.n_iter)
    hard = np.flatnonzero(~well & ~failed)
    if hard.size:
        # Too ill-conditioned for JᵀJ: R~ by QR and, for converged fits, the general path's QR polish.
        index = torch.from_numpy(hard)
        R[index] = evaluator.triangular(params[index], index)
        sub = LMResult(params[index], rss[index], R[index], n_iter[index], status[index])
        sub = gauss_newton_refine(evaluator, sub, index, torch.from_numpy(lower[:, 0]), torch.from_numpy(upper[:, 0]))
        params[index], rss[index], R[index] = sub.params, sub.rss, sub.R
    return LMResult(params, rss, R, n_iter, status)


COMPACT_AT = 0.75
"""The running batch is compacted when at most this fraction of its fits still runs."""


@dataclass
class _Fits:
    """Every data set's point (k, G), RSS, JᵀJ (k, k, G), Jᵀr (k, G), status and iterations."""

    P: np.ndarray
    rss: np.ndarray
    A: np.ndarray
    g: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray


class _Running:
    """The running fits' state in one (3k + k² + 3, n) array; the attributes are views of its rows.

    Rows: P (k), RSS, JᵀJ (k², row-major), Jᵀr (k), D² (k: Marquardt's squared scaling), lam, nu.
    One array, so that dropping the fits that stopped is a single copy; a contiguous row
    per quantity, because NumPy ops on strided columns cost several times more.
    """

    def __init__(self, state: np.ndarray, k: int):
        self.state, self.k = state, k
        n, end = state.shape[1], k + 1 + k * k
        self.P, self.rss = state[:k], state[k]
        self.A = state[k + 1:end].reshape(k, k, n)
        self.diagonal = state[k + 1:end:k + 1]  # (k, n): the A[j, j]
        self.g, self.D2 = state[end:end + k], state[end + k:end + 2 * k]
        self.lam, self.nu = state[end + 2 * k], state[end + 2 * k + 1]
        self.moving = end + k  # rows P, RSS, JᵀJ and Jᵀr: what an accepted step replaces

    @classmethod
    def start(cls, P, rss, A, g, lam0: float) -> _Running:
        k, n = P.shape
        diagonal = A[np.arange(k), np.arange(k)]
        D2 = np.where(diagonal > 0, diagonal, 1.0)  # a column that is zero at the start scales as 1
        state = np.concatenate([P, rss[None], A.reshape(k * k, n), g, D2, np.full((1, n), lam0),
                                np.full((1, n), 2.0)])
        return cls(state, k)

    def keep(self, fits: np.ndarray) -> _Running:
        return _Running(self.state[:, fits], self.k)


def _levenberg_marquardt(evaluator: ArrayEvaluator, P0, lower, upper, options: LMOptions) -> _Fits:
    """Damped steps until every data set meets a stopping test (lm.levenberg_marquardt's twin)."""
    k, G = P0.shape
    P = np.minimum(np.maximum(P0, lower), upper)
    rss, A, g = evaluator.normal_equations(P, evaluator.data)
    fits = _Fits(P, rss, A, g, np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64))
    failed = ~np.isfinite(rss) | ~np.isfinite(A).all(axis=(0, 1)) | ~np.isfinite(g).all(axis=0)
    fits.status[failed] = Status.FAILED
    fits.status[~failed & (rss == 0)] = Status.ZERO
    rows = np.flatnonzero(fits.status == Status.RUNNING)
    running = _Running.start(P[:, rows], rss[rows], A[:, :, rows], g[:, rows], options.lam0)
    data = evaluator.data if rows.size == G else evaluator.data.take(rows)
    bounded = bool(np.isfinite(lower).any() or np.isfinite(upper).any())
    alive = np.ones(rows.size, dtype=bool)  # running fits that have not stopped
    for iteration in range(1, options.max_iter + 1):
        if not alive.any():
            break
        status = _step(evaluator, data, running, lower, upper, bounded, options)
        stopped = (status != Status.RUNNING) & alive
        if stopped.any():
            _store(fits, rows[stopped], running.keep(stopped), status[stopped], iteration)
            alive &= ~stopped
            # Drop stopped fits once they are a quarter of the batch: until then they keep
            # stepping (their results are stored), which costs less than copying the data each time.
            if alive.sum() <= COMPACT_AT * alive.size:
                rows, running, data, alive = rows[alive], running.keep(alive), data.take(alive), alive[alive]
    _store(fits, rows[alive], running.keep(alive), Status.MAX_ITER, options.max_iter)
    return fits


def _store(fits: _Fits, rows, running: _Running, status, n_iter: int) -> None:
    fits.P[:, rows], fits.rss[rows] = running.P, running.rss
    fits.A[:, :, rows], fits.g[:, rows] = running.A, running.g
    fits.status[rows], fits.n_iter[rows] = status, n_iter


def _step(evaluator, data, w: _Running, lower, upper, bounded: bool, options: LMOptions) -> np.ndarray:
    """One damped step of every running fit (lm._iterate's twin); updates ``w``, returns the new status."""
    P, rss, A, grad = w.P, w.rss, w.A, w.g
    colnorm2 = w.diagonal
    # The running maximum of J's column norms, squared. (Not out=w.D2: NumPy would first check
    # the overlap of two strided views of one array, which costs more than the maximum.)
    w.D2[:] = np.maximum(w.D2, colnorm2)
    if bounded:
        # A parameter on a bound whose descent direction (-grad) points out of the box is held
        # there: its row and column leave the system, its gradient the gtol test.
        held = ((P <= lower) & (grad > 0)) | ((P >= upper) & (grad < 0))
        if held.any():
            grad = np.where(held, 0.0, grad)
            A = np.where(held[:, None, :] | held[None, :, :], 0.0, A)
            colnorm2 = A[np.arange(w.k), np.arange(w.k)]
    with np.errstate(all="ignore"):
        # gtol at the current point: the largest cosine between r and a column of J.
        cosine = (np.abs(grad) / np.maximum(np.sqrt(colnorm2 * rss), 1e-300)).max(axis=0)
        step = linalg.damped_step(A, grad, w.lam * w.D2)
        trial = P + step
        if bounded:
            trial = np.minimum(np.maximum(trial, lower), upper)
            step = trial - P
        # |c|² - |c + R d|² of lm._iterate, with RᵀR = JᵀJ and Rᵀc = Jᵀr.
        predicted = -2 * (grad * step).sum(axis=0) - (step * (A * step).sum(axis=1)).sum(axis=0)
        rss_t, A_t, g_t = evaluator.normal_equations(trial, data)
        reduction = rss - rss_t
        ratio = reduction / np.maximum(predicted, 1e-300)
        accept = (predicted > 0) & (ratio > 1e-4) & np.isfinite(rss_t)  # NaN (failed solve) compares False
        shift = 2 * ratio - 1
        lam = np.where(accept, w.lam * np.maximum(1 - shift * shift * shift, 1 / 3), w.lam * w.nu)
        # Convergence tests (relative, so they hold for any units of the parameters).
        step_norm = np.sqrt((w.D2 * step * step).sum(axis=0))
        conv_x = step_norm <= options.xtol * np.maximum(np.sqrt((w.D2 * P * P).sum(axis=0)), 1e-300)
        ftol_rss = options.ftol * rss
        conv_f = accept & (np.abs(reduction) <= ftol_rss) & (predicted <= ftol_rss)
        # Later tests win, as in lm._iterate: zero RSS, ftol, xtol, gtol, exhausted damping.
        status = np.where(lam > 1e32, Status.XTOL, Status.RUNNING)
        status = np.where(cosine <= options.gtol, Status.GTOL, status)
        status = np.where(conv_x, Status.XTOL, status)
        status = np.where(conv_f, Status.FTOL, status)
        status = np.where(accept & (rss_t == 0), Status.ZERO, status)
        # (Inside errstate: stopped fits awaiting compaction keep stepping, and their damping may overflow.)
        w.nu[:] = np.where(accept, 2.0, w.nu * 2)
        w.lam[:] = lam
        # The accepted fits move: point, RSS, JᵀJ and Jᵀr in one masked copy of the packed rows.
        moved = np.concatenate([trial, rss_t[None], A_t.reshape(w.k * w.k, -1), g_t])
        # Keep the last finite JᵀJ where the Jacobian is not finite (the point itself is fine). A finite
        # diagonal means finite JᵀJ and Jᵀr (|A_ij| <= sqrt(A_ii A_jj), |g_i| <= sqrt(A_ii rss)).
        stale = accept & ~np.isfinite(A_t.reshape(w.k * w.k, -1)[::w.k + 1].sum(axis=0))
        if stale.any():
            moved[w.k + 1:, stale] = w.state[w.k + 1:w.moving, stale]
        w.state[:w.moving] = np.where(accept, moved, w.state[:w.moving])
    return status


def _gauss_newton(evaluator, fits: _Fits, lower, upper, max_steps: int = 8, rtol: float = 1e-15) -> None:
    """Undamped Gauss-Newton steps from the converged, well-conditioned points, on JᵀJ.

    lm.gauss_newton_refine's twin (see there for why: an RSS test cannot see a parameter's
    last ~8 digits). A fit stops when a step moves no parameter by more than ``rtol``
    (relative), when the RSS rises beyond rounding, or when its gradient is within its own
    rounding error: further steps would only chase rounding. Ill-conditioned fits are left
    for the QR polish (see the module docstring). Stopped fits stay in the batch, frozen,
    until they are a quarter of it (as in _levenberg_marquardt).
    """
    rows = np.flatnonzero(fits.status > 0)
    P, rss, A, g = fits.P[:, rows], fits.rss[rows], fits.A[:, :, rows], fits.g[:, rows]
    data = evaluator.data if rows.size == fits.rss.size else evaluator.data.take(rows)
    live = np.ones(rows.size, dtype=bool)
    diagonal = np.arange(P.shape[0])
    for _ in range(max_steps):
        if not live.any():
            break
        with np.errstate(all="ignore"):
            L = linalg.cholesky(A)
            step = linalg.newton_step(L, g)
            live &= _well_conditioned(L, A) & np.isfinite(step).all(axis=0)
            trial = np.minimum(np.maximum(P + step, lower), upper)
            rss_t, A_t, g_t, bound = evaluator.normal_equations(trial, data, rounding=True)
            # Accept a step that keeps the RSS within rounding of its value.
            accept = live & np.isfinite(rss_t) & (rss_t <= rss * (1 + 1e-13) + 1e-300)
        moved = (np.abs(trial - P) > rtol * np.abs(P)).any(axis=0)
        P, rss = np.where(accept, trial, P), np.where(accept, rss_t, rss)
        update = accept & np.isfinite(A_t[diagonal, diagonal].sum(axis=0))
        A, g = np.where(update, A_t, A), np.where(update, g_t, g)
        settled = (np.abs(g_t) <= bound).all(axis=0)
        live &= update & moved & ~settled
        if live.sum() <= COMPACT_AT * live.size:
            done = rows[~live]
            fits.P[:, done], fits.rss[done], fits.A[:, :, done], fits.g[:, done] = \
                P[:, ~live], rss[~live], A[:, :, ~live], g[:, ~live]
            keep = live
            rows, P, rss, A, g, live = rows[keep], P[:, keep], rss[keep], A[:, :, keep], g[:, keep], live[keep]
            data = data.take(keep)
    fits.P[:, rows], fits.rss[rows], fits.A[:, :, rows], fits.g[:, rows] = P, rss, A, g


def _triangular_from_gram(A: np.ndarray, g: np.ndarray, rss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R~ (n, k+1, k+1) with R~ᵀR~ = [J | r]ᵀ[J | r], from JᵀJ, Jᵀr and the RSS; and where that is accurate.

    R = Lᵀ with JᵀJ = L Lᵀ, c = L⁻¹ Jᵀr (= Qᵀr of a QR), and the corner sqrt(rss - |c|²).
    Row signs may differ from a Householder QR's; nothing downstream depends on them.
    """
    k, n = g.shape
    with np.errstate(all="ignore"):
        L = linalg.cholesky(A)
        well = _well_conditioned(L, A)
        c = linalg.forward(L, g)
        R = np.zeros((n, k + 1, k + 1))
        for i in range(k):
            for j in range(i + 1):
                R[:, j, i] = L[i][j]
            R[:, i, k] = c[i]
        R[:, k, k] = np.sqrt(np.maximum(rss - sum(ci * ci for ci in c), 0.0))
    return R, well & np.isfinite(R).all(axis=(1, 2))


def _well_conditioned(L: list, A: np.ndarray) -> np.ndarray:
    """Whether every Cholesky pivot is at least WELL_CONDITIONED times its column's norm."""
    k = len(L)
    return (linalg.pivots(L) >= WELL_CONDITIONED * np.sqrt(A[np.arange(k), np.arange(k)])).all(axis=0)
