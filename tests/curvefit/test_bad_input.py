"""Every mistake a user can make gets one clear message naming what to fix."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from paratrain.curvefit import CurveFitWarning, IdentifiabilityError, curve_fit, fit_groups
from paratrain.errors import ConfigError, DataError, FormulaError, ParatrainError


@pytest.fixture
def frame():
    x = np.linspace(0, 5, 20)
    return pd.DataFrame({"x": x, "y": 2 * np.exp(-0.5 * x), "z": x ** 2})


def test_formula_naming_no_column_lists_the_columns(frame):
    with pytest.raises(FormulaError, match=r"uses none of the data columns \(x, y, z\)"):
        curve_fit("a*exp(-b*t)", frame, target="y")


def test_p0_naming_an_unknown_parameter(frame):
    with pytest.raises(ConfigError, match=r"p0 names \['c'\].*parameters are a, b"):
        curve_fit("a*exp(-b*x)", frame, target="y", p0={"a": 1, "c": 2})


def test_p0_with_the_wrong_length(frame):
    with pytest.raises(ConfigError, match="p0 has 3 values but the formula has 2 parameters"):
        curve_fit("a*exp(-b*x)", frame, target="y", p0=[1, 2, 3])


def test_more_parameters_than_rows():
    with pytest.raises(DataError, match="3 data rows but 4 parameters"):
        curve_fit("a + b*x + c*x^2 + d*x^3", x=[1.0, 2, 3], y=[1.0, 2, 3])


def test_nan_names_column_and_row(frame):
    frame.loc[6, "x"] = np.nan
    with pytest.raises(DataError, match=r"column 'x' has a missing value \(NaN\) at row 7"):
        curve_fit("a*exp(-b*x)", frame, target="y")
    frame.loc[6, "x"] = 1.0
    frame.loc[3, "y"] = np.nan
    with pytest.raises(DataError, match=r"column 'y' has a missing value \(NaN\) at row 4"):
        curve_fit("a*exp(-b*x)", frame, target="y")


def test_unknown_target(frame):
    with pytest.raises(DataError, match="target 'w' is not a column"):
        curve_fit("a*exp(-b*x)", frame, target="w")


def test_target_used_in_the_formula(frame):
    with pytest.raises(FormulaError, match="uses the target column"):
        curve_fit("a*y + b*x", frame, target="y")


def test_unidentifiable_parameters_are_named(frame):
    with pytest.raises(IdentifiabilityError, match=r"b1 and b2 cannot be separated.*rank 1 of 2"):
        curve_fit("b1*b2*x", frame, target="z", starts=8)
    with pytest.warns(CurveFitWarning, match="cannot be identified"):
        fit = curve_fit("b1*b2*x", frame, target="z", starts=8, on_unidentifiable="warn")
    assert np.isinf(fit.stderr["b1"])


def test_parameter_without_effect_is_named(frame):
    with pytest.raises(IdentifiabilityError, match="c has no effect"):
        curve_fit("a*x + 0*c", frame, target="y", starts=2)


def test_non_convergence_warns_and_says_so(frame):
    with pytest.warns(CurveFitWarning, match="did not converge"):
        fit = curve_fit("a*exp(-b*x)", frame, target="y", p0=[10, 5], starts=1, max_iter=2)
    assert fit.converged is False
    assert fit.to_dict()["converged"] is False


def test_model_never_finite(frame):
    with pytest.raises(DataError, match="not finite at any of the 4 starting points"):
        curve_fit("sqrt(-a*a - 1)*x", frame, target="y", starts=4)


@pytest.mark.parametrize("bounds, message", [
    ("b=0", "must look like NAME=LOW:HIGH"),
    ("q=0:1", "bounds name 'q', which is not a parameter"),
    ("b=2:1", "low < high must hold"),
    ("b=0:0.1", r"p0 is outside the bounds: b=1 not in \[0, 0.1\]"),
])
def test_bad_bounds(frame, bounds, message):
    with pytest.raises(ConfigError, match=message):
        curve_fit("a*exp(-b*x)", frame, target="y", bounds=bounds)


def test_bad_settings(frame):
    with pytest.raises(ConfigError, match="starts=0 must be a whole number >= 1"):
        curve_fit("a*exp(-b*x)", frame, target="y", starts=0)
    with pytest.raises(ConfigError, match="either data .* or x and y"):
        curve_fit("a*exp(-b*x)", frame, x=[1, 2], y=[1, 2])


def test_group_column_problems(frame):
    with pytest.raises(DataError, match="group_by column 'g' is not in the data"):
        fit_groups("a*exp(-b*x)", frame, group_by="g")
    frame["g"] = ["u"] * 10 + [None] * 10
    with pytest.raises(DataError, match="group_by column 'g' is missing at row 11"):
        fit_groups("a*exp(-b*x)", frame, group_by="g")


def test_every_message_is_a_paratrain_error(frame):
    # The CLI prints ParatrainError as one line; anything else would be a traceback.
    for call in (lambda: curve_fit("a*(", frame, target="y"),
                 lambda: curve_fit("a*exp(-b*x)", frame, target="y", p0="a=one")):
        with pytest.raises(ParatrainError):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call()
