"""``fit_families`` picks the family the data came from."""

from __future__ import annotations

import numpy as np
import pytest

from paratrain.curvefit import fit_families
from paratrain.curvefit.families import FAMILIES
from paratrain.errors import ConfigError

X = np.linspace(0.5, 10, 70)
CASES = {
    "logistic": 1 + 4 / (1 + np.exp(-1.5 * (X - 5))),
    "gaussian": 1 + 3 * np.exp(-(X - 4) ** 2 / (2 * 0.8 ** 2)),
    "logarithmic": 2 + 3 * np.log(X),
    "exponential": 2 * np.exp(-0.4 * X) + 1,
}


@pytest.mark.parametrize("truth", sorted(CASES))
def test_picks_the_generating_family(truth):
    y = CASES[truth] + 0.02 * np.random.default_rng(5).normal(size=X.size)
    # A shortlist keeps the test fast; the ranking logic is the same for all 11 families.
    names = sorted({truth, "linear", "poly2", "poly3", "rational"})
    report = fit_families(x=X, y=y, families=names, starts=8, folds=4)
    assert report.best == truth
    assert list(report.table["rank"]) == list(range(1, len(names) + 1))
    assert set(report.table.columns) >= {"family", "cv_mse", "aic", "bic", "formula"}
    assert report.fits[truth].r2 > 0.99


def test_all_families_are_defined_once():
    names = [family.name for family in FAMILIES]
    assert len(names) == len(set(names)) == 11
    assert {"linear", "poly2", "poly5", "exponential", "logarithmic", "power", "logistic", "gaussian",
            "rational"} <= set(names)


def test_families_not_defined_for_the_data_say_why():
    report = fit_families(x=np.linspace(-2, 2, 30), y=np.linspace(-2, 2, 30) * 2, families=["linear", "power"],
                          starts=2, folds=3)
    assert report.best == "linear"
    power = report.table.set_index("family").loc["power"]
    assert "must be > 0" in power["note"]


def test_unknown_family_lists_known_ones():
    with pytest.raises(ConfigError, match="known families: linear, poly2"):
        fit_families(x=X, y=X, families=["cubic-spline"])
