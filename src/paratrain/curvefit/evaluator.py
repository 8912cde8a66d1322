"""Residuals, exact Jacobians and their triangular factor, for B parameter sets at once.

The solver only ever asks three things of the data, so that a data-parallel
evaluator (:mod:`paratrain.curvefit.distributed`) can answer them with one
collective each:

* ``rss(P)``: the weighted residual sum of squares of every parameter set;
* ``triangular(P)``: R~, the (k+1, k+1) triangular factor of ``[J | r]``
  (Jacobian and residuals side by side), from which Levenberg-Marquardt gets
  every step, its predicted reduction, the gradient and the covariance;
* ``totals()``: sums needed for R^2.

Why a QR factor instead of the normal equations JᵀJ: forming JᵀJ squares the
condition number, which costs NIST's ill-conditioned problems (MGH09, Thurber,
Bennett5) the digits we are after. R~ is built by streaming QR over row chunks
(``QR([R~ ; next chunk])``), so memory stays bounded for millions of rows and
shards combine exactly (TSQR).

Jacobians are exact: forward-mode autodiff (``torch.func.jvp``) along each of
the k parameter directions, vectorised with ``torch.func.vmap``. Forward mode
fits the shape of the problem: k (a handful) directions, n (many) outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.func import jvp, vmap

from paratrain.curvefit.problem import FitData, Model

__all__ = ["LocalEvaluator", "thread_limit"]

# Elements (parameter sets x rows x directions) per chunk: big enough that torch's
# per-op overhead is amortised, small enough to stay in cache-sized blocks and to
# bound memory (2**21 float64 = 16 MiB per intermediate).
CHUNK_ELEMENTS = 2**21


class LocalEvaluator:
    """The data of this process; answers the solver's questions with plain torch.

    Args:
        model: Formula and names.
        data: D data sets of m rows.
        chunk_elements: Work per chunk, see ``CHUNK_ELEMENTS``.
    """

    def __init__(self, model: Model, data: FitData, chunk_elements: int = CHUNK_ELEMENTS):
        self.model = model
        self.data = data
        self.chunk_elements = chunk_elements
        self.sqrt_w = data.w.sqrt()
        self.X = data.X
        # Unit weights everywhere (the common case): skip the masking arithmetic.
        self.unit = bool((data.w == 1).all())

    @property
    def k(self) -> int:
        return self.model.k

    def totals(self) -> torch.Tensor:
        """(D, 3): sum of w, w*y and w*y^2 per data set (for R^2)."""
        w, y = self.data.w, self.data.y
        return torch.stack([w.sum(1), (w * y).sum(1), (w * y * y).sum(1)], dim=1)

    def rss(self, P: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B,) residual sum of squares; inf where the model is not finite."""
        total = P.new_zeros(P.shape[0])
        for cols, y, sw in self._chunks(P.shape[0], index, directions=1):
            r = self._residual(self.model.predict(_columns(P), cols), y, sw)
            total += (r * r).sum(dim=1)
        return torch.where(torch.isfinite(total), total, torch.full_like(total, torch.inf))

    def triangular(self, P: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, k+1, k+1) upper-triangular R~ with [J | r] = Q R~ (NaN if not finite)."""
        B, k = P.shape
        R = None
        for cols, y, sw in self._chunks(B, index, directions=k + 1):
            f, jac = self._value_and_tangents(P, cols)
            r = self._residual(f, y, sw)
            # [J | r] written straight into one buffer: the Jacobian is the largest tensor
            # of a fit, and a cat would copy it once more.
            block = torch.empty(B, r.shape[1], k + 1, dtype=P.dtype)
            block[..., :k] = jac.permute(1, 2, 0)
            if not self.unit:
                # where, not multiply: rows of weight 0 (padding, held-out folds) may be NaN
                # (log of a padding zero) and NaN * 0 is NaN.
                w = sw.reshape(-1, sw.shape[-1], 1)  # (1 or B, rows, 1)
                block[..., :k] = torch.where(w > 0, block[..., :k] * w, torch.zeros((), dtype=P.dtype))
            block[..., k] = r
            if R is not None:
                block = torch.cat([R, block], dim=1)
            R = torch.linalg.qr(block, mode="r")[1]
        if R.shape[1] < k + 1:  # fewer rows than k+1 so far: pad R~ with zero rows
            R = torch.cat([R, R.new_zeros(B, k + 1 - R.shape[1], k + 1)], dim=1)
        return R

    def jacobian(self, P: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unweighted model values (B, m) and Jacobian (B, m, k), for tests and plots."""
        f, jac = self._value_and_tangents(P, self._columns_for(index, slice(None)))
        return f, jac.permute(1, 2, 0)

    def predict(self, P: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, m) model values at every row of each parameter set's data set."""
        cols = self._columns_for(index, slice(None))
        return torch.broadcast_to(self.model.predict(_columns(P), cols), (P.shape[0], self.X.shape[1]))

    # -- internals --------------------------------------------------------------

    def _value_and_tangents(self, P: torch.Tensor, cols) -> tuple[torch.Tensor, torch.Tensor]:
        """Model values (B, m) and derivatives (k, B, m): one forward-mode pass per direction, vmapped."""
        B, k = P.shape
        m = cols[0].shape[-1]
        params = tuple(_columns(P))
        eye = torch.eye(k, dtype=P.dtype).reshape(k, k, 1, 1).expand(k, k, B, 1)
        tangents = tuple(eye[:, j] for j in range(k))  # tangents[j][i] = d params[j] along direction i

        def model(*ps):
            return torch.broadcast_to(self.model.predict(ps, cols), (B, m))

        return vmap(lambda *ts: jvp(model, params, ts), out_dims=(None, 0))(*tangents)

    def _residual(self, f: torch.Tensor, y: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        if self.unit:
            return f - y
        return torch.where(sw > 0, sw * (f - y), torch.zeros((), dtype=f.dtype))

    def _chunks(self, B: int, index: torch.Tensor, directions: int) -> Iterator:
        m = self.X.shape[1]
        step = max(directions, self.chunk_elements // max(1, B * directions))
        for start in range(0, m, step):
            rows = slice(start, min(m, start + step))
            yield self._columns_for(index, rows), self._rows(self.data.y, index, rows), \
                self._rows(self.sqrt_w, index, rows)

    def _columns_for(self, index: torch.Tensor, rows) -> list[torch.Tensor]:
        # One data set: (m,) columns broadcast against (B, 1) parameters, no copy.
        if self.X.shape[0] == 1:
            return [self.X[0, rows, j] for j in range(self.X.shape[2])]
        return [self.X[index, rows, j] for j in range(self.X.shape[2])]

    def _rows(self, values: torch.Tensor, index: torch.Tensor, rows) -> torch.Tensor:
        return values[0, rows] if values.shape[0] == 1 else values[index, rows]


def _columns(P: torch.Tensor) -> list[torch.Tensor]:
    return [P[:, j:j + 1] for j in range(P.shape[1])]


@contextlib.contextmanager
def thread_limit(threads: int | None = None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (default 1), restoring the caller's setting after.

    Why one: the solver issues many small and medium tensor ops, and OpenMP's barrier
    after each one waits for the slowest thread. On a machine whose other cores are
    busy that wait is a scheduler time slice: measured here, exp over 8e4 doubles ran
    25x slower with 2 threads than with 1, and a 2-million-row fit took 181 s with 2
    threads against 24 s with ``workers=2`` (one thread each). Scale big data with
    ``workers``; pass ``threads`` only on a dedicated machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)
