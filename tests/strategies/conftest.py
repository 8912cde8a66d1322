"""Fixtures shared by the strategy tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import regression_frame


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """The 512-row regression table, written once per test module."""
    path = tmp_path_factory.mktemp("strategy-data") / "data.csv"
    regression_frame().to_csv(path, index=False)
    return path
