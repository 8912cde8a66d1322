"""`paratrain bench`: measure the rows, analyse them, write bench.json, the plots and the reports.

Example:
    >>> from paratrain.bench.harness import run_bench
    >>> from paratrain.bench.measurement import BenchConfig
    >>> config = BenchConfig.default(rows=10_000, hidden=(128, 128), contenders=["single", "ddp"], repeat=1)  # doctest: +SKIP
    >>> result = run_bench(config, "bench-out")  # doctest: +SKIP
    >>> result["rows"][0]["samples_per_s"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from paratrain.bench import plots
from paratrain.bench.analysis import RowResult, analyse, candidates_by_link, choose_targets
from paratrain.bench.contenders import BenchRow, build_rows
from paratrain.bench.measurement import BenchConfig, Progress, RunRecord, measure
from paratrain.bench.prediction import predicted_step_s
from paratrain.bench.render import BENCH_COLUMNS, MEMORY_COLUMNS, Report, Section, bench_table, memory_table, verdicts

BENCH_FILE = "bench.json"
NOTES = {
    "samples_per_s": "median over repetitions of each run's median samples/s after its first epoch; *_min_max: "
                     "the repetitions' extremes",
    "time_to_target_s": "training seconds until the first validation at or below the target (validations inside "
                        "epochs count); null when the median repetition never reached it; a repetition that never "
                        "reached it counts as the slowest",
    "measured_step_s": "rows per optimizer step (batch x workers) / samples_per_s",
    "compute_s_per_step": "measured: the step time of the no-comm row with the same workers (same processes, "
                          "nothing sent while training); one process: its own step time",
    "comm_s_per_step": "measured_step_s - compute_s_per_step, at least 0",
    "predicted_step_s": "the cost model's prediction from --calibration; null without one",
    "peak_memory_bytes": "the largest rank's peak: resident set on CPU (for a one-process row this is bench's own "
                         "process, which ran other rows before), allocated memory on CUDA",
    "scaling_efficiency": "samples_per_s / (workers x the 1-worker single row's samples_per_s)",
    "ties": "rows on the same link (or one process) whose min-max spreads of time to target overlap this row's",
}


def run_bench(config: BenchConfig, out: str | os.PathLike, progress: Progress | None = None,
              workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run bench and write its outputs into ``out``; returns what bench.json holds."""
    started, load_before = time.perf_counter(), list(os.getloadavg())
    rows = build_rows(config.contenders, config.workers, config.links)
    runs = measure(config, rows, progress, workdir)
    targets, source = choose_targets(config, rows, runs)
    return write_outputs(config, rows, runs, targets, source, out, wall_seconds=time.perf_counter() - started,
                         load_average={"start": load_before, "end": list(os.getloadavg())})


def write_outputs(config: BenchConfig, rows: Sequence[BenchRow], runs: Sequence[RunRecord], targets: Sequence[float],
                  target_source: str, out: str | os.PathLike, wall_seconds: float,
                  load_average: dict[str, list[float]], environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Analyse measured runs and write bench.json, the plots, report.md and report.html into ``out``."""
    from paratrain.bench.training import environment as machine
    from paratrain.train.checkpoint import save_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = analyse(config, rows, runs, targets)
    notes = _predict(config, results)
    document = {
        "workload": config.workload,
        "config": {"fit": config.fit, "epochs": config.epochs, "batch_size": config.rows_per_step,
                   "seed": config.seed, "contenders": config.contenders,
                   "workers": config.workers, "links": config.links, "repeat": config.repeat,
                   "max_seconds_per_run": config.max_seconds_per_run, "calibration": config.calibration},
        "environment": environment or {**machine(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "load_average": load_average,
        "wall_seconds": wall_seconds,
        "target_loss": statistics.median(targets), "targets": list(targets), "target_source": target_source,
        "notes": {**NOTES, **({"predictions": notes} if notes else {})},
        "rows": [result.to_dict() for result in results],
        "runs": [{"row": run.row, "rep": run.rep, "wall_seconds": run.wall_seconds, "budget_hit": run.budget_hit,
                  "load_average": run.load_average, "final_val_loss": run.final_val_loss, "records": run.records}
                 for run in runs],
    }
    save_json_atomic(document, out / BENCH_FILE)
    write_bench_reports(document, results, out)
    return document


def _predict(config: BenchConfig, results: Sequence[RowResult]) -> list[str]:
    notes = []
    for result in results:
        if result.row.kind == "strategy":
            result.predicted_step_s, why = predicted_step_s(config.calibration, result.row.spec, result.row.workers,
                                                            result.row.link)
            if why and config.calibration and why not in notes:
                notes.append(why)
    return notes


def write_bench_reports(document: dict[str, Any], results: Sequence[RowResult], out: Path) -> Report:
    """The plots, report.md and report.html of one bench run."""
    from paratrain.train.checkpoint import save_text_atomic

    target = document["target_loss"]
    images = [plots.throughput_vs_workers(results, out / "throughput_vs_workers.png"),
              plots.loss_vs_time(results, out / "val_loss_vs_time.png", target),
              plots.step_breakdown(results, out / "step_breakdown.png"),
              plots.predicted_vs_measured(results, out / "predicted_vs_measured.png")]
    config = document["config"]
    budget = config.get("max_seconds_per_run")
    env, load = document["environment"], document["load_average"]
    intro = [f"Workload: {document['workload']}; {config.get('epochs')} epochs, batch {config.get('batch_size', 256)} per "
             f"worker, {config['repeat']} interleaved repetition(s) (repetition r uses seed {config.get('seed', 0)}+r), "
             f"medians with min-max in brackets.",
             f"Target validation loss {_targets(document['targets'])} ({document['target_source']}).",
             f"{env.get('cores')} cores, torch {env.get('torch')}; load average "
             f"{'/'.join(f'{v:.2f}' for v in load['start'])} at start, {'/'.join(f'{v:.2f}' for v in load['end'])} "
             f"at end; wall time {document['wall_seconds']:.0f} s."]
    if budget:
        intro.append(f"Each run stops after the epoch in which its training seconds pass {budget:g}; a row that did not "
                     f"reach the target within that reads '>= {budget:g} (budget)'.")
    groups = candidates_by_link(results)
    report = Report("paratrain bench", [
        Section("Which row reaches the target first", intro + verdicts(groups)),
        Section("Rows", [_column_notes()], BENCH_COLUMNS, bench_table(results, config["repeat"], budget)),
        Section("Memory per rank", [_memory_notes()], MEMORY_COLUMNS, memory_table(results)),
        Section("Plots", [], images=[image for image in images if image is not None]),
    ])
    for note in document["notes"].get("predictions", []):
        report.sections[1].paragraphs.append(f"Predictions: {note}.")
    save_text_atomic(report.to_markdown(), out / "report.md")
    save_text_atomic(report.to_html(), out / "report.html")
    return report


def _targets(targets: Sequence[float]) -> str:
    return " / ".join("-" if not math.isfinite(t) else f"{t:.4g}" for t in targets)


def _memory_notes() -> str:
    return ("The rank holding the most model state, last epoch of the last repetition. Parameters, gradients and "
            "optimizer state are counted from the tensors that rank holds; activations are estimated (leaf-layer "
            "outputs of one step, times the share alive at once); the peak is measured (resident set on a CPU, "
            "which includes the Python process and libraries; allocator peak on CUDA). Pipeline bubble: "
            "(S-1)/(M+S-1) expected, and the measured idle fraction of each stage.")


def _column_notes() -> str:
    return ("samples/s: median of the epochs after the first. Time to target: training seconds to the first "
            "validation at or below the target ('never' for a repetition that did not reach it: it counts as the "
            "slowest). Step ms: measured; compute ms: the no-comm row's step at the same workers; comm ms: the rest. "
            "Scaling efficiency: against workers x the 1-worker single row. Rows tie when their min-max spreads of "
            "time to target overlap. The ceiling row's models never average: only its speed means something.")
