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


BANDWIDTH_REGIME_BYTES = 256 * 1024
"""Messages from this size on are timed by the link's rate: past the token bucket's burst of an
emulated link (64 KiB or rate/8 ms) and past loopback's latency floor."""


def fit_alpha_beta(collective: str, points: Sequence[tuple[int, int, float]]) -> CollectiveFit:
    """alpha and beta >= 0 of t = a·alpha + b·beta over (workers, bytes, seconds), in two regimes.

    beta comes from the large messages (>= BANDWIDTH_REGIME_BYTES) and alpha from the small
    ones, each by least squares on relative errors (a 64 MiB message's milliseconds must not
    drown a 1 KiB message's microseconds). One joint fit over every size is wrong on a
    rate-limited link: a token bucket passes small messages at full speed, so small messages
    pulled beta to half the rate that 1-4 MiB messages (DDP's buckets) measured (seen at
    100mbit: 4 MiB predicted 195 ms, measured 355 ms). With fewer than two large sizes the
    joint fit over every point is used.
    """
    rows = [(coefficients(collective, p, n), t, n, p) for p, n, t in points if t > 0]
    if not rows:
        raise ValueError(f"no timings to fit {collective}")
    if len(rows) == 1:
        (ca, cb), t, _, _ = rows[0]
        return CollectiveFit(t / ca, 0.0, tuple(points))
    large = [row for row in rows if row[2] >= BANDWIDTH_REGIME_BYTES]
    small = [row for row in rows if row[2] < BANDWIDTH_REGIME_BYTES]
    if len({row[2] for row in large}) < 2:
        alpha, beta = _relative_least_squares(rows)
        return CollectiveFit(alpha, beta, tuple(points))
    alpha, beta = _relative_least_squares(large)
    if small:
        # What is left of each small message once its bytes are paid is its latency, taken at
        # the fewest workers measured: more workers than cores add time-slicing (seen: 4 ranks
        # on 2 cores took 3-10 ms for 1 KiB), which is the machine's contention, not the
        # software's latency, and would be charged 2(p-1) times per all-reduce on any network.
        fewest = min(row[3] for row in small)
        alpha = max(0.0, float(np.median([(t - cb * beta) / ca for (ca, cb), t, _, p in small if p == fewest])))
    return CollectiveFit(alpha, beta, tuple(points))


def _relative_least_squares(rows) -> tuple[float, float]:
    """(alpha, beta) >= 0 minimising the relative errors of t = a·alpha + b·beta."""
    a = np.array([[ca / t, cb / t] for (ca, cb), t, _, _ in rows])
    y = np.ones(len(rows))
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
    return alpha, beta
