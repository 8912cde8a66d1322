"""Shared fixtures: small data sets written as real files."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from paratrain.train.checkpoint import load_torch

# Precision probes of the tests (and of the processes they start) are cached in a fresh folder,
# not in the user's ~/.cache: a test must not depend on, nor leave, what an earlier run measured.
if "PARATRAIN_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="paratrain-test-cache-")
    os.environ["PARATRAIN_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)  # and leave nothing in /tmp


def regression_frame(rows: int = 512, features: int = 5, seed: int = 0) -> pd.DataFrame:
    """A smooth nonlinear target an MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(rows, features)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.5 * x[:, 2] * x[:, 3] + 0.05 * rng.normal(size=rows)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(features)])
    frame["y"] = y.astype(np.float32)
    return frame


@pytest.fixture
def regression_csv(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    regression_frame().to_csv(path, index=False)
    return path


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The trained parameters a run directory holds."""
    return load_torch(Path(run_dir) / "model.pt")["state_dict"]


def assert_states_close(a: dict, b: dict, atol: float, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name].double() - b[name].double()).abs().max().item()
        assert torch.allclose(a[name].double(), b[name].double(), atol=atol, rtol=rtol), f"{name}: max |diff| {diff:.3g}"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m paratrain ARGS` as a user would run it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "paratrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
