"""`paratrain bench` end to end at a tiny size, and `paratrain report` on fit's run directories.

No speed is asserted: on a shared machine that is the benchmark's job, not a test's.
"""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from paratrain.bench.plots import FIGURE_SIZE
from tests.conftest import regression_frame, run_cli

REQUIRED = {"strategy", "workers", "link", "samples_per_s", "time_to_target_s", "final_val_loss", "measured_step_s",
            "predicted_step_s", "comm_bytes_per_step", "peak_memory_bytes", "compute_s_per_step", "comm_s_per_step",
            "converged", "scaling_efficiency", "ties"}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (bytes 16-24), after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


@pytest.mark.timeout(240)
def test_tiny_bench_writes_bench_json_reports_and_plots(tmp_path):
    data = tmp_path / "data.csv"
    regression_frame(rows=600).to_csv(data, index=False)
    out = tmp_path / "out"
    done = run_cli("bench", "--data", str(data), "--target", "y", "--hidden", "8", "--epochs", "2",
                   "--evals-per-epoch", "2", "--strategies", "single,ddp", "--workers", "1,2", "--repeat", "1",
                   "--out", str(out), timeout=230)
    assert done.returncode == 0, done.stderr
    assert "[4/4]" in done.stderr and "ETA" in done.stderr  # plain progress lines: stderr is not a terminal

    document = json.loads((out / "bench.json").read_text())
    rows = {(row["strategy"], row["workers"], row["link"]): row for row in document["rows"]}
    # single on one process; ddp, the torch-ddp reference and the no-communication ceiling on two.
    assert set(rows) == {("single", 1, None), ("ddp", 2, "loopback"), ("torch-ddp", 2, "loopback"), ("no-comm", 2, None)}
    for row in rows.values():
        assert REQUIRED <= set(row)
        assert row["samples_per_s"] > 0 and row["measured_step_s"] > 0 and row["peak_memory_bytes"] > 0
        assert row["predicted_step_s"] is None  # no --calibration
    ddp = rows[("ddp", 2, "loopback")]
    assert ddp["comm_bytes_per_step"] > 0 and ddp["final_val_loss"] > 0
    assert ddp["compute_s_per_step"] == pytest.approx(rows[("no-comm", 2, None)]["measured_step_s"])
    assert ddp["comm_s_per_step"] == pytest.approx(max(0.0, ddp["measured_step_s"] - ddp["compute_s_per_step"]))
    assert rows[("single", 1, None)]["scaling_efficiency"] == pytest.approx(1.0)
    assert rows[("single", 1, None)]["converged"] is True  # the automatic target comes from this row
    assert {"fit", "contenders", "workers", "links", "repeat"} <= set(document["config"])
    assert document["environment"]["cores"] >= 1 and len(document["targets"]) == 1

    markdown = (out / "report.md").read_text()
    assert "| row | workers | link | samples/s |" in markdown and "| torch-ddp (reference) | 2 | loopback |" in markdown
    parser = _Tags()
    parser.feed((out / "report.html").read_text())
    # The rows table, and the memory table with a row for each row trained by paratrain's loop (not torch-ddp).
    with_memory = [row for row in document["rows"] if row["memory"]]
    assert {row["strategy"] for row in with_memory} == {"single", "ddp", "no-comm"}
    assert all(row["memory"]["parameters_bytes"] > 0 and row["memory"]["optimizer_bytes"] > 0 for row in with_memory)
    assert "## Memory per rank" in markdown
    assert parser.tags.count("table") == 2 and parser.tags.count("tr") == 2 + len(rows) + len(with_memory)
    assert parser.images and all(src.startswith("data:image/png;base64,") for src in parser.images)
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"throughput_vs_workers.png", "val_loss_vs_time.png", "step_breakdown.png"}
    assert not (out / "predicted_vs_measured.png").exists()  # nothing predicted, nothing drawn
    for png in pngs:
        assert png_size(png) == FIGURE_SIZE
        assert f"]({png.name})" in markdown
    assert len(parser.images) == len(pngs)


@pytest.mark.timeout(120)
def test_report_puts_two_fit_run_directories_side_by_side(tmp_path):
    from paratrain.cli import main
    from paratrain.config import FitConfig
    from paratrain.train.fit import fit

    frame = regression_frame(rows=300)
    runs = []
    for name, lr in (("slow", 1e-4), ("fast", 1e-2)):
        result = fit(FitConfig.from_dict({"target": "y", "hidden": [8], "epochs": 2, "lr": lr, "verbosity": 0,
                                          "checkpoint_every": 0, "out": str(tmp_path / name)}), data=frame)
        runs.append(result.run_dir)
        assert result.summary["peak_memory_bytes"] > 0  # fit records peak memory per epoch and in the summary
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| slow | single | 1 | 2 |" in markdown and "| fast | single | 1 | 2 |" in markdown
    parser = _Tags()
    parser.feed((tmp_path / "report" / "report.html").read_text())
    assert "table" in parser.tags and len(parser.images) == 2
    for name in ("loss_curves.png", "throughput.png"):
        assert png_size(tmp_path / "report" / name) == FIGURE_SIZE


def test_report_refuses_a_missing_or_foreign_directory_in_one_line(tmp_path, capsys):
    from paratrain.cli import main

    (tmp_path / "empty").mkdir()
    for path, words in ((tmp_path / "missing", "must exist"), (tmp_path / "empty", "must hold metrics.jsonl")):
        assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("paratrain: error: run directory") and words in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("strategies, words", [("single,nccl", "strategies='nccl'"),
                                               ("hogwild+topk:0.01", "takes no compression")])
def test_bad_strategies_are_one_line_naming_the_field(tmp_path, capsys, strategies, words):
    from paratrain.cli import main

    status = main(["bench", "--strategies", strategies, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 1 and err.startswith("paratrain: error: strategies=") and words in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_fit_config_file_is_the_workload_and_bench_sets_the_rows_own_fields(tmp_path):
    import yaml

    from paratrain.bench.cli import build_bench_config
    from paratrain.cli import build_parser

    data = tmp_path / "data.csv"
    regression_frame(rows=100).to_csv(data, index=False)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"data": {"path": str(data), "target": "y"}, "train": {"epochs": 3},
                                           "parallel": {"strategy": "hogwild", "workers": 4}, "out": "elsewhere"}))
    args = build_parser().parse_args(["bench", "--config", str(config_file), "--strategies", "single,ddp",
                                      "--workers", "1,2", "--batch-size", "32", "--out", str(tmp_path / "out")])
    config = build_bench_config(args)
    assert config.epochs == 3 and config.rows_per_step == 32 and config.resolved.train.evals_per_epoch == 4
    assert config.resolved.parallel.strategy == "single" and config.resolved.parallel.workers == 1  # the rows set these
    assert config.contenders == ["single", "ddp"] and config.workers == [1, 2] and config.links == ["loopback"]
    assert config.repeat == 3 and config.data is None and str(data) in config.workload


@pytest.mark.timeout(120)
def test_a_run_stopped_by_the_budget_before_the_target_counts_as_not_converged(tmp_path):
    from paratrain.bench.harness import run_bench
    from paratrain.bench.measurement import BenchConfig

    config = BenchConfig(fit={"target": "y", "hidden": [8], "epochs": 3, "evals_per_epoch": 1}, data=regression_frame(300),
                         contenders=["single"], workers=[1], repeat=1, target_loss=1e-9, max_seconds_per_run=1e-6)
    document = run_bench(config, tmp_path / "out", workdir=tmp_path / "runs")
    (row,) = document["rows"]
    assert row["stopped_by_budget"] and not row["converged"] and row["time_to_target_s"] is None
    (run,) = document["runs"]
    assert len(run["records"]) == 1  # stopped after the epoch that passed the budget
    assert "| single | 1 | - |" in (tmp_path / "out" / "report.md").read_text()
    assert ">= 1e-06 (budget)" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.timeout(120)
def test_a_row_that_diverges_is_reported_and_the_benchmark_goes_on(tmp_path):
    from paratrain.bench.harness import run_bench
    from paratrain.bench.measurement import BenchConfig

    fit = {"target": "y", "hidden": [8], "epochs": 2, "evals_per_epoch": 1, "optimizer": "sgd", "lr": 1e12}
    config = BenchConfig(fit=fit, data=regression_frame(300), contenders=["single"], workers=[1], repeat=2,
                         target_loss=0.5)
    document = run_bench(config, tmp_path / "out", workdir=tmp_path / "runs")
    (row,) = document["rows"]
    assert len(row["errors"]) == 2 and all("diverg" in e.lower() or "nan" in e.lower() for e in row["errors"])
    assert not row["converged"] and row["time_to_target_s"] is None
    assert "| diverged |" in (tmp_path / "out" / "report.md").read_text()
