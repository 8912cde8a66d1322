"""`tensor[:DEGREE]`: tensor parallelism reaches single's parameters, resumes exactly, refuses what it cannot split.

Tolerance: TOLERANCE = 2e-6 on float32 parameters after 2 epochs (16 Adam steps). A split layer
adds its partial products in another order (row-wise: two half-sums all-reduced), so the
parameters differ from one process's by float32 rounding only (seen: <= 6e-8 after 16 steps;
the platform notes saw ~4e-7 on other shapes); a real mistake (a missing all-reduce, an
unaveraged data replica) moves them by > 1e-3. Rows are not reshuffled (shuffle=False) so that
the data replicas' interleaved shards make up the single process's batches.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from paratrain.config import FitConfig
from paratrain.errors import ConfigError, WorkerError
from paratrain.models.mlp import MLP
from paratrain.strategies.tensor import check_degree, plan_split
from paratrain.train.fit import fit, resume
from tests.conftest import assert_states_close, model_state

TOLERANCE = 2e-6


def _config(data, out, **fields):
    base = {"path": str(data), "target": "y", "hidden": [32, 32, 32], "epochs": 2, "shuffle": False,
            "precision": "fp32", "seed": 3, "optimizer": "adam", "lr": 3e-3, "batch_size": 64, "verbosity": 0,
            "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_ranks(table, tmp_path_factory):
    """single, and tensor on 2 workers stopped after 1 of 2 epochs then resumed (same batches).

    3 hidden layers = two split pairs (the head is the second pair's row-wise half, so a backward
    all-reduce runs too). The resumed run is compared with the uninterrupted single one: that
    checks the sharded (DCP) checkpoint and the split layers at once, at the cost of one launch less."""
    root = tmp_path_factory.mktemp("tensor")
    single = fit(_config(table, root / "single"))
    stopped = fit(_config(table, root / "tensor", strategy="tensor", workers=2, stop_after=1))
    assert stopped.summary["status"] == "stopped"
    assert list(stopped.run_dir.glob("checkpoint-e*.dcp"))
    return single, resume(stopped.run_dir)


@pytest.mark.timeout(120)
def test_two_ranks_resumed_reach_single_parameters_and_predict_in_one_process(two_ranks):
    """Resume equals uninterrupted: a lost Adam moment or step count would move the parameters by ~lr."""
    import numpy as np

    from paratrain.predict import TrainedModel

    single, tensor = two_ranks
    assert tensor.summary["workers"] == 2 and tensor.summary["status"] == "finished"
    assert [r["epoch"] for r in _records(tensor.run_dir)] == [1, 2]
    # model.pt holds whole tensors with the plain model's names.
    assert_states_close(model_state(single.run_dir), model_state(tensor.run_dir), atol=TOLERANCE)
    # Metrics count once per data replica: the loss equals single's, not twice it.
    assert tensor.summary["train_loss"] == pytest.approx(single.summary["train_loss"], rel=1e-5)
    assert tensor.summary["val_loss"] == pytest.approx(single.summary["val_loss"], rel=1e-5)
    # Forward all-reduces of both pairs' outputs (rows x 32 and rows x 1) plus the backward one of
    # the second pair's input (rows x 32), float32, averaged over the epoch's steps of 64 rows.
    rows = tensor.summary["n_train"]
    expected_bytes = 4 * rows * (32 + 1 + 32) / math.ceil(rows / 64)
    assert _records(tensor.run_dir)[-1]["comm_bytes_per_step"] == pytest.approx(expected_bytes)
    rows = pd.DataFrame(np.random.default_rng(1).uniform(-1, 1, (8, 5)), columns=[f"x{i}" for i in range(5)])
    predicted = TrainedModel.load(tensor.run_dir).predict(rows)
    expected = TrainedModel.load(single.run_dir).predict(rows)
    assert np.allclose(predicted, expected, atol=1e-5)


@pytest.mark.timeout(120)
def test_data_times_tensor_on_four_workers_matches_single_and_halves_parameters(table, tmp_path):
    """tensor:2 on 4 workers = 2 data replicas x 2 tensor ranks, 32 rows each: single with 64 rows.

    The parameter bytes per rank: hidden 128,128 keeps the replicated head small, so each rank holds
    ~0.51 of the model (ddp, like single, holds all of it on every rank)."""
    fields = {"hidden": [128, 128]}
    single = fit(_config(table, tmp_path / "single", **fields))
    tensor = fit(_config(table, tmp_path / "tensor", strategy="tensor:2", workers=4, batch_size=32, **fields))
    assert tensor.summary["workers"] == 4
    assert_states_close(model_state(single.run_dir), model_state(tensor.run_dir), atol=TOLERANCE)
    assert tensor.summary["train_loss"] == pytest.approx(single.summary["train_loss"], rel=1e-5)
    whole = single.summary["memory"][0]["parameters_bytes"]
    held = [rank["parameters_bytes"] for rank in tensor.summary["memory"]]
    assert len(held) == 4 and max(held) <= 0.55 * whole, (held, whole)


def test_width_not_divisible_names_layer_and_working_degrees(table, tmp_path):
    with pytest.raises(ConfigError, match=r"layer layers\.0 has 30 outputs, not divisible by tensor degree 4; "
                                          r"degrees that divide every split layer: 1, 2, 3, 5, 6$"):
        _config(table, tmp_path / "x", hidden=[30, 30], strategy="tensor:4", workers=4)
    # The default degree is the number of workers.
    with pytest.raises(ConfigError, match="not divisible by tensor degree 3"):
        _config(table, tmp_path / "x", hidden=[32, 32], strategy="tensor", workers=3)
    # Only column-split widths count: 30 outputs of the row-wise half (layers.2) are not split.
    plan = plan_split(MLP(5, (32, 30), 1))
    assert plan.colwise == ("layers.0",) and plan.rowwise == ("layers.2",) and plan.replicated == ("layers.4",)
    check_degree(plan, 4)


@pytest.mark.timeout(60)
def test_width_error_at_wrap_time_fails_every_rank_without_hanging(table, tmp_path):
    """Under torchrun the degree is only known in the workers: the same check there fails all ranks
    alike (every rank holds the same model), so none waits in a collective."""
    config = _config(table, tmp_path / "run", hidden=[32, 32], strategy="tensor", workers=2)
    config.model.hidden = (31, 31)  # past the config-time check, as a torchrun job would be
    with pytest.raises(WorkerError, match="layer layers.0 has 31 outputs, not divisible by tensor degree 2"):
        fit(config, data=pd.read_csv(table))


@pytest.mark.parametrize("fields, message", [
    ({"model": "formula", "formula": "b1*x0"}, "splits the linear layers of an MLP, but model='formula'"),
    ({"norm": "layer"}, r"layer layers\.1 \(LayerNorm\) normalizes the outputs of layers\.0"),
    ({"norm": "batch"}, r"layer layers\.1 \(BatchNorm1d\) normalizes"),
    ({"strategy": "tensor:0"}, "degree after ':' must be an integer >= 1"),
    ({"strategy": "tensor:x"}, "degree after ':' must be an integer >= 1"),
    ({"strategy": "tensor:2", "workers": 3}, "does not divide the world size 3"),
    # An explicit degree is checked against the widths even before the workers are known.
    ({"strategy": "tensor:4", "workers": 1, "hidden": [6, 6]}, "layer layers.0 has 6 outputs, not divisible by "
                                                               "tensor degree 4; degrees that divide every split "
                                                               "layer: 1, 2, 3, 6$"),
])
def test_refuses_at_config_time(table, tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        _config(table, tmp_path / "x", **{"strategy": "tensor", "workers": 2, **fields})
