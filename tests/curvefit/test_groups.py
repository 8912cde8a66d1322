"""``fit_groups``: one batched run equals one fit per group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paratrain.curvefit import curve_fit, fit_groups


@pytest.fixture
def table():
    rng = np.random.default_rng(3)
    frames = []
    for label, (a, b, c), n in [("p", (2.0, 0.5, 0.1), 30), ("q", (4.0, 1.2, -0.3), 18), ("r", (1.0, 0.2, 0.0), 25)]:
        x = np.sort(rng.uniform(0, 6, n))
        y = a * np.exp(-b * x) + c + 0.01 * rng.normal(size=n)
        frames.append(pd.DataFrame({"batch": label, "t": x, "y": y}))
    return pd.concat(frames, ignore_index=True).sample(frac=1, random_state=0)  # groups interleaved


def test_each_group_matches_its_own_fit(table):
    out = fit_groups("a*exp(-b*t) + c", table, group_by="batch", p0={"a": 1, "b": 1, "c": 0}, starts=4)
    assert list(out["batch"]) == list(pd.unique(table["batch"]))
    for row in out.to_dict(orient="records"):
        alone = curve_fit("a*exp(-b*t) + c", table[table.batch == row["batch"]], target="y",
                          p0={"a": 1, "b": 1, "c": 0}, starts=4)
        for name in ("a", "b", "c"):
            assert row[name] == pytest.approx(alone.params[name], rel=1e-8)
            assert row[f"{name}_stderr"] == pytest.approx(alone.stderr[name], rel=1e-6)
        assert row["rss"] == pytest.approx(alone.rss, rel=1e-10)
        assert row["r2"] == pytest.approx(alone.r2, rel=1e-10)
        assert row["n"] == alone.n_obs and row["converged"]


def test_a_group_too_small_is_reported_not_fitted(table):
    tiny = pd.DataFrame({"batch": ["s", "s"], "t": [0.0, 1.0], "y": [1.0, 0.5]})
    out = fit_groups("a*exp(-b*t) + c", pd.concat([table, tiny]), group_by="batch", p0=[1, 1, 0])
    row = out.set_index("batch").loc["s"]
    assert np.isnan(row["a"]) and not row["converged"]
    assert "only 2 rows for 3 parameters" in row["message"]
    assert out.set_index("batch").loc["p", "converged"]
