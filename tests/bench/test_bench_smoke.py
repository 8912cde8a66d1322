"""The training benchmark runs end to end at a tiny size and reports well-formed figures.

No speed is asserted: on a shared machine that is the benchmark's job, not a test's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from paratrain.bench import TrainingBenchConfig, markdown_report, run_training_benchmark
from paratrain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _tiny(**overrides) -> TrainingBenchConfig:
    # A target every run reaches after its first epoch, so every ratio exists.
    values = {"rows": 3000, "reps": 1, "epochs_per_rep": 2, "target_reps": 1, "max_epochs": 3,
              "target_r2": -1e9, "hidden": (32, 32), "threads": 1}
    return TrainingBenchConfig.quick(**{**values, **overrides})


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.timeout(300)
def test_tiny_benchmark_reports_positive_timings_and_finite_ratios(tmp_path):
    lines: list[str] = []
    result = run_training_benchmark(_tiny(), progress=lines.append, workdir=tmp_path)

    for run in (result.paratrain_single, result.plain_torch, result.paratrain_ddp):
        assert len(run.epoch_seconds) == 1 and len(run.epoch_seconds[0]) == 2
        assert all(_positive(seconds) for seconds in run.epoch_seconds[0])
        assert _positive(run.median_samples_per_s)
    assert result.paratrain_single.rows_per_epoch == result.plain_torch.rows_per_epoch
    assert result.paratrain_ddp.workers == 2
    assert math.isfinite(result.overhead) and result.overhead > -1
    assert _positive(result.ddp_over_single)
    for target in (result.paratrain_target, result.sklearn_target):
        assert target.reached_every_time
        assert _positive(target.median_seconds_to_target)
    assert _positive(result.sklearn_over_paratrain)
    assert lines, "progress lines were reported"

    report = json.loads(json.dumps(result.to_dict()))  # plain JSON all the way down
    assert set(report) >= {"config", "environment", "overhead", "time_to_target", "ddp_vs_single"}
    assert report["time_to_target"]["paratrain"]["runs"][0]["epochs_to_target"] == 1
    table = markdown_report(result)
    assert "| single vs plain PyTorch" in table and "| ddp x2 vs single" in table


@pytest.mark.timeout(300)
def test_script_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--quick", "--rows", "2000",
               "--reps", "1", "--epochs", "2", "--target-reps", "1", "--max-epochs", "1", "--threads", "1",
               "--workdir", str(tmp_path / "runs"), "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    assert "| comparison | paratrain | baseline | result | goal |" in done.stdout
    assert "[bench]" in done.stderr
    report = json.loads(out.read_text())
    assert report["config"]["rows"] == 2000
    assert report["overhead"]["plain_torch"]["median_epoch_seconds"] > 0


@pytest.mark.parametrize("field, value", [("epochs_per_rep", 1), ("rows", 10), ("test_fraction", 0.7), ("threads", 0)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainingBenchConfig(**{field: value})
