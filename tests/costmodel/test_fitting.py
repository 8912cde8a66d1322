"""alpha/beta least squares on synthetic timings."""

from __future__ import annotations

import numpy as np
import pytest

from paratrain.costmodel.fitting import coefficients, fit_alpha_beta


@pytest.mark.parametrize("collective", ["all_reduce", "all_gather", "broadcast", "p2p"])
def test_recovers_alpha_and_beta_from_noisy_timings(collective: str) -> None:
    rng = np.random.default_rng(0)
    alpha, beta = 80e-6, 1.2e-9
    points = []
    for p in (2, 4):
        for n in (1024 * 4 ** i for i in range(9)):
            a, b = coefficients(collective, p, n)
            points.append((p, n, (a * alpha + b * beta) * float(rng.uniform(0.97, 1.03))))
    fit = fit_alpha_beta(collective, points)
    assert fit.alpha_s == pytest.approx(alpha, rel=0.1)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=0.1)
    assert len(fit.points) == len(points)


def test_never_negative() -> None:
    # Timings that fall with size (noise on a busy machine) would give a negative beta: it is clamped.
    fit = fit_alpha_beta("p2p", [(2, 1024, 3e-4), (2, 2**20, 2e-4), (2, 2**22, 1e-4)])
    assert fit.alpha_s >= 0 and fit.beta_s_per_byte >= 0
    assert fit.alpha_s > 0


def test_one_point_is_latency_only() -> None:
    fit = fit_alpha_beta("p2p", [(2, 1024, 1e-4)])
    assert fit.alpha_s == pytest.approx(1e-4) and fit.beta_s_per_byte == 0.0


def test_unknown_collective_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown collective"):
        coefficients("reduce_scatter", 2, 1024)
