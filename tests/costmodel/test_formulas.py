"""The cost model on closed-form cases: a calibration with known alpha, beta and compute."""

from __future__ import annotations

import math

import pytest

from paratrain.costmodel.calibration import CollectiveFit
from paratrain.costmodel.fitting import collective_time
from paratrain.costmodel.network import Network
from paratrain.costmodel.predict import predict_step
from paratrain.errors import ConfigError
from tests.costmodel.helpers import PARAMETERS, synthetic

ALPHA, BETA = 1e-4, 1e-9


def machines(bits_per_s: float, latency_s: float = ALPHA) -> Network:
    return Network("net", bits_per_s / 8, latency_s, shared_machine=False)


@pytest.mark.parametrize("p", [2, 4, 64])
def test_ring_all_reduce_formula(p: int) -> None:
    fit = CollectiveFit(ALPHA, BETA)
    n = 4 * 2**20
    assert collective_time(fit, "all_reduce", p, n) == pytest.approx(2 * (p - 1) * ALPHA + 2 * (p - 1) / p * n * BETA)
    assert collective_time(fit, "all_reduce", 1, n) == 0.0


def test_ddp_with_one_bucket_exposes_the_whole_all_reduce() -> None:
    # A model under DDP's 1 MiB first bucket: nothing overlaps, comm is the ring formula.
    parameters = 1000 * 100 + 100
    calibration = synthetic(layers=(1000, 100), parameters=parameters)
    p = 8
    prediction = predict_step(calibration, "ddp", p, "loopback")
    n = 4 * parameters
    assert prediction.comm_s == pytest.approx(2 * (p - 1) * ALPHA + 2 * (p - 1) / p * n * BETA)
    assert prediction.step_s == pytest.approx(prediction.compute_s + prediction.comm_s)
    assert prediction.comm_bytes == n


def test_ddp_overlaps_all_but_the_last_bucket() -> None:
    # 4 MiB of gradients: DDP's first 1 MiB bucket (the last layers, ready first) is hidden by the
    # rest of the backward pass; the remaining 3 MiB, ready when backward ends, is exposed.
    calibration = synthetic(beta=1e-10)
    prediction = predict_step(calibration, "ddp", 2, "loopback")
    fit = CollectiveFit(ALPHA, 1e-10)
    total = 4.0 * PARAMETERS
    last = collective_time(fit, "all_reduce", 2, total - 2**20)
    assert prediction.comm_s == pytest.approx(last)
    assert prediction.comm_s < collective_time(fit, "all_reduce", 2, total)


def test_powersgd_is_three_sequential_latency_bound_all_reduces() -> None:
    # Pure latency (beta 0): three all-reduces in a row, each 2(p-1) alpha.
    calibration = synthetic(alpha=1e-3, beta=0.0)
    p = 16
    prediction = predict_step(calibration, "ddp+powersgd:4", p, "loopback")
    assert prediction.comm_s == pytest.approx(3 * 2 * (p - 1) * 1e-3)
    assert "latency-bound" in prediction.reason
    rows_cols = [(1024, 10), (1024, 1024), (1, 1024)]
    compressed = sum((r + c) * 4 for r, c in rows_cols if (r + c) * 4 * 2 < r * c)
    assert prediction.comm_bytes < 4 * PARAMETERS / 50
    assert prediction.comm_bytes >= 4 * compressed


def test_localsgd_amortizes_one_average_over_its_period() -> None:
    calibration = synthetic()
    network = machines(1e9)
    every_step = predict_step(calibration, "localsgd:1", 4, network)
    every_eighth = predict_step(calibration, "localsgd:8", 4, network)
    assert every_eighth.comm_s == pytest.approx(every_step.comm_s / 8)
    assert every_eighth.comm_bytes == pytest.approx(4 * PARAMETERS / 8)


def test_parameter_server_fan_in_sets_the_pace_with_many_workers() -> None:
    calibration = synthetic()
    network = machines(1e9, latency_s=0.0)
    few = predict_step(calibration, "async", 2, network)
    many = predict_step(calibration, "async", 64, network)
    n = 4.0 * PARAMETERS
    fit = calibration.compute[1]
    push = 25e-6 + n * 8 / 1e9  # latency term: half of loopback's alpha; beta: the wire
    assert many.step_s == pytest.approx(63 * (ALPHA / 2 + n * 8 / 1e9) + 64 * fit.optimizer_s)
    assert "fan-in" in many.reason and "fan-in" not in few.reason
    assert push > 0


def test_all_gather_traffic_grows_with_workers() -> None:
    calibration = synthetic(alpha=0.0)
    network = machines(1e9, latency_s=0.0)
    for contender in ("ddp+topk:0.01", "sparse:0.01"):
        two = predict_step(calibration, contender, 2, network)
        many = predict_step(calibration, contender, 33, network)
        # (p-1) peers' payloads arrive at each rank: 32x the traffic time of one peer.
        assert many.comm_bytes == two.comm_bytes
        gather_two = collective_time(CollectiveFit(0.0, 8 / 1e9), "all_gather", 2, two.comm_bytes)
        gather_many = collective_time(CollectiveFit(0.0, 8 / 1e9), "all_gather", 33, two.comm_bytes)
        assert gather_many == pytest.approx(32 * gather_two)
    topk_many = predict_step(calibration, "ddp+topk:0.01", 33, network)
    assert topk_many.comm_s > 30 * predict_step(calibration, "ddp+topk:0.01", 2, network).comm_s


def test_workers_sharing_cores_slow_down_each_step() -> None:
    calibration = synthetic()
    two = predict_step(calibration, "hogwild", 2, "loopback")
    four = predict_step(calibration, "hogwild", 4, "loopback")
    assert two.compute_s == pytest.approx(calibration.compute[2].step_s)
    assert four.compute_s == pytest.approx(2 * calibration.compute[2].step_s)  # 4 workers on 2 cores: half a core each


def test_single_ignores_workers_and_hogwild_refuses_separate_machines() -> None:
    calibration = synthetic()
    assert predict_step(calibration, "single", 8, "loopback").workers == 1
    with pytest.raises(ConfigError, match="one machine"):
        predict_step(calibration, "hogwild", 4, machines(1e10))
    with pytest.raises(ConfigError, match="workers=0"):
        predict_step(calibration, "ddp", 0, "loopback")
    assert math.isfinite(predict_step(calibration, "ddp", 64, 10e9).samples_per_s)


def test_advise_says_when_more_workers_do_not_pay() -> None:
    from dataclasses import replace

    from paratrain.costmodel.advise import advise

    calibration = synthetic()
    # Two workers on two cores each step 2.5x slower than one process with both cores: no gain here.
    calibration.compute[2] = replace(calibration.compute[2], step_s=0.05, forward_backward_s=0.045)
    advice = advise(calibration, Network("loopback"), 2, 1e6)
    assert advice.best.prediction.contender == "single"
    assert advice.verdict.startswith("on this machine one process with 2 threads is fastest")
    assert "data parallelism pays from" in advice.verdict and "10 Gbit/s" in advice.verdict
