"""`stale:DELAY`: gradients taken DELAY steps late, checked against a hand-written delayed loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from paratrain.config import FitConfig, ParallelConfig
from paratrain.errors import ConfigError
from paratrain.strategies import WorkerContext, create_strategy
from paratrain.train.fit import fit, resume
from tests.conftest import model_state, run_cli


def _config(table: Path, out: Path, **fields) -> FitConfig:
    base = {"path": str(table), "target": "y", "hidden": [16], "seed": 0, "precision": "fp32", "verbosity": 0, "out": str(out),
            "epochs": 3, "batch_size": 64, "threads": 1}
    return FitConfig.from_dict({**base, **fields})


@pytest.mark.parametrize(("strategy", "fields", "message"), [
    ("stale", {}, r"needs a delay in optimizer steps, e\.g\. stale:1"),
    ("stale:-1", {}, r"DELAY must be an integer >= 0"),
    ("stale:x", {}, r"DELAY must be an integer >= 0"),
    ("stale:1", {"workers": 2}, r"runs one process, but workers=2"),
])
def test_stale_rejects_bad_settings(strategy, fields, message):
    with pytest.raises(ConfigError, match=message):
        ParallelConfig(strategy=strategy, **fields)


@pytest.mark.parametrize("delay", [1, 3])
def test_each_gradient_is_taken_delay_steps_late(delay):
    """theta_{t+1} = theta_t - lr * grad L_t(theta_{t-delay}), theta_{<0} = theta_0, computed by hand."""
    torch.manual_seed(0)
    batches = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(7)]
    model = torch.nn.Linear(3, 1)
    start = [p.detach().clone() for p in model.parameters()]
    strategy = create_strategy(f"stale:{delay}")
    strategy.wrap_model(model, WorkerContext())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in batches:
        optimizer.zero_grad()
        with strategy.sync_context(model, sync=True):
            torch.nn.functional.mse_loss(model(x), y).backward()
        strategy.optimizer_step(optimizer, None)

    history = [start]
    for t, (x, y) in enumerate(batches):
        weight, bias = (w.clone().requires_grad_() for w in history[max(0, t - delay)])
        torch.nn.functional.mse_loss(x @ weight.T + bias, y).backward()
        history.append([history[t][0] - 0.1 * weight.grad, history[t][1] - 0.1 * bias.grad])
    for got, expected in zip(model.parameters(), history[-1]):
        assert torch.allclose(got, expected, atol=1e-6), (got, expected)
    # ... and not what undelayed SGD gives.
    plain = [start[0].clone(), start[1].clone()]
    for x, y in batches:
        weight, bias = (w.clone().requires_grad_() for w in plain)
        torch.nn.functional.mse_loss(x @ weight.T + bias, y).backward()
        plain = [plain[0] - 0.1 * weight.grad, plain[1] - 0.1 * bias.grad]
    assert not torch.allclose(model.weight, plain[0], atol=1e-4)


@pytest.mark.timeout(120)
def test_stale_zero_is_single_and_stale_one_differs(table, tmp_path):
    single = fit(_config(table, tmp_path / "single"))
    zero = fit(_config(table, tmp_path / "zero", strategy="stale:0"))
    one = fit(_config(table, tmp_path / "one", strategy="stale:1", accumulate=2, batch_size=32))
    a, b, c = model_state(single.run_dir), model_state(zero.run_dir), model_state(one.run_dir)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.allclose(a[name], c[name], atol=1e-4) for name in a)
    # A one-step delay at this small rate slows training only a little.
    assert one.summary["status"] == "finished"
    assert one.summary["val_loss"] <= 1.2 * single.summary["val_loss"], (one.summary, single.summary)


@pytest.mark.timeout(120)
def test_stale_from_the_cli(table, tmp_path):
    out = tmp_path / "run"
    done = run_cli("fit", "--data", str(table), "--target", "y", "--hidden", "16", "--epochs", "2",
                   "--strategy", "stale:1", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "stale:1" and summary["status"] == "finished"
    bad = run_cli("fit", "--data", str(table), "--target", "y", "--strategy", "stale:-2", "--out", str(tmp_path / "b"))
    assert bad.returncode != 0 and "DELAY must be an integer >= 0" in bad.stderr


@pytest.mark.timeout(120)
def test_stale_from_the_estimator():
    from paratrain.estimators import MLPRegressor
    from tests.conftest import regression_frame

    frame = regression_frame()
    X, y = frame.drop(columns="y").to_numpy(), frame["y"].to_numpy()
    common = {"hidden_layer_sizes": (16,), "epochs": 3, "batch_size": 64, "random_state": 0}
    plain = MLPRegressor(**common).fit(X, y)
    late = MLPRegressor(strategy="stale:1", **common).fit(X, y)
    assert late.summary_["strategy"] == "stale:1"
    assert late.predict(X).shape == (len(X),)
    assert not (late.predict(X) == plain.predict(X)).all()  # the delay changed the trained model
