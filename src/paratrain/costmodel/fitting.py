"""Latency alpha and inverse bandwidth beta of a collective from timed messages (least squares).

Each collective's algorithm gives its time as t = a(p)·alpha + b(p, n)·beta for p
workers and n bytes per rank; ``coefficients`` holds a and b, and the fit solves
for alpha and beta over every (p, n, t) measured, with neither below zero.

Example:
    >>> fit = fit_alpha_beta("p2p", [(2, 1000, 1e-4 + 1e-6), (2, 10**6, 1e-4 + 1e-3)])
    >>> round(fit.alpha_s * 1e6), round(fit.beta_s_per_byte * 1e9)
    (100, 1)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from paratrain.costmodel.calibration import CollectiveFit

COLLECTIVES = ("all_reduce", "all_gather", "broadcast", "p2p")


def coefficients(collective: str, workers: int, nbytes: float) -> tuple[float, float]:
    """(a, b) in t = a·alpha + b·beta: messages in sequence, and bytes through the slowest link.

    all_reduce (ring): 2(p-1) steps of n/p bytes each; all_gather (ring, n per rank):
    p-1 steps of n bytes; broadcast (tree): ceil(log2 p) steps of n bytes; p2p: one message.
    """
    p = max(2, int(workers))
    if collective == "all_reduce":
        return 2.0 * (p - 1), 2.0 * (p - 1) / p * nbytes
    if collective == "all_gather":
        return float(p - 1), (p - 1) * float(nbytes)
    if collective == "broadcast":
        hops = math.ceil(math.log2(p))
        return float(hops), hops * float(nbytes)
    if collective == "p2p":
        return 1.0, float(nbytes)
    raise ValueError(f"unknown collective {collective!r}; known: {', '.join(COLLECTIVES)}")


def collective_time(fit: CollectiveFit, collective: str, workers: int, nbytes: float) -> float:
    """Predicted seconds of one collective; 0 for one worker (nothing to exchange)."""
    if workers <= 1 or nbytes <= 0:
        return 0.0
    a, b = coefficients(collective, workers, nbytes)
    return a * fit.alpha_s + b * fit.beta_s_per_byte


def fit_alpha_beta(collective: str, points: Sequence[tuple[int, int, float]]) -> CollectiveFit:
    """Least squares of t = a·alpha + b·beta over (workers, bytes, seconds), alpha and beta >= 0.

    Relative errors are minimised (each row divided by its t): a 64 MiB message's
    milliseconds must not drown a 1 KiB message's microseconds.
    """
    rows = [(coefficients(collective, p, n), t) for p, n, t in points if t > 0]
    if not rows:
        raise ValueError(f"no timings to fit {collective}")
    a = np.array([[ca / t, cb / t] for (ca, cb), t in rows])
    y = np.ones(len(rows))
    if len(rows) == 1:
        (ca, cb), t = rows[0]
        return CollectiveFit(t / ca, 0.0, tuple(points))
    solution, *_ = np.linalg.lstsq(a, y, rcond=None)
    alpha, beta = float(solution[0]), float(solution[1])
    if alpha < 0 or beta < 0:
        # Clamp one at zero and refit the other alone (two unknowns: an exact small active-set step).
        candidates = []
        for keep in (0, 1):
            column = a[:, keep]
            value = max(0.0, float(column @ y / (column @ column)))
            residual = float(np.sum((column * value - y) ** 2))
            candidates.append((residual, (value, 0.0) if keep == 0 else (0.0, value)))
        alpha, beta = min(candidates)[1]
    return CollectiveFit(alpha, beta, tuple(points))
