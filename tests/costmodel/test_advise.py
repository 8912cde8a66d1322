"""`paratrain advise`: ranks every contender for 64 workers without starting a process; bad input is one line."""

from __future__ import annotations

import json
import subprocess

import pytest

from paratrain.cli import main
from paratrain.costmodel.calibrate import workload_from_config
from paratrain.config import FitConfig
from paratrain.strategies import advise_contenders, default_contenders, split_contender, strategy_class
from tests.conftest import regression_frame
from tests.costmodel.helpers import synthetic


@pytest.fixture
def calibrated(tmp_path):
    """A data file, a config for it, and a calibration with that model's fingerprint."""
    data = tmp_path / "data.csv"
    regression_frame(rows=400).to_csv(data, index=False)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(f"path: {data}\ntarget: y\nhidden: [32, 32]\nbatch_size: 64\nepochs: 4\n")
    config = FitConfig.from_dict({"path": str(data), "target": "y", "hidden": [32, 32], "batch_size": 64})
    fingerprint = workload_from_config(config).fingerprint()
    calibration = synthetic(layers=fingerprint.layers, parameters=fingerprint.parameters, batch=64)
    path = tmp_path / "calib.json"
    calibration.save(path)
    return config_path, path


def test_advise_64_workers_ranks_without_starting_a_process(calibrated, monkeypatch, capsys) -> None:
    config_path, calibration = calibrated

    def refuse(*args, **kwargs):
        raise AssertionError("advise started a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    import paratrain.launch.local as local

    monkeypatch.setattr(local, "launch_local", refuse)
    status = main(["advise", "--config", str(config_path), "--workers", "64", "--bandwidth", "10gbit",
                   "--latency", "50us", "--price-per-hour", "3.06", "--calibration", str(calibration), "--json"])
    assert status == 0
    advice = json.loads(capsys.readouterr().out)
    ranked = [row["contender"] for row in advice["ranked"]]
    # A strategy that cannot span machines (hogwild's shared memory) is left out at 64 workers.
    spanning = {c for c in advise_contenders() if strategy_class(split_contender(c)[0]).runs_across_hosts}
    assert set(ranked) == spanning
    times = [row["time_to_target_s"] for row in advice["ranked"]]
    assert times == sorted(times)
    for row in advice["ranked"]:
        assert row["step_s"] > 0 and row["samples_per_s"] > 0 and row["memory_bytes"] > 0
        assert row["reason"] and row["cost"] is not None
        assert row["instances"] == (64 if row["workers"] == 64 else 1)


def test_advise_table_and_verdict(calibrated, capsys) -> None:
    config_path, calibration = calibrated
    assert main(["advise", "--config", str(config_path), "--workers", "2", "--calibration", str(calibration)]) == 0
    out = capsys.readouterr().out
    assert "ranked by predicted time to target" in out
    assert out.strip().splitlines()[-1]  # the verdict line


@pytest.mark.parametrize("flags, field", [
    (["--bandwidth", "fast"], "bandwidth='fast'"),
    (["--latency", "x"], "latency='x'"),
    (["--workers", "0"], "workers='0'"),
    (["--bandwidth", "0mbit"], "bandwidth='0mbit'"),
    (["--price-per-hour", "-1"], "price-per-hour='-1'"),
])
def test_bad_input_is_one_line(calibrated, flags, field, capsys) -> None:
    config_path, calibration = calibrated
    args = ["advise", "--config", str(config_path), "--workers", "4", "--calibration", str(calibration)]
    # The flag under test comes last and wins (argparse keeps the last value).
    assert main([*args, *flags]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paratrain: error: ") and field in lines[0]


def test_calibration_of_another_model_is_refused(calibrated, tmp_path, capsys) -> None:
    config_path, _ = calibrated
    other = tmp_path / "other.json"
    synthetic().save(other)
    assert main(["advise", "--config", str(config_path), "--workers", "4", "--calibration", str(other)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "10-1024-1024-1" in err and "5-32-32-1" in err


def test_advise_without_calibration_probes_in_process(calibrated, monkeypatch, capsys, tmp_path) -> None:
    config_path, _ = calibrated
    monkeypatch.setenv("PARATRAIN_CACHE_DIR", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("advise started a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    assert main(["advise", "--config", str(config_path), "--workers", "8", "--bandwidth", "1gbit", "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["calibration"] == "probe" and advice["ranked"]
    assert list((tmp_path / "cache").rglob("probe-*.json"))  # cached for the next call
