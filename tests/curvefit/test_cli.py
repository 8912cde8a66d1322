"""``paratrain curvefit`` through its own parser (the main CLI wires in ``add_parser``)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from paratrain.curvefit.cli import add_parser
from paratrain.errors import ConfigError, FormulaError


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="paratrain")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["curvefit", *argv])
    return args.handler(args)


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    x = np.linspace(50, 800, 14)
    y = 240 * (1 - np.exp(-5.5e-4 * x)) + 0.1 * rng.normal(size=x.size)
    path = tmp_path / "data.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False)
    return path


def test_json_has_the_documented_keys(csv, capsys):
    assert run("--formula", "b1*(1-exp(-b2*x))", "--data", str(csv), "--target", "y", "--p0", "500,1e-4",
               "--starts", "16", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out)[:8] == ["params", "stderr", "covariance", "rss", "r2", "n_iter", "converged", "starts_used"]
    assert list(out["params"]) == ["b1", "b2"] and out["converged"] is True and out["starts_used"] == 16


def test_table_shows_values_errors_and_t_intervals(csv, capsys):
    assert run("--formula", "b1*(1-exp(-b2*x))", "--data", str(csv), "--p0", "b1=500,b2=1e-4", "--starts", "8") == 0
    text = capsys.readouterr().out
    assert "parameter" in text and "std. error" in text and "95% CI low" in text
    assert "degrees of freedom 12" in text and "converged: yes" in text


def test_plot_writes_a_png(csv, tmp_path, capsys):
    png = tmp_path / "fit.png"
    assert run("--formula", "b1*(1-exp(-b2*x))", "--data", str(csv), "--p0", "500,1e-4", "--starts", "4",
               "--plot", str(png)) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_by_writes_csv_and_json_lines(tmp_path, capsys):
    x = np.tile(np.linspace(0, 5, 12), 3)
    frame = pd.DataFrame({"lot": np.repeat(["a", "b", "c"], 12), "x": x,
                          "y": np.repeat([1.0, 2.0, 3.0], 12) * np.exp(-0.4 * x)})
    data = tmp_path / "lots.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "fits.csv"
    assert run("--formula", "A*exp(-k*x)", "--data", str(data), "--group-by", "lot", "--p0", "A=1,k=1",
               "--out", str(out)) == 0
    table = pd.read_csv(out)
    assert list(table["lot"]) == ["a", "b", "c"] and table["A"].round(8).tolist() == [1.0, 2.0, 3.0]
    assert run("--formula", "A*exp(-k*x)", "--data", str(data), "--group-by", "lot", "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["lot"] for line in lines] == ["a", "b", "c"] and lines[2]["k"] == pytest.approx(0.4)


def test_family_auto_ranks_and_reports_json(tmp_path, capsys):
    x = np.linspace(1, 10, 50)
    data = tmp_path / "log.csv"
    pd.DataFrame({"dose": x, "y": 1 + 2 * np.log(x)}).to_csv(data, index=False)
    assert run("--family", "logarithmic", "--data", str(data), "--starts", "4", "--folds", "3", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best"] == "logarithmic" and out["fit"]["params"]["b"] == pytest.approx(2.0)
    assert out["ranking"][0]["rank"] == 1


@pytest.mark.parametrize("argv, error, message", [
    (["--family", "auto", "--formula", "a*x"], ConfigError, "exactly one of --formula"),
    (["--formula", "a*x", "--out", "o.csv"], ConfigError, "use it with --group-by"),
    (["--formula", "a*t"], FormulaError, "uses none of the data columns"),
])
def test_bad_flags_raise_one_line_errors(csv, argv, error, message):
    with pytest.raises(error, match=message):
        run("--data", str(csv), *argv)


def test_non_convergence_is_a_warning_on_stderr(csv, capsys):
    assert run("--formula", "b1*(1-exp(-b2*x))", "--data", str(csv), "--p0", "1,1", "--starts", "1",
               "--max-iter", "2", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["converged"] is False
    assert "paratrain: warning: the fit did not converge" in captured.err
