"""Fixtures of the tune tests: a real PostgreSQL server, small data, the CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import regression_frame

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def postgres_server(*options: str) -> Iterator[str]:
    """A throwaway PostgreSQL server from scripts/postgres.sh (``--listen ADDR --allow CIDR --netns NS``); its URL.

    Skips the test when PostgreSQL cannot be installed here.
    """
    # Not under pytest's tmp dir: that is private to root (0700), and the server runs as `postgres`.
    data_dir = tempfile.mkdtemp(prefix="paratrain-pg-")
    script = REPO / "scripts" / "postgres.sh"
    try:
        done = subprocess.run(["bash", str(script), "start", data_dir, *options], capture_output=True, text=True,
                              timeout=600)
        if done.returncode == 2:
            pytest.skip(f"PostgreSQL cannot be installed here: {done.stderr.strip().splitlines()[-1]}")
        assert done.returncode == 0, done.stderr
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", data_dir], capture_output=True, timeout=120)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server that scripts/postgres.sh installs (if needed) and starts; stopped at the end."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    regression_frame(rows=256).to_csv(path, index=False)
    return path


def tune_cli_command() -> list[str]:
    """`python -m paratrain` once paratrain.cli registers tune; until then the tune module's own entry."""
    from paratrain import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    module = "paratrain" if "tune" in commands.choices else "paratrain.tune.cli"
    return [sys.executable, "-m", module]


def run_tune_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*tune_cli_command(), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
