"""The strategy benchmark runs end to end at a tiny size and reports well-formed figures.

No speed is asserted: on a shared machine that is the benchmark's job, not a test's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from paratrain.bench.strategies import (
    CONTENDER_KEYS,
    StrategyBenchConfig,
    run_strategy_benchmark,
    strategy_markdown_report,
    validations,
)
from paratrain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("single", "ddp", "ddp-topk", "localsgd")


def _tiny(**overrides) -> StrategyBenchConfig:
    values = {"rows": 2000, "hidden": (32,), "epochs": 2, "contenders": ROWS, "localsgd_period": 2}
    return StrategyBenchConfig.quick(**{**values, **overrides})


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.timeout(300)
def test_tiny_benchmark_reports_every_row(tmp_path):
    lines: list[str] = []
    result = run_strategy_benchmark(_tiny(), progress=lines.append, workdir=tmp_path)

    assert list(result.runs) == list(ROWS)
    for run in result.runs.values():
        assert len(run.records) == 1 and [r["epoch"] for r in run.records[0]] == [1, 2]
        assert _positive(run.samples_per_s) and _positive(run.final_val_loss)
        assert len(run.wall_seconds) == 1 and run.wall_seconds[0] > 0
    assert result.runs["single"].bytes_per_step() is None  # one process sends nothing
    for key in ("ddp", "ddp-topk", "localsgd"):
        assert _positive(result.runs[key].bytes_per_step()) and _positive(result.dense_ratio(key))
        assert result.runs[key].contender.workers == 2
    assert result.dense_ratio("ddp") == pytest.approx(1.0)
    assert result.dense_ratio("ddp-topk") > 10  # 1% of the entries at 8 bytes each
    # Four validations per epoch: three inside it (at steps 1/4, 2/4, 3/4 of the way), one at its end.
    single = result.runs["single"].records[0]
    assert [len(record["evals"]) for record in single] == [3, 3]
    # The automatic target is the reference's best loss by the middle epoch (1 of 2), x 1.05: reached by then.
    best = min(v.val_loss for v in validations(single) if v.epochs <= 1)
    assert result.target_loss == pytest.approx(best * 1.05)
    (reached,) = result.runs["single"].epochs_to_target(result.target_loss)
    assert 0 < reached <= 1
    seconds = result.runs["single"].seconds_to_target(result.target_loss)
    assert _positive(seconds) and seconds <= single[0]["train_seconds"] + 1e-9
    assert any("topk:0.01" in item.claim for item in result.expectations())
    assert lines, "progress lines were reported"

    report = json.loads(json.dumps(result.to_dict()))  # plain JSON all the way down
    assert set(report) >= {"config", "environment", "target_loss", "rows", "expectations", "load_average"}
    assert set(report["rows"]["ddp-topk"]) >= {"samples_per_s", "comm_bytes_per_step_after_epoch_1",
                                               "seconds_to_target", "final_val_loss", "records"}
    table = strategy_markdown_report(result)
    # With Adam the topk row trains at lr / sqrt(0.01), and says so.
    assert "| ddp topk:0.01, lr 0.01 | 2 x" in table and "| expectation | measured | holds |" in table
    assert "(ddp topk and its check row: lr 0.01)" in table


@pytest.mark.timeout(300)
def test_script_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_strategies.py"), "--quick", "--rows", "1500",
               "--hidden", "16", "--epochs", "2", "--only", "single-1t,ddp-powersgd", "--powersgd-warmup", "2",
               "--target-loss", "100", "--evals-per-epoch", "1", "--workdir", str(tmp_path / "runs"), "--json", str(out),
               "--out", str(tmp_path / "report")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    assert "| row | workers x threads |" in done.stdout and "| ddp powersgd:4 |" in done.stdout
    assert "[bench] config:" in done.stderr
    report = json.loads(out.read_text())
    assert report["config"]["rows"] == 1500 and report["target_loss"] == 100
    assert report["rows"]["single-1t"]["epochs_to_target"] == [1]
    assert report["rows"]["ddp-powersgd"]["comm_bytes_per_step_whole_run"] > 0
    # The same outputs as `paratrain bench`, from the same analysis and report code.
    bench = json.loads((tmp_path / "report" / "bench.json").read_text())
    rows = {(row["strategy"], row["workers"], row["link"]): row for row in bench["rows"]}
    assert set(rows) == {("single-1t", 1, None), ("ddp-powersgd", 2, "loopback")}
    assert rows[("ddp-powersgd", 2, "loopback")]["comm_bytes_per_step"] > 0
    assert rows[("single-1t", 1, None)]["time_to_target_s"] > 0 and bench["target_loss"] == 100
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "throughput_vs_workers.png").is_file()


def test_validations_put_those_inside_an_epoch_before_its_end_and_add_up_training_seconds():
    records = [
        {"train_seconds": 4.0, "val_loss": 0.5,
         "evals": [{"epoch_fraction": 0.25, "train_seconds": 1.0, "val_loss": 0.9},
                   {"epoch_fraction": 0.5, "train_seconds": 2.0, "val_loss": 0.7}]},
        {"train_seconds": 3.0, "val_loss": 0.4, "evals": [{"epoch_fraction": 0.5, "train_seconds": 1.5, "val_loss": 0.45}]},
        {"train_seconds": 3.0, "val_loss": 0.3},
    ]
    assert [(v.epochs, v.train_seconds, v.val_loss) for v in validations(records)] == [
        (0.25, 1.0, 0.9), (0.5, 2.0, 0.7), (1.0, 4.0, 0.5), (1.5, 5.5, 0.45), (2.0, 7.0, 0.4), (3.0, 10.0, 0.3)]

    from paratrain.bench.strategies import Contender, StrategyRun

    run = StrategyRun(Contender("single", "single", 1, 1, 8), records=[records])
    assert run.epochs_to_target(0.46) == [1.5] and run.seconds_to_target(0.46) == 5.5
    assert run.epochs_to_target(0.1) == [None] and run.seconds_to_target(0.1) is None
    assert run.best_val_losses_by(1) == [0.5]
    # One target per repetition: the second repetition has not reached its own.
    two = StrategyRun(Contender("single", "single", 1, 1, 8), records=[records, records[:1]])
    assert two.epochs_to_target([0.46, 0.6]) == [1.5, 1.0] and two.seconds_to_target([0.46, 0.3]) is None


@pytest.mark.timeout(300)
def test_repetitions_use_their_own_seed_and_target(tmp_path):
    result = run_strategy_benchmark(_tiny(contenders=("single-1t",), reps=2, evals_per_epoch=1),
                                    progress=lambda line: None, workdir=tmp_path)
    first, second = result.runs["single-1t"].records
    assert first[0]["val_loss"] != second[0]["val_loss"]  # seeds 0 and 1: other weights and split
    assert result.targets == pytest.approx([first[0]["val_loss"] * 1.05, second[0]["val_loss"] * 1.05])
    assert result.runs["single-1t"].epochs_to_target(result.targets) == [1.0, 1.0]


@pytest.mark.parametrize("field, value", [("epochs", 1), ("evals_per_epoch", 0), ("schedule", "linear"), ("workers", 1), ("contenders", ("ddp", "nccl")),
                                          ("topk_ratio", 0.0), ("topk_lr", 0.0), ("target_epoch", 9),
                                          ("target_slack", 0.5)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        StrategyBenchConfig(**{field: value})


def test_every_contender_key_builds_a_valid_fit_config():
    from paratrain.bench.strategies import build_contenders
    from paratrain.config import FitConfig

    for contender in build_contenders(StrategyBenchConfig()):
        assert contender.key in CONTENDER_KEYS
        FitConfig.from_dict({"target": "y", **contender.fields})  # validates strategy, compress, workers


def test_topk_row_trains_at_its_own_learning_rate_and_a_dense_row_checks_that_rate():
    from paratrain.bench.strategies import build_contenders

    from paratrain.config import FitConfig
    from paratrain.strategies import create_strategy
    from paratrain.train.optim import resolve_learning_rate

    def trained_lr(contender, config):
        fit_config = FitConfig.from_dict({"target": "y", "lr": config.lr, "optimizer": config.optimizer,
                                          **contender.fields})
        strategy = create_strategy(fit_config.parallel.strategy, fit_config.parallel)
        return resolve_learning_rate(fit_config, strategy).effective

    config = StrategyBenchConfig(lr=2e-3, topk_ratio=0.04)
    rows = {c.key: c for c in build_contenders(config)}
    # fit() applies lr / sqrt(ratio) with adam by default: the row passes no rate of its own.
    assert "lr" not in rows["ddp-topk"].fields
    assert trained_lr(rows["ddp-topk"], config) == pytest.approx(2e-3 / 0.2)
    given = StrategyBenchConfig(topk_lr=5e-3)
    given_row = {c.key: c for c in build_contenders(given)}["ddp-topk"]
    assert trained_lr(given_row, given) == pytest.approx(5e-3)  # a given topk_lr is not scaled again
    assert rows["ddp-topk"].label == "ddp topk:0.04, lr 0.01"
    check = rows["ddp-at-topk-lr"]
    assert check.kind == "lr-check" and check.fields["strategy"] == "ddp" and "compress" not in check.fields
    assert check.fields["lr"] == pytest.approx(1e-2)
    assert "lr" not in rows["ddp"].fields and "lr" not in rows["sparse"].fields  # the others share config.lr
    assert StrategyBenchConfig(optimizer="sgd").resolved_topk_lr == 1e-3  # SGD moves by the sum either way
    assert StrategyBenchConfig(topk_lr=5e-3).resolved_topk_lr == 5e-3
    assert rows["ddp-topk"].label.endswith("lr 0.01")
    plain = {c.key: c for c in build_contenders(StrategyBenchConfig(optimizer="sgd"))}
    assert plain["ddp-topk"].label == "ddp topk:0.01"


def test_the_check_row_is_reported_as_a_diagnostic_and_is_never_the_best():
    from paratrain.bench.strategies import StrategyBenchResult, StrategyRun, build_contenders

    config = StrategyBenchConfig(contenders=("single", "ddp", "ddp-topk", "ddp-at-topk-lr"))
    records = {"single": 0.10, "ddp": 0.10, "ddp-topk": 0.101, "ddp-at-topk-lr": 0.12}
    runs = {c.key: StrategyRun(c, records=[[{"train_seconds": 1.0, "val_loss": 0.2, "samples_per_s": 10.0},
                                            {"train_seconds": 1.0, "val_loss": records[c.key], "samples_per_s": 10.0}]],
                               saved_val_losses=[records[c.key]])
            for c in build_contenders(config)}
    # The check row reaches the target first (1 s), yet only topk counts among the efficient rows.
    runs["ddp-at-topk-lr"].records[0][0]["val_loss"] = 0.1
    result = StrategyBenchResult(config, runs, [0.105], "given")
    (found,) = [measured for row, measured in result.diagnostics() if row.startswith("ddp, lr 0.01 (topk's")]
    assert "final val_loss 0.1200 (+20.0% vs ddp at lr 0.001)" in found and "+1.0%" in found
    (speed,) = [e for e in result.expectations() if "1.15x" in e.claim]
    assert speed.measured.startswith("ddp topk:0.01, lr 0.01 2.00 s")
