"""`paratrain fit` and `paratrain curvefit` with random argument lists and odd tables: exit 0,
or a non-zero exit with a one-line error; never a traceback or a NaN model.

Most examples call ``main()`` in this process (fast); a few run the real command in a
subprocess, as a user would.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from paratrain.cli import main
from tests.conftest import regression_frame, run_cli
from tests.property.formula_trees import render, renamed, trees
from tests.property.helpers import CLI_EXAMPLES, THOROUGH

TABLES = {
    "plain.csv": regression_frame(rows=40, features=4).to_csv(index=False),
    "bom.csv": "\ufeff" + regression_frame(rows=40, features=4).to_csv(index=False),
    "semicolon.csv": regression_frame(rows=40, features=4).to_csv(index=False, sep=";"),
    "tab.tsv": regression_frame(rows=40, features=4).to_csv(index=False, sep="\t"),
    "duplicate.csv": "x0,x0,y\n1,2,3\n4,5,6\n7,8,9\n",
    "text_in_numbers.csv": "x0,x1,y\n1,2,3\n4,oops,6\n7,8,9\n1,1,1\n",
    "huge.csv": "x0,x1,y\n1e308,1,1\n-1e308,2,2\n1e308,3,3\n0,4,4\n",
    "empty.csv": "",
    "header_only.csv": "x0,x1,y\n",
    "unicode.csv": "温度,é,y\n1,2,3\n4,5,6\n7,8,9\n2,2,2\n",
    "newline_header.csv": '"x\n0",x1,y\n1,2,3\n4,5,6\n7,8,9\n',
}

COLUMNS = {"x": "x0", "t": "x1"}  # the trees' variables as columns of the tables
_NUMBER_TEXT = st.one_of(st.sampled_from(["0", "1", "-1", "2", "0.5", "1e-3", "nan", "inf", "-inf", "1e400",
                                          "abc", "", "3.5"]),
                         st.integers(-3, 5).map(str))
# Flags of `fit` that need no process group and write nowhere but --out.
FIT_FLAGS = {
    "--target": st.sampled_from(["y", "x0", "nope", "", "温度"]),
    "--task": st.sampled_from(["auto", "regression", "classification", "bogus"]),
    "--drop": st.sampled_from(["x1", "x0,x1", "nope", "y", ","]),
    "--impute": st.sampled_from(["mean", "median", "zero"]),
    "--max-categories": _NUMBER_TEXT,
    "--val-fraction": _NUMBER_TEXT,
    "--model": st.sampled_from(["mlp", "formula", "tree"]),
    "--hidden": st.sampled_from(["8", "8,8", "0", "-1", "a", "", "8,,8", "1e3"]),
    "--activation": st.sampled_from(["relu", "tanh", "nope"]),
    "--dropout": _NUMBER_TEXT,
    "--formula": st.one_of(trees.map(lambda tree: render(renamed(tree, COLUMNS))),
                           st.sampled_from(["__import__('os').system('touch PWNED')",
                                                                "lambda: 1", "x0.__class__", "b1*x0"])),
    "--family": st.sampled_from(["polynomial", "exponential", "nope"]),
    "--init": st.sampled_from(["a=1", "a=nan", "b1=1,b2=x", "=", "a"]),
    "--optimizer": st.sampled_from(["adam", "sgd", "lion"]),
    "--lr": _NUMBER_TEXT,
    "--schedule": st.sampled_from(["none", "cosine", "step", "onecycle"]),
    "--epochs": st.sampled_from(["1", "2", "0", "-1", "x"]),
    "--batch-size": st.sampled_from(["8", "1", "0", "100000"]),
    "--seed": st.sampled_from(["0", "1", "-1"]),
    "--strategy": st.sampled_from(["single", "nope", "ddp:3", ""]),
    "--threads": st.sampled_from(["1", "0"]),
}

_counter = itertools.count()


def _argument_list(draw_flags) -> list[str]:
    args = []
    for flag, value in draw_flags:
        args += [flag, value] if value is not None else [flag]
    return args


fit_arguments = st.dictionaries(st.sampled_from(sorted(FIT_FLAGS)), st.none(), max_size=5).flatmap(
    lambda chosen: st.fixed_dictionaries({flag: FIT_FLAGS[flag] for flag in chosen}))


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    for name, text in TABLES.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def _check_outcome(code: int, err: str, out_dir: Path, arguments: dict) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code == 1:
        lines = [line for line in err.splitlines() if line.startswith("paratrain: error:")]
        assert len(lines) == 1, err
    if code == 2:  # argparse: the usage and one error line
        assert err.strip().splitlines()[-1].startswith("paratrain"), err
    if code == 0:
        summary = json.loads((out_dir / "summary.json").read_text())
        # The losses, not val_r2: R^2 is undefined for a validation set of one row. Strict
        # JSON writes a non-finite number as null, so a loss must be present and a number.
        assert isinstance(summary.get("train_loss"), float), f"a NaN model was saved: {summary}"
        losses = [summary[k] for k in ("train_loss", "val_loss", "best_val_loss") if k in summary]
        assert all(isinstance(v, float) and math.isfinite(v) for v in losses), f"a NaN model was saved: {summary}"


@settings(max_examples=300 if THOROUGH else 60, suppress_health_check=list(HealthCheck))
@given(table=st.sampled_from(sorted(TABLES)), arguments=fit_arguments)
@example(table="semicolon.csv", arguments={})
@example(table="duplicate.csv", arguments={"--target": "y"})
@example(table="huge.csv", arguments={})
@example(table="newline_header.csv", arguments={"--target": "nope"})
@example(table="plain.csv", arguments={"--model": "formula", "--formula": "__import__('os').system('touch PWNED')"})
def test_fit_arguments_in_process(tables, tmp_path, capsys, monkeypatch, table, arguments):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / f"run{next(_counter)}"
    argv = ["fit", "--data", str(tables / table), "--epochs", "1", "--quiet", "--out", str(out_dir)]
    if "--target" not in arguments:
        argv += ["--target", "y"]
    argv += _argument_list(arguments.items())
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse refuses the argument list
        code = stop.code
    err = capsys.readouterr().err
    _check_outcome(code, err, out_dir, arguments)
    assert not (tmp_path / "PWNED").exists()


@settings(max_examples=CLI_EXAMPLES, suppress_health_check=list(HealthCheck))
@given(table=st.sampled_from(sorted(TABLES)), arguments=fit_arguments)
@example(table="bom.csv", arguments={"--model": "formula", "--formula": "lambda: 1"})
@pytest.mark.timeout(600)
def test_fit_arguments_as_a_command(tables, tmp_path, table, arguments):
    out_dir = tmp_path / f"cmd{next(_counter)}"
    argv = ["fit", "--data", str(tables / table), "--epochs", "1", "--quiet", "--out", str(out_dir),
            *([] if "--target" in arguments else ["--target", "y"]), *_argument_list(arguments.items())]
    done = run_cli(*argv, cwd=tmp_path, timeout=120)
    _check_outcome(done.returncode, done.stderr, out_dir, arguments)
    assert not (tmp_path / "PWNED").exists()


CURVEFIT_FLAGS = {
    "--target": st.sampled_from(["y", "log(y)", "nope", "__import__('os')"]),
    "--p0": st.sampled_from(["1,1", "a=1", "nan", "x", "a=1e400"]),
    "--bounds": st.sampled_from(["a=0:10", "a=10:0", "a=x:y", "b=nan:1"]),
    "--starts": st.sampled_from(["1", "4", "0", "-2"]),
    "--max-iter": st.sampled_from(["5", "0"]),
}
curvefit_arguments = st.dictionaries(st.sampled_from(sorted(CURVEFIT_FLAGS)), st.none(), max_size=3).flatmap(
    lambda chosen: st.fixed_dictionaries({flag: CURVEFIT_FLAGS[flag] for flag in chosen}))


@settings(max_examples=200 if THOROUGH else 40, suppress_health_check=list(HealthCheck))
@given(table=st.sampled_from(sorted(TABLES)), formula=st.one_of(trees.map(lambda tree: render(renamed(tree, COLUMNS))),
                                                              st.sampled_from(["a*x0 + b", "exec('1')", "a.b"])),
       arguments=curvefit_arguments)
def test_curvefit_arguments_in_process(tables, tmp_path, capsys, monkeypatch, table, formula, arguments):
    monkeypatch.chdir(tmp_path)
    argv = ["curvefit", "--data", str(tables / table), "--formula", formula, "--json",
            *_argument_list(arguments.items())]
    if "--starts" not in arguments:
        argv += ["--starts", "2"]
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    assert code in (0, 1, 2), (code, captured.err)
    if code == 1:
        assert len([l for l in captured.err.splitlines() if l.startswith("paratrain: error:")]) == 1, captured.err
    if code == 0:
        result = json.loads(captured.out)
        assert all(math.isfinite(v) for v in result["params"].values()), result


# --- cases the value-hardening branch fixed (found here first; kept as plain tests) --------


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_fit_refuses_a_non_finite_learning_rate(tables, tmp_path, capsys, value):
    code = main(["fit", "--data", str(tables / "plain.csv"), "--target", "y", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run"), "--lr", value])
    assert code == 1 and "lr" in capsys.readouterr().err


def test_fit_does_not_save_a_diverged_model(tables, tmp_path, capsys):
    code = main(["fit", "--data", str(tables / "plain.csv"), "--target", "y", "--epochs", "2", "--quiet",
                 "--out", str(tmp_path / "run"), "--optimizer", "sgd", "--lr", "1e30"])
    if code == 0:
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert math.isfinite(summary["train_loss"]), summary
    else:
        assert code == 1


def test_fit_refuses_a_formula_that_is_nan_on_the_data(tables, tmp_path, capsys):
    code = main(["fit", "--data", str(tables / "plain.csv"), "--target", "y", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run"), "--model", "formula", "--formula", "log(a - 100)*x0"])
    assert code == 1, "a NaN model was saved"
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.fixture(scope="module")
def trained_run(tables, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["fit", "--data", str(tables / "plain.csv"), "--target", "y", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0
    return run


@settings(max_examples=150 if THOROUGH else 30, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(st.tuples(*[st.sampled_from(["0.5", "-1", "1e300", "1e39", "", "nan", "abc", "1e-310",
                                                   "inf", "0"])] * 4), min_size=0, max_size=4),
       header=st.sampled_from(["x0,x1,x2,x3", "x0,x1,x2", "x0,x1,x2,x3,y", "x3,x2,x1,x0", "x0,x0,x2,x3"]))
@example(rows=[("1e39", "0", "0", "0")], header="x0,x1,x2,x3")
def test_predict_on_odd_tables(trained_run, tmp_path, capsys, rows, header):
    data = tmp_path / f"new{next(_counter)}.csv"
    width = len(header.split(","))
    data.write_text(header + "\n" + "".join(",".join((row * 2)[:width]) + "\n" for row in rows))
    out = tmp_path / "predictions.csv"
    out.unlink(missing_ok=True)
    code = main(["predict", "--run", str(trained_run), "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 1), (code, err)
    if code == 0:
        predictions = pd.read_csv(out)["prediction"].to_numpy(dtype=float)
        assert np.isfinite(predictions).all(), predictions
    else:
        assert len([l for l in err.splitlines() if l.startswith("paratrain: error:")]) == 1, err
