"""Built-in nonlinear regression families, as formula strings with starting values.

Every family is a formula in a single variable ``x``: fitting one to data with
several columns, or to a column with another name, needs a formula written out
(e.g. ``b1*exp(b2*t)``). The text goes through the same safe parser as user
formulas, so a family is nothing more than a well-known formula.
"""

from __future__ import annotations

from paratrain.errors import ConfigError

__all__ = ["FAMILIES", "MAX_POLYNOMIAL_DEGREE", "family_formula"]

FAMILIES: tuple[str, ...] = ("polynomial", "exponential", "logarithmic", "power", "logistic")
"""Names accepted by :func:`family_formula`."""

MAX_POLYNOMIAL_DEGREE = 10
"""Above this, x^d in float32 overflows or drowns the low-order terms for any unscaled x."""

# Starting values chosen so that the first prediction is finite for unscaled
# data: a small exponential rate keeps exp(b2*x) from overflowing, and a power
# of 1 or a logistic slope of 1 start from a plain line or step.
_FIXED = {
    "exponential": ("b1*exp(b2*x)", {"b1": 1.0, "b2": 0.1}),
    "logarithmic": ("b1 + b2*log(x)", {"b1": 0.0, "b2": 1.0}),
    "power": ("b1*x^b2", {"b1": 1.0, "b2": 1.0}),
    "logistic": ("b1/(1 + exp(-b2*(x - b3)))", {"b1": 1.0, "b2": 1.0, "b3": 0.0}),
}


def family_formula(name: str, degree: int = 2) -> tuple[str, dict[str, float]]:
    """Return the formula text of a built-in family and default initial values.

    Args:
        name: One of :data:`FAMILIES`.
        degree: Degree of the ``polynomial`` family, 1 to 10; other families ignore it.

    Returns:
        ``(formula, init)``: formula text in the variable ``x`` with parameters
        ``b0, b1, ...``, and a starting value for every parameter.

    Raises:
        ConfigError: ``name`` is not a known family, or ``degree`` is out of range.

    Example:
        >>> family_formula("polynomial", degree=3)
        ('b0 + b1*x + b2*x^2 + b3*x^3', {'b0': 0.0, 'b1': 0.0, 'b2': 0.0, 'b3': 0.0})
        >>> family_formula("exponential")[0]
        'b1*exp(b2*x)'
    """
    if name == "polynomial":
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_POLYNOMIAL_DEGREE:
            raise ConfigError(f"degree={degree!r} must be an integer from 1 to {MAX_POLYNOMIAL_DEGREE} "
                              f"for the 'polynomial' family")
        terms = ["b0", "b1*x"] + [f"b{power}*x^{power}" for power in range(2, degree + 1)]
        # Zero start: the model is linear in its coefficients, so any start
        # converges, and zero keeps the first prediction finite for large x.
        return " + ".join(terms), {f"b{power}": 0.0 for power in range(degree + 1)}
    if name not in _FIXED:
        raise ConfigError(f"family={name!r} is not a built-in family; known families: {', '.join(FAMILIES)}")
    formula, init = _FIXED[name]
    return formula, dict(init)  # a copy, so callers may update it freely
