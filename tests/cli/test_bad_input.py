"""Bad input: one clear line, exit status 1, no traceback, and earlier runs untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paratrain.cli import main
from tests.conftest import regression_frame, run_cli


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path, regression_csv, monkeypatch):
    """A folder with data and one finished run under runs/, as a user would have."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--data", str(regression_csv), "--target", "y", "--epochs", "1", "--quiet",
                 "--out", "runs/earlier"]) == 0
    return tmp_path


def _bad_files(root: Path) -> dict[str, Path]:
    frame = regression_frame(rows=60)
    ids = frame.copy()
    ids["user_id"] = [f"user-{i}" for i in range(len(ids))]
    nan = frame.copy()
    nan.loc[7, "x2"] = np.nan
    inf = frame.copy()
    inf.loc[11, "x1"] = np.inf
    tiny = frame.head(1)
    paths = {}
    for name, table in {"ids": ids, "nan": nan, "inf": inf, "tiny": tiny}.items():
        paths[name] = root / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    return paths


CASES = {
    "missing file": (["--data", "nope.csv", "--target", "y"], ["nope.csv", "does not exist"]),
    "unknown target": (["--data", "{data}", "--target", "price"], ["price", "x0"]),
    "id column": (["--data", "{ids}", "--target", "y"], ["user_id", "--drop"]),
    "nan": (["--data", "{nan}", "--target", "y"], ["x2", "row 8", "--impute"]),
    "inf": (["--data", "{inf}", "--target", "y"], ["x1", "row 12", "infinite"]),
    "fewer rows than workers": (["--data", "{tiny}", "--target", "y", "--strategy", "ddp", "--workers", "2",
                                 "--val-fraction", "0"], ["workers=2"]),
    "negative lr": (["--data", "{data}", "--target", "y", "--lr", "-0.1"], ["lr=-0.1", "> 0"]),
    "zero workers": (["--data", "{data}", "--target", "y", "--workers", "0"], ["workers=0", ">= 1"]),
    "unknown strategy": (["--data", "{data}", "--target", "y", "--strategy", "magic"], ["magic", "single", "ddp"]),
    "existing out dir": (["--data", "{data}", "--target", "y", "--out", "runs/earlier"], ["runs/earlier", "--resume"]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, workspace, regression_csv, capsys):
    args, fragments = CASES[case]
    paths = {"data": regression_csv, **_bad_files(workspace)}
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    before = _snapshot(workspace / "runs")
    capsys.readouterr()
    status = main(["fit", *args, "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paratrain: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    assert _snapshot(workspace / "runs") == before  # nothing written, nothing changed


@pytest.mark.timeout(60)
def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    done = run_cli("fit", "--data", str(tmp_path / "missing.parquet"), "--target", "y")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"paratrain: error: data file '{tmp_path / 'missing.parquet'}' does not exist"
