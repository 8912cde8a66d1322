"""Many small symmetric k x k systems at once: Cholesky factors, solves, damped steps.

Layout ("structure of arrays"): a batch of n matrices is a (k, k, n) array and a
batch of vectors (k, n), so that entry (i, j) of every matrix is one contiguous
(n,) vector. Factorizations unrolled over the k x k entries then run each op on
all n systems at once, on contiguous memory: ~k³/3 vector ops, against a LAPACK
call per matrix for ``np.linalg`` (which wins only below ~100 systems, and raises
when one of them is singular; here a failed system gets NaN and the rest go on).

Example:
    >>> A = np.array([[4.0, 2.0], [2.0, 3.0]])[:, :, None]      # one 2 x 2 system
    >>> newton_step(cholesky(A), np.array([[-8.0], [-7.0]])).ravel().round(12).tolist()
    [1.25, 1.5]
"""

from __future__ import annotations

import numpy as np

__all__ = ["cholesky", "forward", "newton_step", "damped_step", "pivots"]

SMALL_BATCH = 100
"""Below this many systems, np.linalg.solve (one LAPACK call per matrix) is faster."""


def cholesky(A: np.ndarray, damping: np.ndarray | None = None) -> list[list]:
    """Lower factor L, as k x k nested lists of (n,) vectors, of A + diag(damping) for every system.

    A system that is not numerically positive definite gets NaN entries (the caller's
    ``np.errstate`` silences the warnings).
    """
    k = A.shape[0]
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        pivot = A[j, j] if damping is None else A[j, j] + damping[j]
        for p in range(j):
            pivot = pivot - L[j][p] * L[j][p]
        L[j][j] = np.sqrt(np.where(pivot > 0, pivot, np.nan))
        for i in range(j + 1, k):
            entry = A[i, j]
            for p in range(j):
                entry = entry - L[i][p] * L[j][p]
            L[i][j] = entry / L[j][j]
    return L


def pivots(L: list) -> np.ndarray:
    """(k, n): the diagonal of every factor."""
    return np.stack([L[j][j] for j in range(len(L))])


def forward(L: list, b: np.ndarray) -> list:
    """z with L z = b (b is (k, n)), as a list of k (n,) vectors."""
    z = []
    for i in range(len(L)):
        value = b[i]
        for p in range(i):
            value = value - L[i][p] * z[p]
        z.append(value / L[i][i])
    return z


def newton_step(L: list, grad: np.ndarray) -> np.ndarray:
    """(k, n): d with L Lᵀ d = -grad."""
    z = forward(L, -grad)
    k = len(L)
    d = [None] * k
    for i in reversed(range(k)):
        value = z[i]
        for p in range(i + 1, k):
            value = value - L[p][i] * d[p]
        d[i] = value / L[i][i]
    return np.stack(d)


def damped_step(A: np.ndarray, grad: np.ndarray, damping: np.ndarray) -> np.ndarray:
    """(k, n): d with (A + diag(damping)) d = -grad, for a positive damping (so a definite system)."""
    k, n = grad.shape
    if n < SMALL_BATCH:
        matrices = A.transpose(2, 0, 1).copy()
        matrices.reshape(n, k * k)[:, ::k + 1] += damping.T  # the diagonals
        try:
            return np.linalg.solve(matrices, -grad.T[:, :, None])[:, :, 0].T
        except np.linalg.LinAlgError:  # an exactly singular system (overflowed entries): NaN rows below
            pass
    return newton_step(cholesky(A, damping), grad)
