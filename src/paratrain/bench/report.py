"""The training benchmark as Markdown tables: a headline table, then one row per contender."""

from __future__ import annotations

import statistics

from paratrain.bench.results import ThroughputRun, TimeToTarget
from paratrain.bench.training import TrainingBenchResult


def markdown_report(result: TrainingBenchResult) -> str:
    """The config line, the three comparisons, and the details behind them."""
    config = result.config
    lines = [
        f"Friedman #1, {config.rows:,} rows, MLP {'-'.join(map(str, config.hidden))}, batch {config.batch_size}, "
        f"Adam lr {config.lr:g}, {config.resolved_threads} threads; throughput: {config.reps} interleaved reps x "
        f"{config.epochs_per_rep} epochs (first epoch of each rep not counted), medians; time to R² >= "
        f"{config.target_r2}: {config.target_reps} interleaved reps, cap {config.max_epochs} epochs, "
        f"{config.test_fraction:.0%} held out. Wall time {result.wall_seconds:.0f} s; load average "
        f"{_load(result.load_average.get('start'))} at start, {_load(result.load_average.get('end'))} at end.",
        "",
        "| comparison | paratrain | baseline | result | goal |",
        "|---|---|---|---|---|",
        _overhead_row(result),
        _target_row(result),
        _ddp_row(result),
        "",
        "| run | workers x threads | rows/epoch | median s/epoch | min-max s/epoch | median samples/s | epochs counted |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in (result.paratrain_single, result.plain_torch, result.paratrain_ddp):
        lines.append(_throughput_row(run))
    lines += [
        "",
        "| time to target | median seconds | median epochs | median wall s (set-up, scoring) | R² after each epoch (first rep) | seconds count |",
        "|---|---|---|---|---|---|",
        _target_detail_row(result.paratrain_target),
        _target_detail_row(result.sklearn_target),
    ]
    return "\n".join(lines)


def _overhead_row(result: TrainingBenchResult) -> str:
    mine, theirs = result.paratrain_single, result.plain_torch
    paired = ", ".join(f"{value:+.1%}" for value in result.paired_overheads)
    return (f"| single vs plain PyTorch, s/epoch | {mine.median_epoch_seconds:.3f} s | {theirs.median_epoch_seconds:.3f} s "
            f"| overhead {result.overhead:+.1%} (per rep: {paired}; fastest epochs: {result.best_epoch_overhead:+.1%}) "
            "| <= +5% |")


def _target_row(result: TrainingBenchResult) -> str:
    mine, theirs = result.paratrain_target, result.sklearn_target
    ratio = result.sklearn_over_paratrain
    verdict = f"sklearn / paratrain = {ratio:.2f}x" if ratio is not None else "not reached by both: no ratio"
    paired = [f"{value:.2f}x" for value in result.paired_sklearn_over_paratrain if value is not None]
    if paired:
        verdict += f" (per rep: {', '.join(paired)})"
    return (f"| time to test R² >= {result.config.target_r2} vs sklearn | {_target_cell(mine)} | {_target_cell(theirs)} "
            f"| {verdict} | >= 4x |")


def _ddp_row(result: TrainingBenchResult) -> str:
    single, ddp = result.paratrain_single, result.paratrain_ddp
    paired = ", ".join(f"{value:.2f}x" for value in result.paired_ddp_over_single)
    return (f"| ddp x{ddp.workers} vs single, samples/s | ddp {ddp.median_samples_per_s:,.0f} "
            f"| single {single.median_samples_per_s:,.0f} | ddp / single = {result.ddp_over_single:.2f}x "
            f"(per rep: {paired}) | reported |")


def _throughput_row(run: ThroughputRun) -> str:
    measured = run.measured_seconds
    return (f"| {run.name} | {run.workers} x {run.threads_per_worker} | {run.rows_per_epoch:,} "
            f"| {run.median_epoch_seconds:.3f} | {min(measured):.3f}-{max(measured):.3f} "
            f"| {run.median_samples_per_s:,.0f} | {len(measured)} |")


def _target_cell(target: TimeToTarget) -> str:
    if not target.reached_every_time:
        reached = sum(run.epochs_to_target is not None for run in target.runs)
        return f"not reached ({reached}/{len(target.runs)} reps)"
    return f"{target.median_seconds_to_target:.2f} s ({target.median_epochs_to_target:g} ep)"


def _target_detail_row(target: TimeToTarget) -> str:
    seconds = target.median_seconds_to_target
    epochs = target.median_epochs_to_target
    first = target.runs[0].r2_by_epoch if target.runs else []
    wall = statistics.median(run.wall_seconds for run in target.runs) if target.runs else float("nan")
    return (f"| {target.name} | {'-' if seconds is None else f'{seconds:.2f}'} | {'-' if epochs is None else f'{epochs:g}'} "
            f"| {wall:.2f} | {', '.join(f'{r2:.4f}' for r2 in first)} | {target.note} |")


def _load(values: list[float] | None) -> str:
    return "?" if not values else "/".join(f"{value:.2f}" for value in values)
