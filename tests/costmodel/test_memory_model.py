"""Memory per worker in the cost model: each strategy's share of the model state, activations by
schedule, ``advise --memory-per-worker``, and contenders the cost model cannot predict.

fsdp, zero1, pipeline and tensor are predicted by name; where this checkout's registry lacks
them, stand-in classes with their names and settings take their place (the cost model reads
only a strategy's name, capabilities and Options).
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest

from paratrain.cli import main
from paratrain.config import FitConfig
from paratrain.costmodel.advise import advise
from paratrain.costmodel.calibrate import workload_from_config
from paratrain.costmodel.memory import layers, parse_size
from paratrain.costmodel.network import Network
from paratrain.costmodel.predict import predict_step
from paratrain.errors import ConfigError
from paratrain.launch.links import LOOPBACK
from paratrain.strategies import base, options
from tests.conftest import regression_frame
from tests.costmodel.helpers import PARAMETERS, synthetic

N = 4.0 * PARAMETERS
"""Bytes of the synthetic model's parameters (10-1024-1024-1, fp32)."""


@dataclasses.dataclass(frozen=True)
class PipelineOptions(options.StrategyOptions):
    microbatches: int = 4
    pipeline_schedule: str = "1f1b"


@dataclasses.dataclass(frozen=True)
class FsdpOptions(options.StrategyOptions):
    reshard_after_forward: bool = True


def _stand_in(name: str, specs: tuple[str, ...], settings=options.StrategyOptions, argument: bool = False):
    class StandIn(base.ProcessGroupStrategy):
        bench_specs: ClassVar[tuple[str, ...]] = specs
        Options = settings

        def __init__(self, arg=None, config=None):
            super().__init__(None, config)

    StandIn.name = name
    StandIn.shards_model = name != "zero1"
    return StandIn


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """The registry with fsdp, zero1, pipeline, tensor (stand-ins where absent) and 'mystery',
    a strategy the cost model has never heard of."""
    import paratrain.strategies as strategies

    real = strategies._registry
    extra = {"fsdp": _stand_in("fsdp", ("fsdp",), FsdpOptions), "zero1": _stand_in("zero1", ("zero1",)),
             "pipeline": _stand_in("pipeline", ("pipeline:2",), PipelineOptions),
             "tensor": _stand_in("tensor", ("tensor",)), "mystery": _stand_in("mystery", ("mystery",))}
    monkeypatch.setattr(strategies, "_registry", lambda: {**extra, **real()})


def _memory(contender: str, workers: int = 4, calibration=None, **settings):
    calibration = calibration or synthetic()
    return predict_step(calibration, contender, workers, LOOPBACK, settings).memory


def test_full_copies_hold_the_whole_model_state() -> None:
    single = _memory("single", 1)
    assert (single.parameters_bytes, single.gradients_bytes, single.optimizer_bytes) == (N, N, 2 * N)
    assert single.activations_bytes == 1e6 and single.buffers_bytes == 0
    ddp = _memory("ddp")
    assert ddp.model_state_bytes == 4 * N and ddp.buffers_bytes == N  # DDP's buckets copy the gradients
    assert ddp.total_bytes == single.total_bytes + N
    localsgd = _memory("localsgd:8")
    assert localsgd.model_state_bytes == 4 * N


def test_zero1_shards_only_the_optimizer_state() -> None:
    ddp, zero1 = _memory("ddp"), _memory("zero1")
    assert zero1.parameters_bytes == N and zero1.gradients_bytes == N
    assert zero1.optimizer_bytes == pytest.approx(2 * N / 4)
    assert ddp.total_bytes - zero1.total_bytes == pytest.approx(2 * N * 3 / 4)


def test_fsdp_shards_everything_plus_one_gathered_layer() -> None:
    fsdp = _memory("fsdp")
    assert fsdp.model_state_bytes == pytest.approx(4 * N / 4)
    largest = 4.0 * (1024 * 1024 + 1024)  # the 1024x1024 layer, gathered with its gradient in backward
    assert fsdp.buffers_bytes == pytest.approx(2 * largest)
    kept = _memory("fsdp", reshard_after_forward=False)
    assert kept.buffers_bytes == pytest.approx(N + largest)  # every layer stays gathered until backward
    assert _memory("ddp").total_bytes > kept.total_bytes > fsdp.total_bytes


def _pipeline_calibration():
    # 64 -> 64 -> 8 -> 1: the first linear layer holds 89% of the parameters, so stage 1 of 2 is the largest.
    parameters = 64 * 64 + 64 + 64 * 8 + 8 + 8 + 1
    return synthetic(layers=(64, 64, 8, 1), parameters=parameters), parameters


def test_pipeline_holds_its_stage_and_the_schedules_micro_batches() -> None:
    calibration, parameters = _pipeline_calibration()
    first_stage = (64 * 64 + 64) / parameters
    onef1b = _memory("pipeline:2", 2, calibration, microbatches=8, pipeline_schedule="1f1b")
    gpipe = _memory("pipeline:2", 2, calibration, microbatches=8, pipeline_schedule="gpipe")
    assert onef1b.parameters_bytes == pytest.approx(4 * parameters * first_stage)
    assert onef1b.optimizer_bytes == pytest.approx(8 * parameters * first_stage)
    # The first stage keeps min(S, M) = 2 of the 8 micro-batches under 1f1b, all 8 under gpipe.
    assert gpipe.activations_bytes == pytest.approx(4 * onef1b.activations_bytes)
    stage_share = layers_share(calibration, 0)
    assert gpipe.activations_bytes == pytest.approx(1e6 * stage_share)  # a whole batch through stage 1
    # With as many micro-batches as stages, 1f1b holds as much as gpipe.
    assert _memory("pipeline:2", 2, calibration, microbatches=2).activations_bytes == pytest.approx(
        gpipe.activations_bytes)


def layers_share(calibration, index: int) -> float:
    from paratrain.costmodel.step import StepInputs

    inputs = StepInputs(calibration, Network(LOOPBACK), 2, calibration.compute[1], "", None, "x")
    shapes = layers(inputs)
    return shapes[index].activations_per_row / sum(shape.activations_per_row for shape in shapes)


def test_tensor_splits_the_layer_pairs() -> None:
    # 10 -> 64 -> 64 -> 1: layers 1 (column-wise) and 2 (row-wise) split, the head whole.
    parameters = 10 * 64 + 64 + 64 * 64 + 64 + 64 + 1
    calibration = synthetic(layers=(10, 64, 64, 1), parameters=parameters)
    cut = (10 * 64 + 64) + 64 * 64  # column-wise weight and bias, row-wise weight
    for degree in (2, 4):
        memory = _memory(f"tensor:{degree}", 4, calibration)
        kept = parameters - cut + cut / degree
        assert memory.parameters_bytes == pytest.approx(4 * kept)
        assert memory.optimizer_bytes == pytest.approx(8 * kept)
    assert _memory("tensor", 4, calibration).parameters_bytes == pytest.approx(4 * (parameters - cut + cut / 4))


def test_step_predictions_of_the_new_strategies_are_finite_and_explained() -> None:
    calibration = synthetic()
    for contender, workers in (("fsdp", 4), ("zero1", 4), ("pipeline:2", 4), ("tensor:2", 4), ("tensor", 2)):
        prediction = predict_step(calibration, contender, workers, LOOPBACK)
        assert 0 < prediction.step_s < 10 and prediction.samples_per_s > 0
        assert prediction.reason and prediction.memory.total_bytes == prediction.memory_bytes
        json.dumps(prediction.to_dict())
    ddp = predict_step(calibration, "ddp", 4, LOOPBACK)
    # fsdp moves 1.5x ddp's bytes (two all-gathers and a reduce-scatter against a ring all-reduce).
    assert predict_step(calibration, "fsdp", 4, LOOPBACK).comm_s > ddp.comm_s


def test_advise_skips_what_it_cannot_predict() -> None:
    advice = advise(synthetic(), Network(LOOPBACK, shared_machine=True), 3, 1e5,
                    contenders=["single", "ddp", "mystery", "pipeline:2", "tensor:2"])
    ranked = {choice.prediction.contender for choice in advice.ranked}
    assert ranked == {"single", "ddp"}
    notes = "\n".join(advice.skipped)
    assert "mystery" in notes and "no cost model" in notes
    assert "pipeline:2" in notes and "divisible by 2" in notes


def test_memory_per_worker_rules_out_what_does_not_fit() -> None:
    network = Network(LOOPBACK, shared_machine=True)
    free = advise(synthetic(), network, 4, 1e5, contenders=["single", "ddp", "fsdp"])
    need = {c.prediction.contender: c.prediction.memory_bytes for c in free.ranked}
    assert need["fsdp"] < need["single"] < need["ddp"]
    limit = (need["single"] + need["ddp"]) / 2
    advice = advise(synthetic(), network, 4, 1e5, contenders=["single", "ddp", "fsdp"], memory_per_worker=limit)
    assert {c.prediction.contender for c in advice.ranked} == {"single", "fsdp"}
    (ruled,) = advice.ruled_out
    assert ruled.prediction.contender == "ddp"
    assert ruled.reason.startswith("needs ") and "per worker, more than the" in ruled.reason
    nothing = advise(synthetic(), network, 4, 1e5, contenders=["single", "ddp"], memory_per_worker=1e6)
    assert not nothing.ranked and "no contender fits in" in nothing.verdict
    with pytest.raises(ConfigError, match="no contender fits"):
        nothing.best


@pytest.mark.parametrize("text, expected", [("2GiB", 2 * 2**30), ("500MB", 500e6), ("1.5 GiB", 1.5 * 2**30),
                                            ("64G", 64 * 2**30), ("1048576", 2**20), ("512mib", 512 * 2**20)])
def test_sizes(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "two GiB", "2 GiBs", "-1GB", "0", "1e999GB", "2 GB of RAM"])
def test_bad_sizes_name_the_value(text) -> None:
    with pytest.raises(ConfigError) as error:
        parse_size(text)
    assert f"memory-per-worker={text!r}" in str(error.value)


@pytest.fixture
def calibrated(tmp_path):
    data = tmp_path / "data.csv"
    regression_frame(rows=200).to_csv(data, index=False)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(f"path: {data}\ntarget: y\nhidden: [32, 32]\nbatch_size: 64\nepochs: 2\n")
    config = FitConfig.from_dict({"path": str(data), "target": "y", "hidden": [32, 32], "batch_size": 64})
    fingerprint = workload_from_config(config).fingerprint()
    path = tmp_path / "calib.json"
    synthetic(layers=fingerprint.layers, parameters=fingerprint.parameters, batch=64).save(path)
    return ["advise", "--config", str(config_path), "--workers", "2", "--calibration", str(path)]


def test_cli_shows_memory_per_worker_and_what_is_ruled_out(calibrated, capsys) -> None:
    assert main(calibrated) == 0
    out = capsys.readouterr().out
    assert "mem/worker" in out and "memory: " in out and "per worker: " in out
    assert "mystery" in out and "no cost model" in out  # listed as skipped, not a crash
    # The synthetic calibration's process is 300 MB: 290MB is too little for any contender.
    assert main([*calibrated, "--memory-per-worker", "290MB"]) == 0
    out = capsys.readouterr().out
    assert "ruled out" in out and "more than the 276.6 MiB given" in out and "no contender fits" in out
    assert main([*calibrated, "--memory-per-worker", "2GiB", "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["memory_per_worker"] == 2 * 2**30 and not advice["ruled_out"] and advice["ranked"]
    assert all(row["memory"]["total_bytes"] == row["memory_bytes"] for row in advice["ranked"])


def test_cli_bad_memory_per_worker_is_one_line(calibrated, capsys) -> None:
    assert main([*calibrated, "--memory-per-worker", "lots"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "memory-per-worker='lots'" in lines[0]


def test_advise_passes_the_runs_settings_to_the_strategy_that_declares_them() -> None:
    calibration, _ = _pipeline_calibration()
    network = Network(LOOPBACK, shared_machine=True)

    def pipeline_activations(settings):
        advice = advise(calibration, network, 2, 1e5, contenders=["single", "pipeline:2", "fsdp"], options=settings)
        (row,) = [c for c in advice.ranked if c.prediction.contender == "pipeline:2"]
        return row.prediction.memory.activations_bytes

    # fsdp does not declare microbatches: the setting reaches pipeline only, and fails nothing else.
    gpipe = pipeline_activations({"microbatches": 8, "pipeline_schedule": "gpipe"})
    assert gpipe == pytest.approx(4 * pipeline_activations({"microbatches": 8}))
