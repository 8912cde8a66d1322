"""Data-parallel fits (real worker processes, local or torchrun's) give the one-process answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from paratrain.cli import main
from paratrain.curvefit import curve_fit
from paratrain.errors import ConfigError
from tests.conftest import run_cli


def _curve(rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 10, rows)
    return x, 3 * np.exp(-0.4 * x) + 1 + 0.01 * rng.normal(size=x.size)


@pytest.mark.timeout(180)
def test_two_workers_match_one_process():
    x, y = _curve()
    one = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=16)
    two = curve_fit("a*exp(-b*x) + c", x=x, y=y, p0=[1, 1, 0], starts=16, workers=2)
    for name in one.params:
        assert two.params[name] == pytest.approx(one.params[name], rel=1e-10)
        assert two.stderr[name] == pytest.approx(one.stderr[name], rel=1e-8)
    assert two.rss == pytest.approx(one.rss, rel=1e-12) and two.n_obs == 3000 and two.converged


@pytest.mark.timeout(300)
def test_a_fit_under_torchrun_matches_two_local_workers(tmp_path):
    """Same shards by rank, same reductions: the parameters agree to 1e-12 (relative); rank 0 alone prints."""
    x, y = _curve()
    data = tmp_path / "curve.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(data, index=False)
    common = ["curvefit", "--formula", "a*exp(-b*x) + c", "--data", str(data), "--target", "y", "--p0", "1,1,0",
              "--starts", "16", "--json"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "paratrain", *common]
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=200,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    across = json.loads(done.stdout)  # one JSON document: the other rank printed nothing
    local = run_cli(*common, "--workers", "2", timeout=200)
    assert local.returncode == 0, local.stderr[-3000:]
    alone = json.loads(local.stdout)
    assert across["n_obs"] == alone["n_obs"] == 3000 and across["converged"]
    for name, value in alone["params"].items():
        assert across["params"][name] == pytest.approx(value, rel=1e-12, abs=0)
        assert across["stderr"][name] == pytest.approx(alone["stderr"][name], rel=1e-12, abs=0)
    assert across["rss"] == pytest.approx(alone["rss"], rel=1e-12, abs=0)


def test_too_many_workers_for_the_rows():
    with pytest.raises(ConfigError, match="workers=8 needs at least 16 rows"):
        curve_fit("a*x", x=np.arange(5.0), y=np.arange(5.0), workers=8)


def test_workers_other_than_torchruns_world_are_refused(monkeypatch, capsys, tmp_path):
    """In a torchrun rank (its variables set), --workers must be the world size or omitted."""
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"workers=3 in a process that torchrun started: give workers=2"):
        curve_fit("a*x", x=np.arange(10.0), y=np.arange(10.0), workers=3)
    assert main(["curvefit", "--formula", "a*x", "--data", str(tmp_path / "unread.csv"), "--workers", "3"]) == 1
    assert capsys.readouterr().err.startswith("paratrain: error: --workers 3 under torchrun, which started 2 ranks")
