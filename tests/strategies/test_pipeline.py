"""`pipeline:STAGES`: the same parameters as one process, resume, memory, the bubble report, errors.

Tolerance: float32 parameters agree with `single` to atol 1e-5 after 2 epochs (14 steps): the
pipeline computes the same sums, cut into micro-batches whose gradients are added in another
order (measured: 4.5e-8 with SGD, 2.3e-7 with Adam on 4 workers). Rows are not shuffled, so
the data-parallel replicas' interleaved shards make up the single process's batches (as in
test_ddp_equivalence.py). 409 training rows in batches of 60 leave a short last batch of 49
rows, which 4 micro-batches do not divide (13+12+12+12): that path is exercised every epoch.
"""

from __future__ import annotations

import pytest
import torch

from paratrain.config import FitConfig, ParallelConfig
from paratrain.errors import ConfigError, WorkerError
from paratrain.models.formula import FormulaModel
from paratrain.models.mlp import MLP
from paratrain.strategies.pipeline import micro_batch_plan
from paratrain.strategies.pipeline_split import balanced_split, check_stage_count, model_blocks, stage_module
from paratrain.train.fit import fit, resume
from tests.conftest import assert_states_close, model_state

TOLERANCE = 1e-5
HIDDEN = [64, 64, 64]  # 5-64-64-64-1: the two stages hold 4544 and 4225 parameters


def _config(data, out, **fields) -> FitConfig:
    base = {"path": str(data), "target": "y", "hidden": HIDDEN, "epochs": 2, "shuffle": False, "precision": "fp32",
            "val_fraction": 0.2, "seed": 3, "optimizer": "sgd", "lr": 0.05, "batch_size": 60, "verbosity": 0,
            "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


@pytest.fixture(scope="module")
def single(table, tmp_path_factory):
    return fit(_config(table, tmp_path_factory.mktemp("pipeline") / "single"))


@pytest.fixture(scope="module")
def pipelined(table, tmp_path_factory):
    """pipeline:2 on 2 workers, 1F1B, 4 micro-batches (shared by the equivalence and resume tests)."""
    return fit(_config(table, tmp_path_factory.mktemp("pipeline") / "1f1b", strategy="pipeline:2", workers=2))


@pytest.mark.timeout(120)
def test_1f1b_equals_single_and_reports_its_bubble(single, pipelined):
    assert_states_close(model_state(single.run_dir), model_state(pipelined.run_dir), atol=TOLERANCE)
    # Validation runs through the stages: the last stage's outputs score like single's model.
    assert pipelined.summary["val_loss"] == pytest.approx(single.summary["val_loss"], rel=1e-5)
    assert pipelined.summary["train_loss"] == pytest.approx(single.summary["train_loss"], rel=1e-5)
    report = pipelined.summary["pipeline"]
    assert report["stage_layers"] == [["0", "1", "2", "3"], ["4", "5", "6"]]
    assert report["bubble_expected"] == pytest.approx(1 / 5)  # (S-1)/(M+S-1), S=2, M=4
    assert len(report["idle_fraction"]) == 2 and all(0.0 <= f <= 1.0 for f in report["idle_fraction"])
    # Each rank holds its stage only: at most 0.55x of the whole model, which ddp holds on every rank.
    whole = sum(t.numel() * t.element_size() for t in model_state(single.run_dir).values())
    for rank in pipelined.summary["memory"]:
        assert rank["parameters_bytes"] <= 0.55 * whole
    assert pipelined.summary["comm_bytes_per_step"] > 0


@pytest.mark.timeout(120)
def test_gpipe_with_time_balance_equals_single(single, pipelined, table, tmp_path):
    run = fit(_config(table, tmp_path / "gpipe", strategy="pipeline:2", workers=2, pipeline_schedule="gpipe",
                      balance="time", microbatches=3))
    assert_states_close(model_state(single.run_dir), model_state(run.run_dir), atol=TOLERANCE)
    assert run.summary["pipeline"]["schedule"] == "gpipe"
    # The same rows' activations: GPipe keeps all of them alive, 1F1B with 4 micro-batches 2 of 4
    # (summed over the ranks, as the time balance may cut elsewhere).
    def alive(result):
        return sum(rank["activations_bytes"] for rank in result.summary["memory"])
    assert alive(run) == pytest.approx(2 * alive(pipelined), rel=1e-6)


@pytest.mark.timeout(120)
def test_two_pipelines_of_two_stages_equal_single(table, tmp_path):
    """pipeline:2 on 4 workers: 2 replicas of batch 32 each = single's batch 64 (correctness only)."""
    fields = {"optimizer": "adam", "lr": 0.01, "epochs": 1}
    reference = fit(_config(table, tmp_path / "single64", batch_size=64, **fields))
    run = fit(_config(table, tmp_path / "2x2", strategy="pipeline:2", workers=4, batch_size=32, **fields))
    assert run.summary["workers"] == 4
    assert_states_close(model_state(reference.run_dir), model_state(run.run_dir), atol=TOLERANCE)
    assert run.summary["val_loss"] == pytest.approx(reference.summary["val_loss"], rel=1e-5)


@pytest.mark.timeout(120)
def test_resume_equals_uninterrupted(pipelined, table, tmp_path):
    stopped = fit(_config(table, tmp_path / "stopped", strategy="pipeline:2", workers=2, stop_after=1))
    assert stopped.summary["status"] == "stopped"
    assert list(stopped.run_dir.glob("checkpoint-e*.dcp")), "pipeline checkpoints are sharded"
    resumed = resume(stopped.run_dir)
    assert resumed.summary["epochs"] == 2
    # Bit-exact in practice; 1e-6 allows for nothing but summation order, of which there is none.
    assert_states_close(model_state(pipelined.run_dir), model_state(resumed.run_dir), atol=1e-6)


@pytest.mark.timeout(60)
def test_more_stages_than_layers_fails_in_the_workers(table, tmp_path):
    # hidden=[]: one linear layer, nothing to cut into two stages.
    with pytest.raises(WorkerError, match=r"pipeline:2 needs at least 2 linear layers.*has 1"):
        fit(_config(table, tmp_path / "linear", hidden=[], strategy="pipeline:2", workers=2))


@pytest.mark.parametrize(("strategy", "workers", "options", "message"), [
    ("pipeline", 2, {}, r"needs a stage count, e\.g\. pipeline:2"),
    ("pipeline:1", 1, {}, r"STAGES must be an integer >= 2"),
    ("pipeline:two", 2, {}, r"STAGES must be an integer >= 2"),
    ("pipeline:2", 3, {}, r"pipeline=2 x tensor=1 = 2 ranks per model replica, which does not divide the world size 3"),
    ("pipeline:2", 2, {"microbatches": 0}, r"microbatches=0 must be an integer >= 1"),
    ("pipeline:3", 3, {"microbatches": 2}, r"microbatches=2 must be >= the 3 stages for pipeline_schedule='1f1b'"),
    ("pipeline:2", 2, {"pipeline_schedule": "zb"}, r"pipeline_schedule='zb' is not one of: gpipe, 1f1b"),
    ("pipeline:2", 2, {"balance": "flops"}, r"balance='flops' is not one of: params, time"),
])
def test_bad_settings_fail_when_the_config_is_built(strategy, workers, options, message):
    with pytest.raises(ConfigError, match=message):
        ParallelConfig(strategy=strategy, workers=workers, options=options)


def test_formula_models_and_too_many_stages_are_refused():
    formula = FormulaModel("b1*x0 + b2", ["x0"])
    with pytest.raises(ConfigError, match="FormulaModel without a `layers` Sequential .formula models cannot be split"):
        model_blocks(formula)
    blocks = model_blocks(MLP(5, (16,), 1))
    with pytest.raises(ConfigError, match=r"pipeline:3 needs at least 3 linear layers"):
        check_stage_count(3, blocks)


def test_stages_keep_the_models_parameter_names():
    model = MLP(5, (64, 64, 64), 1)
    blocks = model_blocks(model)
    assert [b.keys for b in blocks] == [("0", "1"), ("2", "3"), ("4", "5"), ("6",)]
    starts = balanced_split([384, 4160, 4160, 65], 2)
    assert starts == [0, 2]
    parts = [stage_module(model, blocks, starts, s)[0] for s in range(2)]
    names = [name for part in parts for name in part.state_dict()]
    assert names == list(model.state_dict())
    x = torch.randn(7, 5)
    assert torch.equal(parts[1](parts[0](x)), model(x))


@pytest.mark.parametrize(("costs", "stages", "starts"), [
    ([1, 1, 1, 1], 2, [0, 2]),
    ([10, 1, 1, 1], 2, [0, 1]),
    ([1, 1, 1, 10], 3, [0, 1, 3]),  # ties: the earliest cuts
    ([5, 5, 5], 3, [0, 1, 2]),
])
def test_balanced_split_minimises_the_costliest_stage(costs, stages, starts):
    assert balanced_split(costs, stages) == starts


def test_micro_batch_plan_covers_every_row_in_equal_runs():
    assert micro_batch_plan(64, 4) == [(0, 4, 16)]
    assert micro_batch_plan(49, 4) == [(0, 1, 13), (13, 3, 12)]
    assert micro_batch_plan(2, 4) == [(0, 2, 1)]
    for rows in range(1, 40):
        plan = micro_batch_plan(rows, 4)
        assert sum(count * size for _, count, size in plan) == rows
        assert plan[0][0] == 0 and all(a[0] + a[1] * a[2] == b[0] for a, b in zip(plan, plan[1:]))
