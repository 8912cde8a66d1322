"""The strategy benchmark's own report: its Markdown table, the claims it checks, and its diagnostics.

The rows, plots and HTML that every bench shares come from analysis.py, render.py and plots.py
(``write_strategy_outputs``, below); this module keeps what only the strategy
benchmark's README figures need: the expectations (bytes saved, loss vs dense ddp, speed vs the
best single-process row) and the ceiling, probe and learning-rate-check findings.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any

from paratrain.bench.strategies import REFERENCE, StrategyBenchResult, bench_config, parameter_count

EFFICIENT = ("ddp-topk", "ddp-powersgd", "localsgd", "sparse")
"""The communication-efficient rows that should beat the best single-process row."""


@dataclass
class Expectation:
    """A claim from the issue, what was measured, and whether it holds (None: cannot tell)."""

    claim: str
    measured: str
    holds: bool | None



def expectations(result: StrategyBenchResult) -> list[Expectation]:
    config, runs, items = result.config, result.runs, []
    for key in ("ddp-topk", "ddp-powersgd", "sparse"):
        if key in runs:
            ratio, loss = result.dense_ratio(key), result.loss_vs_dense(key)
            label = runs[key].contender.label
            # topk:0.01 and sparse:0.01 send 8 bytes (index, value) per kept entry against dense's
            # 4: exactly 50x before k is rounded up (per bucket for topk), hence the 1% tolerance.
            items.append(Expectation(f"{label} sends >= 50x fewer bytes/step than ddp (after epoch 1; 1% tolerance)",
                                     _times(ratio) + f" (whole run {_times(result.dense_ratio(key, False))})",
                                     None if ratio is None else ratio >= 0.99 * 50))
            tail = _percent(result.loss_vs_dense(key, tail=True))
            items.append(Expectation(f"{label} final val_loss within 2% of ddp's",
                                     f"{_percent(loss)} (mean of the last 3 epochs: {tail})",
                                     None if loss is None else abs(loss - 1) <= 0.02))
    if "localsgd" in runs:
        ratio = result.dense_ratio("localsgd", False)
        items.append(Expectation(f"localsgd:{config.localsgd_period} sends {config.localsgd_period}x fewer bytes/step "
                                 "than ddp (whole run, within 5%)", _times(ratio),
                                 None if ratio is None else ratio >= 0.95 * config.localsgd_period))
    singles = result.single_process_keys()
    fast, single = result.best(EFFICIENT), result.best(singles)
    if any(key in runs for key in EFFICIENT) and singles:
        speedup = single[1] / fast[1] if fast and single else None
        measured = (f"{runs[fast[0]].contender.label} {fast[1]:.2f} s vs {runs[single[0]].contender.label} "
                    f"{single[1]:.2f} s: {_times(speedup)}" if speedup else "a row did not reach the target")
        items.append(Expectation("best of topk/powersgd/localsgd/sparse reaches the target >= 1.15x sooner than the best "
                                 "single-process row", measured, None if speedup is None else speedup >= 1.15))
    return items


def diagnostics(result: StrategyBenchResult) -> list[tuple[str, str]]:
    runs, out = result.runs, []
    fastest = max((runs[key] for key in result.single_process_keys()), key=lambda r: r.samples_per_s, default=None)
    for run in runs.values():
        c = run.contender
        if c.kind == "ceiling" and fastest is not None:
            out.append((c.label, f"{run.samples_per_s:,.0f} samples/s, {run.samples_per_s / fastest.samples_per_s:.2f}x "
                        f"the fastest single-process row ({fastest.contender.label}, {fastest.samples_per_s:,.0f}): "
                        f"the most throughput any {c.workers}-worker row can gain here"))
        if c.kind == "probe" and REFERENCE in runs:
            reference = runs[REFERENCE]
            mine, theirs = run.epochs_to_target(result.targets), reference.epochs_to_target(result.targets)
            out.append((c.label, f"epochs to target per repetition {_epochs(mine)} vs {_epochs(theirs)} for "
                        f"'{reference.contender.label}' (same threads, batch and data order, no delay); final "
                        f"val_loss {_percent(run.final_val_loss / reference.final_val_loss)} vs that row"))
        if c.kind == "lr-check" and "ddp" in runs:
            topk = runs.get("ddp-topk")
            also = (f"; {topk.contender.label}: {topk.final_val_loss:.4f} ({_percent(result.loss_vs_dense('ddp-topk'))})"
                    if topk is not None else "")
            out.append((c.label, f"dense ddp at the topk row's learning rate: final val_loss {run.final_val_loss:.4f} "
                        f"({_percent(result.loss_vs_dense(c.key))} vs ddp at lr {result.config.lr:g}){also}"))
    return out


def _epochs(values: list[float | None]) -> str:
    return " / ".join("never" if v is None else f"{v:.2f}" for v in values)


def markdown_report(result: StrategyBenchResult) -> str:
    """The config line, one row per contender, the expectations, and each row's loss curve."""
    config, target = result.config, result.targets
    lines = [_config_line(result), "",
             "| row | workers x threads | batch per worker (global) | samples/s | comm bytes/step after epoch 1 "
             "(whole run) | fewer bytes than ddp | training s to target (epochs) | final val_loss | vs ddp |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, run in result.runs.items():
        c, seconds = run.contender, run.seconds_to_target(target)
        epochs = [e for e in run.epochs_to_target(target) if e is not None]
        reached = f"{seconds:.2f} ({statistics.median(epochs):.2f})" if seconds is not None else "not reached"
        final, versus = f"{run.final_val_loss:.4f}", _percent(result.loss_vs_dense(key))
        if c.kind == "ceiling":  # unrelated models that never averaged: only the throughput means something
            reached, final, versus = "-", "-", "-"
        sent = f"{_bytes(run.bytes_per_step(True))} ({_bytes(run.bytes_per_step(False))})"
        lines.append(f"| {c.label} | {c.workers} x {c.threads} | {c.batch_size} ({c.global_batch}) "
                     f"| {run.samples_per_s:,.0f} | {sent} "
                     f"| {_times(result.dense_ratio(key))} | {reached} | {final} | {versus} |")
    lines += ["", "| expectation | measured | holds |", "|---|---|---|"]
    lines += [f"| {e.claim} | {e.measured} | {'-' if e.holds is None else ('yes' if e.holds else 'no')} |"
              for e in result.expectations()]
    found = result.diagnostics()
    if found:
        lines += ["", "| diagnostic row | what it measured |", "|---|---|"]
        lines += [f"| {claim} | {measured} |" for claim, measured in found]
    lines += ["", "| row | val_loss after each epoch (rep 1) | seconds of each epoch (rep 1) | fit() wall s |",
              "|---|---|---|---|"]
    for run in result.runs.values():
        losses = " ".join(f"{record['val_loss']:.4f}" for record in run.records[0])
        seconds = " ".join(f"{record['seconds']:.2f}" for record in run.records[0])
        walls = " ".join(f"{wall:.1f}" for wall in run.wall_seconds)
        lines.append(f"| {run.contender.label} | {losses} | {seconds} | {walls} |")
    return "\n".join(lines)


def _config_line(result: StrategyBenchResult) -> str:
    config, load = result.config, result.load_average
    return (f"Friedman #1 (noise {config.noise:g}), {config.rows:,} rows ({config.val_fraction:.0%} validation), MLP "
            f"{'-'.join(map(str, config.hidden))} ({parameter_count(config):,} parameters), "
            f"{'Adam' if config.optimizer == 'adam' else 'SGD (momentum 0.9)'} lr {config.lr:g} "
            + (f"(ddp topk and its check row: lr {config.resolved_topk_lr:g}) "
               if config.resolved_topk_lr != config.lr and {"ddp-topk", "ddp-at-topk-lr"} & set(result.runs) else "")
            + f"(schedule {config.schedule}), "
            f"{config.epochs} epochs, seed {config.seed}, {config.workers} workers per parallel row, "
            f"{config.reps} interleaved rep(s) (repetition r uses seed {config.seed}+r: its own initial weights, "
            f"validation split and data order), medians. samples/s: epochs after the first. Target val_loss "
            f"{' / '.join(f'{t:.4f}' for t in result.targets)} ({result.target_source}); time to target: training seconds until the "
            f"first validation at or below it ({config.evals_per_epoch} validations per epoch; validation time, "
            f"process start-up and data preparation excluded). Final val_loss: the saved "
            f"model's (localsgd and sparse average the workers' models after the last epoch; the per-epoch "
            f"figures below score each worker's own). "
            f"OMP_WAIT_POLICY={result.environment.get('omp_wait_policy')}. "
            f"Wall time {result.wall_seconds:.0f} s; load average {_load(load.get('start'))} at start, "
            f"{_load(load.get('end'))} at end ({result.environment.get('cores')} cores).")


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value - 1:+.1%}"


def _load(values: list[float] | None) -> str:
    return "?" if not values else "/".join(f"{value:.2f}" for value in values)


def write_strategy_outputs(result: StrategyBenchResult, out: str | os.PathLike) -> dict[str, Any]:
    """bench.json, report.md, report.html and the PNGs of a strategy benchmark, through bench's own
    analysis and reports (harness.write_outputs); returns what bench.json holds."""
    from paratrain.bench.harness import write_outputs
    from paratrain.bench.measurement import RunRecord

    config = bench_config(result.config, with_data=False)
    rows = [run.contender.to_row() for run in result.runs.values()]
    runs = [RunRecord(row.key, rep, records, run.saved_val_losses[rep], run.wall_seconds[rep],
                      load_average=run.load_average[rep])
            for row, run in zip(rows, result.runs.values()) for rep, records in enumerate(run.records)]
    return write_outputs(config, rows, runs, result.targets, result.target_source, out, result.wall_seconds,
                         result.load_average, result.environment)
