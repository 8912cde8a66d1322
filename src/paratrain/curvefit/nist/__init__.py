"""NIST StRD nonlinear regression problems, embedded (no network needed)."""

from paratrain.curvefit.nist.problems import PROBLEMS, NistProblem, load

__all__ = ["PROBLEMS", "NistProblem", "load", "lre"]


def lre(estimate: float, certified: float) -> float:
    """Log relative error: the number of correct significant digits (capped at 15)."""
    import math

    if estimate == certified:
        return 15.0
    if not math.isfinite(estimate):
        return 0.0
    error = abs(estimate - certified) / abs(certified)
    return max(0.0, min(15.0, -math.log10(error)))
