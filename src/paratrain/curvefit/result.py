"""What a fit returns: values, standard errors, covariance and how the search went."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = ["CurveFitResult"]


@dataclass
class CurveFitResult:
    """The best fit found.

    Attributes:
        params: Parameter name -> value, in order of first appearance in the formula.
        stderr: Parameter name -> standard error, sqrt(diag(covariance)).
        covariance: (k, k) ``inv(JᵀJ) * rss / (n - k)``, as scipy's curve_fit.
        rss: Residual sum of squares (weighted when sigma was given).
        r2: Coefficient of determination, 1 - rss / total sum of squares.
        n_iter: Levenberg-Marquardt iterations of the winning start (exploration + polish).
        converged: Whether a convergence test (ftol, xtol or gtol) stopped the polish.
        starts_used: Number of starting points explored.
        n_obs: Rows fitted.
        formula: The formula text.
        target: The response (a column or an expression of columns).
        message: Why the solver stopped.
    """

    params: dict[str, float]
    stderr: dict[str, float]
    covariance: np.ndarray
    rss: float
    r2: float
    n_iter: int
    converged: bool
    starts_used: int
    n_obs: int
    formula: str = ""
    target: str = ""
    message: str = ""
    condition: float = field(default=float("nan"), repr=False)

    @property
    def dof(self) -> int:
        """Residual degrees of freedom, n - k."""
        return self.n_obs - len(self.params)

    def confidence_intervals(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Wald intervals value +- t(dof) * stderr (t-distribution with n - k dof).

        Example:
            >>> r = CurveFitResult({"a": 2.0}, {"a": 0.1}, np.eye(1) * 0.01, 1.0, 0.9, 3, True, 1, 11)
            >>> [round(v, 3) for v in r.confidence_intervals()["a"]]
            [1.777, 2.223]
        """
        t = float(stats.t.ppf(0.5 + level / 2, self.dof)) if self.dof > 0 else float("nan")
        return {name: (value - t * self.stderr[name], value + t * self.stderr[name])
                for name, value in self.params.items()}

    def to_dict(self) -> dict:
        """A JSON-ready dict (non-finite numbers become None)."""
        return {
            "params": {k: _num(v) for k, v in self.params.items()},
            "stderr": {k: _num(v) for k, v in self.stderr.items()},
            "covariance": [[_num(v) for v in row] for row in np.asarray(self.covariance).tolist()],
            "rss": _num(self.rss),
            "r2": _num(self.r2),
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
            "starts_used": int(self.starts_used),
            "n_obs": int(self.n_obs),
            "formula": self.formula,
            "target": self.target,
            "message": self.message,
        }


def _num(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
