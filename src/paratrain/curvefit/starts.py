"""Where to start: p0 itself, then a scrambled Sobol design around it.

Nonlinear least squares has local minima and regions where the model
overflows, and users rarely know the scale of every parameter. So start 0 is
always p0 exactly, and the others spread around it:

* a parameter with finite bounds on both sides: uniform inside them (log-uniform
  when both bounds are positive and span more than two decades);
* otherwise: p0 * 10**u, with u uniform in [-s, s] and the span s growing with the
  start's rank (0.5, 1, 2, then 3 decades), so the first starts search near p0
  and the later ones across orders of magnitude (NIST's "start 1" points are up
  to ~2.5 decades from the solution, e.g. MGH10);
* one start in eight also flips the sign of some parameters (a wrong sign in p0
  cannot be fixed by scaling), unless a bound forbids it;
* a parameter whose p0 is 0 gets +-10**U(-3, 1).

A Sobol sequence covers the box far more evenly than random draws for the same
number of points, which matters with only a few hundred starts in up to ~10
dimensions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import qmc

__all__ = ["design_starts"]

_SPANS = (0.5, 1.0, 2.0, 3.0)


def design_starts(p0: torch.Tensor, n_starts: int, lower: torch.Tensor, upper: torch.Tensor,
                  seed: int = 0) -> torch.Tensor:
    """(n_starts, k) starting points; row 0 is p0.

    Example:
        >>> inf = torch.full((2,), math.inf, dtype=torch.float64)
        >>> s = design_starts(torch.tensor([1.0, 0.1], dtype=torch.float64), 8, -inf, inf)
        >>> s.shape, s[0].tolist()
        (torch.Size([8, 2]), [1.0, 0.1])
    """
    k = p0.numel()
    if n_starts <= 1:
        return p0.reshape(1, k).clone()
    rng = np.random.default_rng(seed)
    sobol = qmc.Sobol(d=k, scramble=True, seed=rng).random(_power_of_two(n_starts - 1))[: n_starts - 1]
    p = p0.numpy()
    lo, hi = lower.numpy(), upper.numpy()
    rank = np.arange(1, n_starts)
    span = np.asarray(_SPANS)[np.minimum((rank - 1) * len(_SPANS) // max(1, n_starts - 1), len(_SPANS) - 1)]
    out = np.empty((n_starts - 1, k))
    for j in range(k):
        u = sobol[:, j]
        if math.isfinite(lo[j]) and math.isfinite(hi[j]):
            if lo[j] > 0 and hi[j] / lo[j] > 100:
                out[:, j] = np.exp(np.log(lo[j]) + u * (np.log(hi[j]) - np.log(lo[j])))
            else:
                out[:, j] = lo[j] + u * (hi[j] - lo[j])
        elif p[j] != 0:
            out[:, j] = p[j] * 10.0 ** ((2 * u - 1) * span)
        else:
            sign = np.where(rng.random(n_starts - 1) < 0.5, -1.0, 1.0)
            out[:, j] = sign * 10.0 ** (-3 + 4 * u)
    flip = (rng.random((n_starts - 1, k)) < 0.5) & (rank[:, None] % 8 == 0)
    out = np.where(flip, -out, out)
    out = np.clip(out, lo, hi)
    return torch.cat([p0.reshape(1, k), torch.as_tensor(out, dtype=p0.dtype)], dim=0)


def _power_of_two(n: int) -> int:
    # Sobol points are balanced in blocks of 2**m; draw a full block and cut it.
    return 1 << max(0, math.ceil(math.log2(max(1, n))))
