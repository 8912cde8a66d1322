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

    Same arithmetic as :func:`fit_statistics`, batched: one SVD call for all groups
    instead of a Python loop (1,000 groups would otherwise spend longer here than fitting).
    """
    Rk = R[:, :k, :k]
    scale = Rk.norm(dim=1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    Rs = Rk / safe.unsqueeze(1)
    _, S, Vh = torch.linalg.svd(Rs)
    flagged = (S[:, -1] <= RANK_TOL * S[:, 0]) | (scale == 0).any(dim=1)
    inv = Vh.transpose(1, 2) / torch.where(S > 0, S, torch.ones_like(S)).unsqueeze(1)
    var = (inv * inv).sum(dim=2) / (safe * safe)
    dof = (n - k).to(R.dtype)
    sigma2 = torch.where(dof > 0, rss / dof.clamp_min(1), torch.full_like(rss, float("nan")))
    stderr = (var * sigma2.unsqueeze(1)).sqrt()
    stderr[flagged] = float("inf")
    return stderr, flagged
