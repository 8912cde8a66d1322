"""NaN and infinity on the command line: one line naming the field, exit status 1, no traceback."""

from __future__ import annotations

import pytest

from paratrain.cli import main
from tests.conftest import run_cli

FIELDS = {
    "--lr": "lr",
    "--momentum": "momentum",
    "--weight-decay": "weight_decay",
    "--gamma": "gamma",
    "--timeout": "timeout_s",
    "--val-fraction": "val_fraction",
    "--dropout": "dropout",
    "--min-delta": "min_delta",
}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("flag", list(FIELDS))
def test_a_non_finite_float_flag_is_one_line_naming_the_field(regression_csv, tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    code = main(["fit", "--data", str(regression_csv), "--target", "y", "--epochs", "1", "--quiet",
                 "--out", str(out), f"{flag}={value}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("paratrain: error: ")
    assert f"{FIELDS[flag]}={float(value)!r}" in err and "finite" in err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_formula_init_is_refused(regression_csv, tmp_path, capsys, value):
    code = main(["fit", "--data", str(regression_csv), "--target", "y", "--model", "formula",
                 "--formula", "b1*x0 + b0", "--init", f"b0=1,b1={value}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "init['b1']" in err and "finite" in err


def test_nan_learning_rate_in_a_real_process_has_no_traceback(regression_csv, tmp_path):
    done = run_cli("fit", "--data", str(regression_csv), "--target", "y", "--lr", "nan", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["paratrain: error: lr=nan must be a finite number > 0"]
