"""NIST StRD nonlinear regression: certified values to >= 6 digits from both starting points."""

from __future__ import annotations

import pytest

from paratrain.curvefit import curve_fit
from paratrain.curvefit.nist import PROBLEMS, lre

SUBSET = ["Misra1a", "Thurber", "MGH09", "Eckerle4", "Bennett5", "BoxBOD"]


@pytest.mark.parametrize("start", [1, 2])
@pytest.mark.parametrize("name", SUBSET)
def test_certified_values_from_both_starts(name, start):
    problem = PROBLEMS[name]
    fit = curve_fit(problem.formula, problem.frame(), target=problem.target, p0=problem.start(start))
    digits = {b: lre(fit.params[b], c) for b, c in problem.certified_params().items()}
    assert min(digits.values()) >= 6, digits
    assert fit.converged
    if problem.certified_stderr:
        for b, c in zip(problem.names, problem.certified_stderr):
            if c is not None:
                assert lre(fit.stderr[b], c) >= 5, (b, fit.stderr[b], c)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_embedded_data_reproduce_each_certified_optimum(name):
    # From the certified values, a polish must stay there: a transcription error in the
    # data or the formula would move the optimum and fail this.
    problem = PROBLEMS[name]
    fit = curve_fit(problem.formula, problem.frame(), target=problem.target, p0=problem.certified_params(),
                    starts=1)
    assert min(lre(fit.params[b], c) for b, c in problem.certified_params().items()) >= 7


def test_there_are_27_problems_with_data_of_nist_size():
    sizes = {name: len(p.frame()) for name, p in PROBLEMS.items()}
    assert len(sizes) == 27
    assert sizes["Hahn1"] == 236 and sizes["Bennett5"] == 154 and sizes["ENSO"] == 168 and sizes["Nelson"] == 128
