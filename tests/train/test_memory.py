"""The per-rank memory breakdown in summary.json and metrics.jsonl, counted against the model itself,
and the cost model's memory prediction against it.

MLP 5 -> 32 -> 32 -> 1 (fp32): 5*32+32 + 32*32+32 + 32+1 = 1,281 parameters in 6 tensors.
"""

from __future__ import annotations

import json

import pytest

from paratrain.config import FitConfig
from paratrain.train.fit import fit
from paratrain.train.memory import MemoryBreakdown
from tests.conftest import regression_frame

PARAMETERS = 5 * 32 + 32 + 32 * 32 + 32 + 32 + 1
TENSORS = 6
LEAF_OUTPUTS_PER_ROW = 32 + 32 + 32 + 32 + 1
"""Linear, ReLU, Linear, ReLU, Linear: the widths of what the leaf layers output per row."""
KEYS = {"peak_bytes", "parameters_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes",
        "model_state_bytes"}


def _config(tmp_path, data, name: str, **fields) -> FitConfig:
    base = {"path": str(data), "target": "y", "hidden": [32, 32], "epochs": 1, "batch_size": 32, "seed": 0,
            "precision": "fp32", "optimizer": "adam", "verbosity": 0, "out": str(tmp_path / name)}
    return FitConfig.from_dict({**base, **fields})


def _run(tmp_path, data, name: str, **fields):
    return fit(_config(tmp_path, data, name, **fields))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One ddp run on 2 workers, shared by the tests that read it (each run costs seconds)."""
    folder = tmp_path_factory.mktemp("ddp")
    data = folder / "data.csv"
    regression_frame().to_csv(data, index=False)
    return _config(folder, data, "ddp", strategy="ddp", workers=2), fit(_config(folder, data, "ddp", strategy="ddp",
                                                                                  workers=2))


def _check_model_state(rank: dict) -> None:
    assert set(rank) == KEYS
    assert rank["parameters_bytes"] == 4 * PARAMETERS
    assert rank["gradients_bytes"] == rank["parameters_bytes"]
    # Adam: exp_avg and exp_avg_sq per parameter, exactly 2x the parameters, plus one float32
    # `step` scalar per parameter tensor (4 bytes x 6 tensors = 24 bytes, under 0.3% here).
    assert rank["optimizer_bytes"] == 2 * 4 * PARAMETERS + 4 * TENSORS
    assert rank["model_state_bytes"] == rank["parameters_bytes"] + rank["gradients_bytes"] + rank["optimizer_bytes"]
    # The peak is the process's resident set: torch alone is far more than the model state.
    assert rank["peak_bytes"] >= rank["model_state_bytes"]


def test_single_counts_the_model_and_activations_scale_with_the_batch(tmp_path, regression_csv) -> None:
    runs = {batch: _run(tmp_path, regression_csv, f"single{batch}", batch_size=batch) for batch in (16, 64)}
    for batch, run in runs.items():
        (rank,) = run.summary["memory"]
        _check_model_state(rank)
        # Activations: what the leaf layers output in the first step, exactly B rows x widths x 4 bytes.
        assert rank["activations_bytes"] == batch * LEAF_OUTPUTS_PER_ROW * 4
    assert runs[64].summary["memory"][0]["activations_bytes"] == 4 * runs[16].summary["memory"][0]["activations_bytes"]


def test_accumulation_keeps_one_micro_batch_alive(tmp_path, regression_csv) -> None:
    run = _run(tmp_path, regression_csv, "accumulate", batch_size=16, accumulate=4)
    (rank,) = run.summary["memory"]
    # The hooked step saw 4 micro-batches of batch_size=16 rows each; one is alive at a time.
    assert rank["activations_bytes"] == 16 * LEAF_OUTPUTS_PER_ROW * 4


@pytest.mark.timeout(120)
def test_ddp_two_workers_each_hold_a_full_copy(ddp_run) -> None:
    _, run = ddp_run
    memory = run.summary["memory"]
    assert len(memory) == 2
    for rank in memory:
        _check_model_state(rank)
        assert rank["activations_bytes"] == 32 * LEAF_OUTPUTS_PER_ROW * 4  # batch_size is rows per worker
    # metrics.jsonl carries the same breakdown every epoch.
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    epochs = [r for r in records if "memory" in r]
    assert epochs and epochs[-1]["memory"] == memory
    assert epochs[-1]["peak_memory_bytes"] == max(rank["peak_bytes"] for rank in memory)


def test_breakdown_round_trips_through_the_all_reduced_vector() -> None:
    breakdown = MemoryBreakdown(10, 1, 2, 3, 4)
    assert MemoryBreakdown.from_list(breakdown.to_list()) == breakdown
    assert breakdown.to_dict()["model_state_bytes"] == 6


def _predicted(config: FitConfig, contender: str, workers: int):
    """The cost model's memory per worker for ``config``'s model, from what calibrate records."""
    from paratrain.costmodel.calibrate import workload_from_config
    from paratrain.costmodel.calibration import Calibration, ComputeProfile
    from paratrain.costmodel.predict import predict_step
    from paratrain.costmodel.probes import memory_estimate

    workload = workload_from_config(config)
    # Compute figures do not enter the memory prediction; any positive ones do.
    profile = ComputeProfile(1, 1, 0.01, 0.009, 0.001, 1e-5)
    calibration = Calibration(workload.fingerprint(), 1, compute={1: profile}, memory=memory_estimate(workload))
    return predict_step(calibration, contender, workers, "loopback").memory


@pytest.mark.timeout(120)
def test_prediction_matches_the_measured_breakdown(ddp_run, tmp_path, regression_csv) -> None:
    config, run = ddp_run
    single_config = _config(tmp_path, regression_csv, "single")
    single = fit(single_config).summary["memory"][0]
    for measured, predicted in ((single, _predicted(single_config, "single", 1)),
                                *((rank, _predicted(config, "ddp", 2)) for rank in run.summary["memory"])):
        # Model state: the prediction leaves out Adam's 4-byte step scalars (24 bytes here): within 1%.
        assert predicted.model_state_bytes == pytest.approx(measured["model_state_bytes"], rel=0.01)
        assert predicted.parameters_bytes == measured["parameters_bytes"]
        assert predicted.gradients_bytes == measured["gradients_bytes"]
        # Activations: predicted by the run's own definition (leaf outputs per row x batch): within 10%.
        assert predicted.activations_bytes == pytest.approx(measured["activations_bytes"], rel=0.1)
    # The whole process (Python, torch, gloo, the data) against the measured peak resident set, for the
    # ddp workers only: they are fresh processes, while the one-process run's peak is this test process's,
    # which ran other tests first. The prediction's per-process allowance is a floor; within a factor of 2.
    for measured in run.summary["memory"]:
        predicted = _predicted(config, "ddp", 2)
        assert 0.5 < measured["peak_bytes"] / predicted.total_bytes < 2.0, (measured, predicted)
