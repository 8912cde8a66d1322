"""The groups' data as NumPy arrays, and their residuals, normal equations and R~ at given parameters.

What :mod:`~paratrain.curvefit.fastlm` iterates on. Parameters and per-fit
results are laid out "structure of arrays" (see :mod:`~paratrain.curvefit.batched_linalg`):
P is (k, n), JᵀJ (k, k, n), Jᵀr (k, n), so that each per-fit quantity is a
contiguous vector over the fits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from paratrain.curvefit.symbolic import ONE, CompiledFormula, Workspace, dense

__all__ = ["GroupArrays", "ArrayEvaluator"]


@dataclass(frozen=True)
class GroupArrays:
    """G data sets padded to m rows.

    Attributes:
        columns: The formula's variables, each (G, m).
        y: (G, m) target values.
        sqrt_w: (G, m) square roots of the row weights (0: padding), or None when every weight is 1.
    """

    columns: tuple[np.ndarray, ...]
    y: np.ndarray
    sqrt_w: np.ndarray | None

    def take(self, rows: np.ndarray) -> GroupArrays:
        """The data sets ``rows`` (indices or a mask), copied into contiguous arrays."""
        return GroupArrays(tuple(c[rows] for c in self.columns), self.y[rows],
                           None if self.sqrt_w is None else self.sqrt_w[rows])


class ArrayEvaluator:
    """Residuals, normal equations and R~ of the data sets, computed with NumPy.

    Also answers the torch interface of :class:`~paratrain.curvefit.evaluator.LocalEvaluator`
    (``rss``, ``triangular``, ``totals``: (B, k) parameters), so that the general path's
    QR-based polish runs on it.
    """

    def __init__(self, program: CompiledFormula, data: GroupArrays):
        self.program = program
        self.data = data
        self.k = program.k
        self.workspace = _scratch(data.y.size)

    # -- NumPy interface (the fast iteration; P is (k, n)) -------------------------------

    def residuals(self, P: np.ndarray, data: GroupArrays, derivatives: bool = True) -> tuple[np.ndarray, list]:
        """Weighted residuals (n, m) and the Jacobian's columns at P (k, n) on ``data``.

        Each column is a (factor, array) pair (see :mod:`~paratrain.curvefit.symbolic`):
        ``factor`` is constant along the rows and ``array`` (n, m), or None for 1. The arrays
        live in this evaluator's workspace: valid until the next call.
        """
        params = [P[j][:, None] for j in range(P.shape[0])]
        shape = data.y.shape
        ws = self.workspace
        ws.start(shape)
        # Trial points may overflow or leave the model's domain: that is an answer (inf RSS), not an error.
        with np.errstate(all="ignore"):
            f, tangents = self.program.evaluate(params, data.columns, derivatives, ws)
            r = np.subtract(f, data.y, out=ws.next())
            sw = data.sqrt_w
            if sw is None:
                return r, tangents
            # Padding rows become exact zeros: they may hold NaN (log of a padding zero), and NaN * 0 is NaN.
            padding = sw == 0
            weighted = []
            for quantity in [(ONE, r), *tangents]:
                out = np.multiply(sw, dense(quantity, ws), out=ws.next())
                out[padding] = 0.0
                weighted.append(out)
            return weighted[0], [(ONE, t) for t in weighted[1:]]

    def normal_equations(self, P: np.ndarray, data: GroupArrays, rounding: bool = False) -> tuple:
        """RSS (n,), JᵀJ (k, k, n) and Jᵀr (k, n) at P on ``data``; the RSS is inf where not finite.

        The dot products run on the columns' arrays; their row-constant factors multiply the
        (n,) results. With ``rounding``, also a bound (k, n) on the rounding error of each
        entry of Jᵀr (see :func:`_rounding_bound`).
        """
        r, J = self.residuals(P, data)
        k, n = P.shape
        ones = np.ones(r.shape[1])
        factors = [None if f is ONE else np.reshape(f, -1) for f, _ in J]
        A = np.empty((k, k, n))
        g = np.empty((k, n))
        with np.errstate(all="ignore"):
            for i in range(k):
                g[i] = _scaled(_inner(J[i][1], r, ones), factors[i])
                for j in range(i + 1):
                    A[i, j] = A[j, i] = _scaled(_scaled(_inner(J[i][1], J[j][1], ones), factors[i]), factors[j])
            rss = _dot(r, r)
        rss[~np.isfinite(rss)] = np.inf
        if rounding:
            return rss, A, g, _rounding_bound(A, rss, data)
        return rss, A, g

    # -- torch interface (the QR polish for ill-conditioned fits; P is (B, k)) ------------

    def rss(self, P: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B,) RSS of parameter set b on data set ``index[b]``; inf where not finite."""
        r, _ = self.residuals(P.numpy().T, self.data.take(index.numpy()), derivatives=False)
        with np.errstate(all="ignore"):
            total = _dot(r, r)
        total[~np.isfinite(total)] = np.inf
        return torch.from_numpy(total)

    def triangular(self, P: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, k+1, k+1) R~ with [J | r] = Q R~, by Householder QR (NaN where not finite)."""
        r, J = self.residuals(P.numpy().T, self.data.take(index.numpy()))
        block = torch.from_numpy(np.stack(np.broadcast_arrays(*[dense(t) for t in J], r), axis=2))
        R = torch.linalg.qr(block, mode="r")[1]
        k = self.k
        if R.shape[1] < k + 1:  # fewer rows than k+1: pad R~ with zero rows, as LocalEvaluator does
            R = torch.cat([R, R.new_zeros(R.shape[0], k + 1 - R.shape[1], k + 1)], dim=1)
        return R

    def totals(self) -> torch.Tensor:
        """(G, 3): sum of w, w*y and w*y^2 per data set (for R^2)."""
        y, sw = self.data.y, self.data.sqrt_w
        if sw is None:
            sums = (np.full(y.shape[0], float(y.shape[1])), _dot(y, np.ones(y.shape[1])), _dot(y, y))
        else:
            w = sw * sw
            sums = (_dot(sw, sw), _dot(w, y), _dot(w * y, y))
        return torch.from_numpy(np.stack(sums, axis=1))


SCRATCH_ELEMENTS = 2**17
"""Data up to this many elements (1 MiB per buffer) evaluate in a workspace kept between fits.

Small fits are latency-bound: a fresh workspace per ``fit_groups`` call would fault its
pages in every time (~1.5 ms of 15 for 1,000 groups x 50 rows). Larger data get a workspace
of their own, freed with the evaluator, so a thread keeps at most one buffer per
intermediate of its formula, 1 MiB each."""

_local = threading.local()


def _scratch(elements: int) -> Workspace:
    """This thread's kept workspace for small data, or a new one (threads must not share buffers)."""
    if elements > SCRATCH_ELEMENTS:
        return Workspace()
    if not hasattr(_local, "workspace"):
        _local.workspace = Workspace()
    return _local.workspace


def _einsum_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


# Row-wise dot products of two (n, m) arrays in one pass: the gufunc vecdot (NumPy >= 2) has
# about half einsum's per-call cost, which adds up over ~10 products per step.
_dot = getattr(np, "vecdot", _einsum_dot)


def _inner(a: np.ndarray | None, b: np.ndarray | None, ones: np.ndarray):
    """Row-wise dot products of (n, m) arrays, where None stands for a row of ones."""
    if a is None and b is None:
        return float(ones.size)
    # A row sum as a dot product with ones: vecdot is ~2x faster than sum(axis=1), and unlike
    # `b @ ones` it does not call a BLAS gemv, which OpenBLAS may spread over busy cores.
    return _dot(ones if a is None else a, ones if b is None else b)


def _scaled(values, factor: np.ndarray | None):
    return values if factor is None else values * factor


def _rounding_bound(A: np.ndarray, rss: np.ndarray, data: GroupArrays) -> np.ndarray:
    """A bound (k, n) on the rounding error of each entry of Jᵀr; a gradient within it is zero in float64.

    Two sources: the dot product's accumulation (<= m eps sum|J_j||r|) and the residuals'
    own error (a few eps |f| per row, |f| <= |r| + |y|). Cauchy-Schwarz bounds both sums
    by column norms (sum|J_j||r| <= |J_j| |r|), which JᵀJ and the RSS already hold.
    """
    m = data.y.shape[1]
    y = data.y if data.sqrt_w is None else data.sqrt_w * data.y
    y_norm = np.sqrt(_dot(y, y))
    k = A.shape[0]
    with np.errstate(invalid="ignore"):
        column_norms = np.sqrt(A[np.arange(k), np.arange(k)])
        return np.finfo(np.float64).eps * column_norms * ((m + 4) * np.sqrt(rss) + 4 * y_norm)
