"""Bench's measurement: every row trained ``repeat`` times, interleaved, through fit().

Rows alternate (A B C A B C ...) so that a slow minute of a shared machine hits every row
alike; repetition r trains with seed ``seed + r`` (initial weights, validation split and data
order), so a row's spread is the spread over seeds as well as the machine's noise. Every run
validates ``evals_per_epoch`` times per epoch: time to target is resolved to a fraction of an
epoch (analysis.py). A run may be bounded by ``max_seconds_per_run`` training seconds: it stops
after the epoch in which it passes them.

Example:
    >>> config = BenchConfig.default(contenders=["single", "ddp"], workers=[1, 2], repeat=1)  # doctest: +SKIP
    >>> runs = measure(config, build_rows(config.contenders, config.workers, config.links))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from paratrain.bench.contenders import REFERENCE, BenchRow, check_workers, parse_contenders
from paratrain.errors import ConfigError
from paratrain.launch.resources import usable_cores

Progress = Callable[[str, dict[str, Any]], None]
"""Called with an event name ('start', 'run', 'done') and its figures."""


@dataclass
class BenchConfig:
    """What bench runs: the workload (fit fields), the rows, repetitions and budget."""

    fit: dict[str, Any]
    """FitConfig fields every row shares (data, target, model, optimizer, batch, epochs, ...)."""
    data: Any = None
    """The table as a DataFrame, or None to read fit['path']."""
    workload: str = "your data"
    """One line naming the workload, for the report."""
    contenders: list[str] = field(default_factory=list)
    workers: list[int] = field(default_factory=lambda: [1, 2])
    links: list[str] = field(default_factory=lambda: ["loopback"])
    repeat: int = 3
    target_loss: float | None = None
    """Validation loss that counts as reached; None: the baseline's best by the middle epoch x target_slack."""
    target_slack: float = 1.05
    max_seconds_per_run: float | None = None
    """Training seconds after which a run stops (at the end of that epoch); None: no bound."""
    calibration: str | None = None
    """A calibration JSON (paratrain calibrate) for predicted step times; None: none predicted."""

    def __post_init__(self) -> None:
        from paratrain.launch.links import parse_link

        self.contenders = parse_contenders(self.contenders)
        self.workers = check_workers(self.workers)
        self.links = [parse_link(link, "link").name for link in self.links] or ["loopback"]
        _check_links(self.links)
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 1:
            raise ConfigError(f"repeat={self.repeat!r} must be an integer >= 1")
        if self.target_loss is not None and not self.target_loss > 0:
            raise ConfigError(f"target_loss={self.target_loss!r} must be > 0")
        if self.max_seconds_per_run is not None and not self.max_seconds_per_run > 0:
            raise ConfigError(f"max_seconds_per_run={self.max_seconds_per_run!r} must be > 0 seconds")
        if self.calibration is not None and not Path(self.calibration).is_file():
            raise ConfigError(f"calibration={self.calibration!r} must be a calibration file (paratrain calibrate); "
                              "no such file")
        from paratrain.config import FitConfig

        self.resolved = FitConfig.from_dict(self.fit)  # the workload's own errors, before anything runs
        if self.resolved.train.precision == "auto":
            # Rows compare strategies at one precision: auto measures per run, and rows with other
            # thread counts (single on every core, 2 workers on one core each) may choose differently.
            # A workload that names bf16 is compared at bf16 (the torch-ddp reference stays fp32).
            self.fit = {**self.fit, "precision": "fp32"}
            self.resolved = FitConfig.from_dict(self.fit)
        if self.resolved.train.epochs < 2:
            raise ConfigError(f"epochs={self.resolved.train.epochs!r} must be >= 2: the first epoch is a warm-up "
                              "that samples/s leaves out")

    @classmethod
    def default(cls, rows: int = 60_000, hidden: tuple[int, ...] = (1024, 1024), seed: int = 0,
                **overrides: Any) -> "BenchConfig":
        """The strategy benchmark's workload: Friedman #1 (noise 1), MLP 1024-1024 (1.06M parameters),
        Adam lr 1e-3 with a cosine schedule, batch 256 per worker, 8 epochs, 4 validations per epoch."""
        from paratrain.demo import friedman1_frame

        fit = {"target": "y", "model": "mlp", "hidden": list(hidden), "optimizer": "adam", "lr": 1e-3,
               "schedule": "cosine", "batch_size": 256, "epochs": 8, "seed": seed, "val_fraction": 0.2,
               "evals_per_epoch": 4, **overrides.pop("fit", {})}
        workload = (f"Friedman #1 (noise 1), {rows:,} rows, MLP {'-'.join(map(str, hidden))}")
        return cls(fit=fit, data=friedman1_frame(rows, seed=seed, noise=1.0), workload=workload, **overrides)

    @property
    def seed(self) -> int:
        return self.resolved.train.seed

    @property
    def epochs(self) -> int:
        return self.resolved.train.epochs

    @property
    def rows_per_step(self) -> int:
        """Rows of one optimizer step on one worker."""
        return self.resolved.train.batch_size * self.resolved.train.accumulate


@dataclass
class RunRecord:
    """One training run of one row: its per-epoch records and how it ended."""

    row: str
    """BenchRow.key."""
    rep: int
    records: list[dict[str, Any]]
    """metrics.jsonl's records (torch-ddp: the same fields from its own loop)."""
    final_val_loss: float | None
    """The saved model's validation loss (after a final average, for local SGD and sparse)."""
    wall_seconds: float
    """The whole run as the user waits for it: start-up, data preparation, validation, teardown."""
    budget_hit: bool = False
    """Stopped by max_seconds_per_run before its last epoch."""
    load_average: float = 0.0
    """The machine's 1-minute load average when the run ended."""
    error: str | None = None
    """Why the run ended without a model (it diverged); its validations until then are kept."""


@dataclass
class TrainingBudget:
    """A fit() callback: stop after the epoch in which training seconds pass ``seconds``."""

    seconds: float
    spent: float = 0.0

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        self.spent += record.get("train_seconds") or 0.0
        return self.spent >= self.seconds


def measure(config: BenchConfig, rows: list[BenchRow], progress: Progress | None = None,
            workdir: str | os.PathLike | None = None) -> list[RunRecord]:
    """Train every row ``config.repeat`` times, interleaved; run directories go under ``workdir``."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="paratrain-bench-") as scratch:
            return measure(config, rows, progress, scratch)
    progress = progress or (lambda event, figures: None)
    total = len(rows) * config.repeat
    progress("start", {"rows": rows, "runs": total, "repeat": config.repeat})
    out: list[RunRecord] = []
    for rep in range(config.repeat):
        for row in rows:
            progress("run", {"row": row, "rep": rep, "index": len(out)})
            run = _run_or_record_divergence(config, row, rep, Path(workdir) / f"{row.key.replace('@', '-')}-{rep}")
            out.append(run)
            progress("done", {"row": row, "rep": rep, "run": run, "index": len(out), "runs": total})
    return out


def _run_or_record_divergence(config: BenchConfig, row: BenchRow, rep: int, out: Path) -> RunRecord:
    """A row that diverges is a result (it never reaches the target), not the end of the benchmark."""
    from paratrain.errors import DivergenceError, WorkerError
    from paratrain.train import rundir
    from paratrain.train.metrics import MetricsLog

    started = time.perf_counter()
    try:
        return run_row(config, row, rep, out)
    except (DivergenceError, WorkerError) as error:
        # Launched workers report a divergence as a WorkerError naming the rank and its error's type.
        if isinstance(error, WorkerError) and f": {DivergenceError.__name__}: " not in str(error):
            raise
        records = MetricsLog(out / rundir.METRICS_FILE).read() if out.is_dir() else []
        return RunRecord(row.key, rep, records, None, time.perf_counter() - started,
                         load_average=os.getloadavg()[0], error=str(error).splitlines()[0])


def run_row(config: BenchConfig, row: BenchRow, rep: int, out: Path) -> RunRecord:
    """One training run of ``row`` with seed ``config.seed + rep``."""
    from paratrain.config import FitConfig

    fields = {**config.fit, "seed": config.seed + rep, "checkpoint_every": 0, "verbosity": 0, "out": str(out),
              "threads": max(1, usable_cores() // row.workers), **row.fields}
    if row.kind == "reference":
        fields.pop("link", None)
        fields["workers"] = 1  # the job below launches the workers itself
        return _run_torch_ddp(config, row, rep, FitConfig.from_dict(fields), fields["threads"])
    from paratrain.train import rundir
    from paratrain.train.fit import fit
    from paratrain.train.metrics import MetricsLog

    budget = [TrainingBudget(config.max_seconds_per_run)] if config.max_seconds_per_run else []
    started = time.perf_counter()
    result = fit(FitConfig.from_dict(fields), data=config.data, callbacks=budget)
    wall = time.perf_counter() - started
    records = MetricsLog(Path(result.run_dir) / rundir.METRICS_FILE).read()
    summary = result.summary or {}
    hit = bool(summary.get("stopped_by_callback")) and len(records) < config.epochs
    return RunRecord(row.key, rep, records, summary.get("val_loss"), wall, hit, os.getloadavg()[0])


def _run_torch_ddp(config: BenchConfig, row: BenchRow, rep: int, fit_config, threads: int) -> RunRecord:
    from paratrain.bench.torch_ddp import TorchDDPJob
    from paratrain.launch.links import parse_link
    from paratrain.launch.local import launch_local

    source = config.data if config.data is not None else fit_config.data.path
    job = TorchDDPJob(fit_config, source, threads, config.max_seconds_per_run)
    link = parse_link(row.link or "loopback")
    started = time.perf_counter()
    result = launch_local(job, row.workers, link=link)
    records = result["records"]
    hit = len(records) < config.epochs
    return RunRecord(row.key, rep, records, records[-1]["val_loss"] if records else None,
                     time.perf_counter() - started, hit, os.getloadavg()[0])


def _check_links(links: list[str]) -> None:
    """An emulated link needs root and iproute2: say what is missing before anything runs."""
    from paratrain.launch.links import parse_link
    from paratrain.launch.netns import check_can_emulate

    for name in links:
        link = parse_link(name)
        if link.emulated:
            check_can_emulate(link)
            return  # one check covers every rate


__all__ = ["REFERENCE", "BenchConfig", "RunRecord", "TrainingBudget", "measure", "run_row"]
