"""Standard errors, identifiability and goodness of fit from the solver's R~ factor.

With [J | r] = Q R~ and R the leading k x k block: JᵀJ = RᵀR, so the covariance
``inv(JᵀJ) * rss / (n - k)`` (what scipy's curve_fit reports) comes from R
alone, without the full Jacobian, and identically for a data-parallel fit.

Identifiability: the singular values of R after scaling its columns to unit
norm. A smallest singular value below ``RANK_TOL`` times the largest means the
data cannot tell some combination of parameters apart (``b1*b2*x``: only the
product is determined); the right singular vector names which parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FitStatistics", "fit_statistics", "RANK_TOL"]

RANK_TOL = 1e-11
"""Relative singular value (of the column-scaled Jacobian) below which a direction is unidentifiable."""


@dataclass
class FitStatistics:
    """Covariance and its consequences for one fit."""

    covariance: np.ndarray
    stderr: np.ndarray
    rank: int
    condition: float
    unidentified: list[list[tuple[int, float]]]
    """One entry per null direction: (parameter index, weight) for the parameters involved."""


def fit_statistics(R: torch.Tensor, rss: float, n: int, k: int) -> FitStatistics:
    """Covariance ``inv(JᵀJ) rss/(n-k)`` and a rank check, from R~ (k+1, k+1)."""
    Rk = R[:k, :k].double()
    scale = Rk.norm(dim=0)
    dead = scale == 0
    Rs = Rk / torch.where(dead, torch.ones_like(scale), scale)
    U, S, Vh = torch.linalg.svd(Rs)
    smax = float(S[0]) if S.numel() else 0.0
    small = S <= RANK_TOL * smax
    rank = int((~small).sum())
    condition = float(S[0] / S[-1]) if float(S[-1]) > 0 else float("inf")
    unidentified = []
    for i in torch.nonzero(small).flatten().tolist():
        v = Vh[i]
        involved = [(j, float(v[j])) for j in range(k) if abs(float(v[j])) > 0.05]
        unidentified.append(involved)
    for j in torch.nonzero(dead).flatten().tolist():  # a parameter with no effect at all
        if not any(j in [p for p, _ in d] for d in unidentified):
            unidentified.append([(j, 1.0)])
    dof = n - k
    sigma2 = rss / dof if dof > 0 else float("nan")
    if unidentified:
        covariance = np.full((k, k), np.inf)
    else:
        inv_s = (Vh.T / S) / torch.where(dead, torch.ones_like(scale), scale).unsqueeze(1)
        covariance = (inv_s @ inv_s.T).numpy() * sigma2
    stderr = np.sqrt(np.abs(np.diag(covariance)))
    return FitStatistics(covariance, stderr, rank, condition, unidentified)


def r_squared(rss: float, totals: torch.Tensor) -> float:
    """1 - RSS / total sum of squares about the (weighted) mean; totals = (sum w, sum wy, sum wy^2)."""
    sw, swy, swy2 = (float(v) for v in totals)
    tss = swy2 - swy * swy / sw if sw > 0 else 0.0
    return 1.0 - rss / tss if tss > 0 else float("nan")


def batched_stderr(R: torch.Tensor, rss: torch.Tensor, n: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard errors (G, k) and an unidentifiable flag (G,) for many fits at once (groups).

    The same quantities as :func:`fit_statistics`, without an SVD per fit (1,000 small SVDs
    cost more than fitting 1,000 groups): with Rs = R with unit columns and T = Rs⁻¹
    (triangular: back substitution), the covariance's diagonal is the row norms of T, and
    the rank test ``σ_min(Rs) <= RANK_TOL σ_max(Rs)`` follows from the Frobenius norm F of
    T: σ_min lies in [1/F, √k/F] and σ_max in [1, √k] (unit columns). Only fits that these
    bounds leave undecided (or with a non-finite T) get the SVD. The arithmetic runs entry
    by entry on (G,) vectors: reductions over a short k axis cost NumPy ~10x more.
    """
    Rk = R[:, :k, :k].numpy()
    entries = Rk.transpose(1, 2, 0)  # entries[i, j] is entry (i, j) of every fit
    with np.errstate(all="ignore"):
        scale = np.stack([np.sqrt(sum(entries[i, j] ** 2 for i in range(k))) for j in range(k)], axis=1)
        dead = (scale == 0).any(axis=1)
        safe = np.where(scale > 0, scale, 1.0)
        T = _upper_inverse([[entries[i, j] / safe[:, j] for j in range(k)] for i in range(k)])
        squares = [[T[i][j] ** 2 for j in range(i, k)] for i in range(k)]  # row i of T: entries j >= i
        var = np.stack([sum(squares[i]) for i in range(k)], axis=1) / (safe * safe)
        frobenius = np.sqrt(var.dtype.type(0) + sum(sum(row) for row in squares))
        margin = 4.0  # far more than the rounding in T, even at cond(Rs) ~ 1/RANK_TOL
        full_rank = 1 / (frobenius * math.sqrt(k)) > margin * RANK_TOL
        deficient = math.sqrt(k) / frobenius <= RANK_TOL / margin
    flagged = dead | deficient
    undecided = np.flatnonzero(~dead & ~full_rank & ~deficient)  # includes a non-finite F
    if undecided.size:
        var[undecided], flagged[undecided] = _svd_variance(Rk[undecided], scale[undecided], safe[undecided])
    dof = n.numpy() - k
    with np.errstate(all="ignore"):
        sigma2 = np.where(dof > 0, rss.numpy() / np.maximum(dof, 1), np.nan)
        stderr = np.sqrt(var * sigma2[:, None])
    stderr[flagged] = np.inf
    return torch.from_numpy(stderr), torch.from_numpy(flagged)


def _upper_inverse(U: list[list]) -> list[list]:
    """T = U⁻¹ for upper-triangular U given entry by entry (k x k lists of (G,) vectors); T[i][j], j >= i."""
    k = len(U)
    T = [[None] * k for _ in range(k)]
    for j in range(k):
        T[j][j] = 1 / U[j][j]
        for i in range(j - 1, -1, -1):
            T[i][j] = -sum(U[i][p] * T[p][j] for p in range(i + 1, j + 1)) / U[i][i]
    return T


def _svd_variance(Rk: np.ndarray, scale: np.ndarray, safe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """diag(inv(RᵀR)) and the rank flag by SVD, for the few fits the norm bounds cannot decide."""
    Rs = torch.from_numpy(Rk / safe[:, None, :])
    finite = torch.isfinite(Rs).flatten(1).all(dim=1)
    Rs = torch.where(finite[:, None, None], Rs, torch.zeros_like(Rs))  # SVD of NaN may not converge
    _, S, Vh = torch.linalg.svd(Rs)
    flagged = (S[:, -1] <= RANK_TOL * S[:, 0]) | torch.from_numpy((scale == 0).any(axis=1)) | ~finite
    inv = Vh.transpose(1, 2) / torch.where(S > 0, S, torch.ones_like(S)).unsqueeze(1)
    var = (inv * inv).sum(dim=2).numpy() / (safe * safe)
    return var, flagged.numpy()
