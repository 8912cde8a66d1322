"""`fit --strategy auto` end to end, and a real (tiny, short) `paratrain calibrate`."""

from __future__ import annotations

import json
import time

import pytest

from paratrain.config import FitConfig
from paratrain.costmodel.calibrate import workload_from_config
from paratrain.costmodel.calibration import load_calibration
from paratrain.errors import ConfigError
from paratrain.strategies import default_contenders
from paratrain.train.fit import fit
from tests.conftest import regression_frame, run_cli
from tests.costmodel.helpers import synthetic


def _config(tmp_path, **extra) -> FitConfig:
    data = tmp_path / "data.csv"
    regression_frame(rows=300).to_csv(data, index=False)
    return FitConfig.from_dict({"path": str(data), "target": "y", "hidden": [16], "batch_size": 32, "epochs": 1,
                                "verbosity": 0, "checkpoint_every": 0, **extra})


def test_auto_is_a_strategy_config_accepts_without_compress(tmp_path) -> None:
    assert _config(tmp_path, strategy="auto", workers=2).parallel.strategy == "auto"
    with pytest.raises(ConfigError, match="compress='topk:0.01' cannot be combined with strategy='auto'"):
        _config(tmp_path, strategy="auto", workers=2, compress="topk:0.01")


@pytest.mark.timeout(240)
def test_fit_auto_records_choice_and_reason(tmp_path) -> None:
    config = _config(tmp_path, strategy="auto", workers=2, out=str(tmp_path / "run"))
    fingerprint = workload_from_config(config.updated({"strategy": "single", "workers": 1})).fingerprint()
    # Compute that is cheap for two concurrent workers: data parallelism pays, so a 2-worker contender wins.
    calibration = synthetic(layers=fingerprint.layers, parameters=fingerprint.parameters, batch=32, step=0.05)
    path = tmp_path / "calib.json"
    calibration.save(path)
    result = fit(config.updated({"calibration": str(path)}))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["strategy_choice"] in default_contenders()
    assert summary["strategy_reason"].startswith(summary["strategy_choice"])
    assert "predicted fastest" in summary["strategy_reason"]
    stored = (result.run_dir / "config.yaml").read_text()
    assert "strategy: auto" not in stored  # the run holds the resolved strategy, so --resume reruns the same


def test_fit_auto_refuses_a_calibration_of_another_model(tmp_path) -> None:
    path = tmp_path / "calib.json"
    synthetic().save(path)
    config = _config(tmp_path, strategy="auto", workers=2, calibration=str(path), out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="10-1024-1024-1"):
        fit(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(120)
def test_calibrate_cli_keeps_its_budget_and_writes_the_file(tmp_path) -> None:
    data = tmp_path / "data.csv"
    regression_frame(rows=300).to_csv(data, index=False)
    out = tmp_path / "calib.json"
    started = time.monotonic()
    result = run_cli("calibrate", "--data", str(data), "--target", "y", "--hidden", "16", "--batch-size", "32",
                     "--workers", "2", "--budget-s", "15", "--out", str(out), timeout=110)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    calibration = load_calibration(out)
    assert calibration.elapsed_s <= 15 + 1
    # The budget counts from when measuring starts; starting Python, importing torch and reading
    # the data come on top (tens of seconds on a loaded 2-core machine).
    assert elapsed < 100
    assert 1 in calibration.compute and calibration.measured
    assert calibration.fingerprint.layers == (5, 16, 1) and calibration.fingerprint.batch_size == 32
    assert "paratrain: wrote" in result.stderr
    if 2 in calibration.compute:  # a loaded machine may not start 2 workers within 15 s; then it says so
        assert "loopback" in calibration.collectives
    else:
        assert any("2 workers" in line for line in calibration.measured)


def test_calibrate_bad_budget_is_one_line(tmp_path, capsys) -> None:
    from paratrain.cli import main

    assert main(["calibrate", "--data", "x.csv", "--target", "y", "--budget-s", "600", "--out",
                 str(tmp_path / "c.json")]) == 1
    assert capsys.readouterr().err.strip() == "paratrain: error: budget-s=600.0 must be > 0 and <= 60"


def test_calibrate_says_when_links_cannot_be_emulated(tmp_path) -> None:
    from paratrain.costmodel.calibrate import calibrate, link_launch_supported
    from paratrain.launch.links import parse_links

    config = _config(tmp_path)
    calibration = calibrate(workload_from_config(config), workers=(1,), links=parse_links("loopback,1gbit"),
                            budget_s=10)
    assert 1 in calibration.compute
    if not link_launch_supported():
        assert any(line.startswith("skipped links 1gbit") for line in calibration.measured)
