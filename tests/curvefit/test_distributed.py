"""Data-parallel fits (real worker processes) give the one-process answer."""

from __future__ import annotations

import numpy as np
import pytest

from paratrain.curvefit import curve_fit
from paratrain.errors import ConfigError


def test_two_workers_match_one_process():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 10, 3000)
    y = 3 * np.exp(-0.4 * x) + 1 + 0.01 * rng.normal(size=x.size)
    one = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=16)
    two = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=16, workers=2)
    for name in one.params:
        assert two.params[name] == pytest.approx(one.params[name], rel=1e-10)
        assert two.stderr[name] == pytest.approx(one.stderr[name], rel=1e-8)
    assert two.rss == pytest.approx(one.rss, rel=1e-12) and two.n_obs == 3000 and two.converged


def test_too_many_workers_for_the_rows():
    with pytest.raises(ConfigError, match="workers=8 needs at least 16 rows"):
        curve_fit("a*x", x=np.arange(5.0), y=np.arange(5.0), workers=8)
