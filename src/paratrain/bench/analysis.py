"""From bench's runs to its rows: medians with min-max, time to target, scaling, ties.

* **samples/s**: per repetition the median of the epochs after the first (a warm-up); the row's
  figure is the median over repetitions, with their min and max.
* **measured step time**: rows per optimizer step (batch x workers) / samples/s.
* **compute and communication per step, measured**: compute is the step time of the
  ``no-comm`` row with the same workers (the same processes and threads, nothing sent while
  training); communication is the row's step time minus that (at least 0). One-process rows
  are all compute. Nothing here comes from the cost model.
* **time to target**: training seconds until the first validation at or below the target
  (validations inside epochs count: sub-epoch resolution). A repetition that never reaches it
  counts as infinitely slow, not as missing: a row whose repetitions did not all converge has
  a median of infinity unless most did, and a max of infinity.
* **scaling efficiency**: samples/s / (workers x the 1-worker ``single`` row's samples/s).
* **ties**: two rows tie when their min-max spreads of time to target overlap; the report
  then names no winner between them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from paratrain.bench.contenders import BASELINE, CEILING, BenchRow
from paratrain.bench.measurement import BenchConfig, RunRecord

INF = math.inf


@dataclass(frozen=True)
class Validation:
    """One validation of a run: when (epochs and training seconds so far) and the loss."""

    epochs: float
    train_seconds: float
    val_loss: float


def validations(records: list[dict[str, Any]]) -> list[Validation]:
    """Every validation of one run in order: those inside each epoch (``evals``), then its end."""
    out, before = [], 0.0
    for index, record in enumerate(records):
        for inner in record.get("evals", []):
            out.append(Validation(index + inner["epoch_fraction"], before + inner["train_seconds"],
                                  inner["val_loss"]))
        before += record["train_seconds"]
        out.append(Validation(float(index + 1), before, record["val_loss"]))
    return out


@dataclass(frozen=True)
class Spread:
    """A median with the min and max it came from."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread | None":
        values = list(values)
        return cls(statistics.median(values), min(values), max(values)) if values else None

    def overlaps(self, other: "Spread") -> bool:
        """Whether the two min-max ranges share a point (infinite ends included)."""
        return self.low <= other.high and other.low <= self.high


def ties(spreads: dict[str, Spread]) -> dict[str, list[str]]:
    """For each key, the other keys whose spread overlaps its own (sorted)."""
    return {key: sorted(other for other, theirs in spreads.items() if other != key and mine.overlaps(theirs))
            for key, mine in spreads.items()}


def winner(spreads: dict[str, Spread]) -> tuple[str | None, list[str]]:
    """The row with the lowest median and the rows it ties with; (None, all) when nothing is finite."""
    finite = {key: s for key, s in spreads.items() if math.isfinite(s.median)}
    if not finite:
        return None, sorted(spreads)
    best = min(finite, key=lambda key: finite[key].median)
    return best, sorted(key for key, s in spreads.items() if key != best and s.overlaps(spreads[best]))


@dataclass
class RowResult:
    """Everything bench reports about one row."""

    row: BenchRow
    samples_per_s: Spread | None
    measured_step_s: Spread | None
    time_to_target_s: Spread | None
    """Infinity stands for a repetition that never reached the target."""
    reps_time_to_target_s: list[float]
    converged: bool
    final_val_loss: float | None
    comm_bytes_per_step: float | None
    peak_memory_bytes: int | None
    budget_hit: bool
    errors: list[str] = field(default_factory=list)
    """Why repetitions ended without a model (divergence), one line each."""
    compute_s_per_step: float | None = None
    comm_s_per_step: float | None = None
    scaling_efficiency: float | None = None
    predicted_step_s: float | None = None
    ties: list[str] = field(default_factory=list)
    curves: list[list[tuple[float, float]]] = field(default_factory=list)
    """Per repetition, (training seconds, val_loss) of every validation."""
    memory: dict[str, int] | None = None
    """The breakdown (train/memory.py) of the rank holding the most model state, from the last epoch of
    the row's last repetition: parameters, gradients, optimizer state, activations (estimated), peak."""
    pipeline: dict[str, Any] | None = None
    """A pipeline row's expected bubble and measured idle fraction per stage (its last epoch)."""

    def to_dict(self) -> dict[str, Any]:
        def median(spread: Spread | None) -> float | None:
            return None if spread is None or not math.isfinite(spread.median) else spread.median

        def bounds(spread: Spread | None) -> list[float | None] | None:
            return None if spread is None else [v if math.isfinite(v) else None for v in (spread.low, spread.high)]

        return {"key": self.row.key, "strategy": self.row.spec, "workers": self.row.workers, "link": self.row.link,
                "kind": self.row.kind, "samples_per_s": median(self.samples_per_s),
                "samples_per_s_min_max": bounds(self.samples_per_s),
                "time_to_target_s": median(self.time_to_target_s),
                "time_to_target_s_min_max": bounds(self.time_to_target_s),
                "time_to_target_s_per_rep": [v if math.isfinite(v) else None for v in self.reps_time_to_target_s],
                "converged": self.converged, "stopped_by_budget": self.budget_hit, "errors": self.errors,
                "final_val_loss": self.final_val_loss, "measured_step_s": median(self.measured_step_s),
                "measured_step_s_min_max": bounds(self.measured_step_s),
                "predicted_step_s": self.predicted_step_s, "compute_s_per_step": self.compute_s_per_step,
                "comm_s_per_step": self.comm_s_per_step, "comm_bytes_per_step": self.comm_bytes_per_step,
                "peak_memory_bytes": self.peak_memory_bytes, "scaling_efficiency": self.scaling_efficiency,
                "memory": self.memory, "pipeline": self.pipeline, "ties": self.ties}


def choose_targets(config: BenchConfig, rows: Sequence[BenchRow], runs: Sequence[RunRecord]) -> tuple[list[float], str]:
    """Per repetition, the loss that counts as reached, and where it came from."""
    if config.target_loss is not None:
        return [config.target_loss] * config.repeat, "given"
    candidates = [row for row in rows if row.kind in ("strategy", "reference")]
    reference = next((row for row in candidates if row.spec == BASELINE), candidates[0] if candidates else rows[0])
    epoch = math.ceil(config.epochs / 2)
    targets = []
    for rep in range(config.repeat):
        run = next(r for r in runs if r.row == reference.key and r.rep == rep)
        seen = [v.val_loss for v in validations(run.records) if v.epochs <= epoch] or [INF]
        targets.append(min(seen) * config.target_slack)
    return targets, (f"per repetition, the best val_loss of {reference.label} in epochs 1-{epoch}, "
                     f"x {config.target_slack:g}")


def analyse(config: BenchConfig, rows: Sequence[BenchRow], runs: Sequence[RunRecord],
            targets: Sequence[float]) -> list[RowResult]:
    """One RowResult per row, in the rows' order."""
    results = [_row_result(config, row, [r for r in runs if r.row == row.key], targets) for row in rows]
    by_key = {result.row.key: result for result in results}
    ceilings = {r.row.workers: r for r in results if r.row.spec == CEILING}
    baseline = next((r for r in results if r.row.spec == BASELINE and r.row.workers == 1), None)
    for result in results:
        step = result.measured_step_s.median if result.measured_step_s else None
        ceiling = result if result.row.workers == 1 else ceilings.get(result.row.workers)
        if step is not None and ceiling is not None and ceiling.measured_step_s is not None:
            result.compute_s_per_step = ceiling.measured_step_s.median
            result.comm_s_per_step = max(0.0, step - result.compute_s_per_step)
        if baseline and baseline.samples_per_s and result.samples_per_s:
            result.scaling_efficiency = result.samples_per_s.median / (result.row.workers * baseline.samples_per_s.median)
    _mark_ties(results)
    return [by_key[row.key] for row in rows]


def candidates_by_link(results: Sequence[RowResult]) -> dict[str, list[RowResult]]:
    """Per link, the rows that compete there: its own, and the one-process rows (link None)."""
    links = list(dict.fromkeys(r.row.link for r in results if r.row.link)) or ["loopback"]
    return {link: [r for r in results if r.row.kind in ("strategy", "reference") and r.row.link in (link, None)]
            for link in links}


def _mark_ties(results: Sequence[RowResult]) -> None:
    for group in candidates_by_link(results).values():
        found = ties({r.row.key: r.time_to_target_s for r in group if r.time_to_target_s is not None})
        for result in group:
            result.ties = sorted(set(result.ties) | set(found.get(result.row.key, [])))


def _row_result(config: BenchConfig, row: BenchRow, runs: list[RunRecord], targets: Sequence[float]) -> RowResult:
    per_rep_sps = [_median_after_first(run.records, "samples_per_s") for run in runs]
    per_rep_sps = [v for v in per_rep_sps if v]
    batch = int(row.fields.get("batch_size", config.resolved.train.batch_size))
    rows_per_step = batch * config.resolved.train.accumulate * row.workers
    reached = [_seconds_to(run.records, targets[run.rep]) for run in runs]
    curves = [[(v.train_seconds, v.val_loss) for v in validations(run.records)] for run in runs]
    finals = [run.final_val_loss for run in runs if run.final_val_loss is not None]
    comm = [_mean_after_first(run.records, "comm_bytes_per_step") for run in runs]
    comm = [v for v in comm if v is not None]
    peaks = [rec.get("peak_memory_bytes") for run in runs for rec in run.records if rec.get("peak_memory_bytes")]
    return RowResult(
        row=row, samples_per_s=Spread.of(per_rep_sps),
        measured_step_s=Spread.of(rows_per_step / v for v in per_rep_sps),
        time_to_target_s=Spread.of(reached), reps_time_to_target_s=reached,
        converged=bool(reached) and all(math.isfinite(v) for v in reached),
        final_val_loss=statistics.median(finals) if finals else None,
        comm_bytes_per_step=statistics.median(comm) if comm else (0.0 if row.workers == 1 else None),
        peak_memory_bytes=max(peaks) if peaks else None, budget_hit=any(run.budget_hit for run in runs),
        errors=[run.error for run in runs if run.error],
        curves=curves, memory=_largest_memory(runs), pipeline=_pipeline_fields(runs))


def _largest_memory(runs: list[RunRecord]) -> dict[str, int] | None:
    last = [rec for run in runs for rec in run.records[-1:] if rec.get("memory")]
    if not last:
        return None
    return max(last[-1]["memory"], key=lambda m: m.get("model_state_bytes", 0))


def _pipeline_fields(runs: list[RunRecord]) -> dict[str, Any] | None:
    """A pipeline's ``pipeline`` record (strategies/pipeline.py epoch_report) of its last epoch."""
    last = [rec["pipeline"] for run in runs for rec in run.records[-1:] if rec.get("pipeline")]
    return last[-1] if last else None


def _seconds_to(records: list[dict[str, Any]], target: float) -> float:
    return next((v.train_seconds for v in validations(records) if v.val_loss is not None and v.val_loss <= target), INF)


def _median_after_first(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in (records[1:] or records) if r.get(key)]
    return statistics.median(values) if values else None


def _mean_after_first(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in (records[1:] or records) if r.get(key) is not None]
    return statistics.fmean(values) if values else None
