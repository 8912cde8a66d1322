"""The training benchmark: paratrain against plain PyTorch, scikit-learn, and itself under ddp.

Three comparisons on the same Friedman #1 data, in one run:

1. **Loop overhead**: paratrain ``single`` vs a hand-written PyTorch loop, seconds per
   training epoch (validation excluded), same model, data, batch, optimizer, threads.
2. **Time to target**: paratrain ``single`` vs scikit-learn's ``MLPRegressor``, seconds
   until the test R² first reaches the target, on the same 80/20 split.
3. **ddp vs single**: samples/s of ``ddp`` with N workers against ``single``.

The machine is shared and noisy, so contenders alternate (A B C A B C ...) and the
figures are medians; the first epoch of every run is a warm-up and is not counted.

Example:
    >>> from paratrain.bench import TrainingBenchConfig, run_training_benchmark
    >>> result = run_training_benchmark(TrainingBenchConfig.quick())  # doctest: +SKIP
    >>> result.overhead  # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from paratrain.bench.baselines import plain_torch_epoch_seconds, sklearn_time_to_target, standardized_split
from paratrain.bench.results import TargetRun, ThroughputRun, TimeToTarget
from paratrain.errors import ConfigError

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


@dataclass
class TrainingBenchConfig:
    """Sizes and repetitions of the benchmark; validated on construction."""

    rows: int = 200_000
    """Rows of Friedman #1 data (10 features, noise 1.0)."""
    seed: int = 0
    """Seed of the data, the splits, the initial weights and the shuffles."""
    hidden: tuple[int, ...] = (256, 256)
    """MLP hidden layer sizes."""
    batch_size: int = 256
    """Rows per optimizer step (per worker under ddp)."""
    lr: float = 1e-3
    """Adam learning rate, everywhere."""
    threads: int | None = None
    """Threads of the one-process contenders; default: every core this process may use."""
    reps: int = 3
    """Interleaved repetitions of the throughput runs (single, plain, ddp)."""
    epochs_per_rep: int = 4
    """Epochs per throughput run; the first one is a warm-up and not counted."""
    overhead_val_fraction: float = 0.01
    """Validation share of the throughput runs (paratrain trains on the rest, and so does the plain loop)."""
    ddp_workers: int = 2
    """Worker processes of the ddp run."""
    target_r2: float = 0.95
    """Test R² that ends a time-to-target run."""
    test_fraction: float = 0.2
    """Held-out share for time to target (paratrain's validation set = sklearn's test set)."""
    target_reps: int = 3
    """Interleaved repetitions of the time-to-target runs (paratrain, sklearn)."""
    max_epochs: int = 30
    """Epoch cap of a time-to-target run."""
    sklearn_dtype: str = "float64"
    """dtype of the arrays given to sklearn: float64 is what pandas and sklearn's generators produce
    (sklearn then computes in float64); float32 is its fastest setting."""

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        for name, minimum in (("rows", 100), ("reps", 1), ("epochs_per_rep", 2), ("ddp_workers", 1),
                              ("target_reps", 1), ("max_epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                hint = " (the first epoch is a warm-up, so at least one more is needed)" if name == "epochs_per_rep" else ""
                raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}{hint}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads={self.threads!r} must be an integer >= 1, or None for every core")
        for name in ("overhead_val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 0.5:
                raise ConfigError(f"{name}={value!r} must be in (0, 0.5): a held-out share of the rows")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr!r} must be > 0")
        if self.sklearn_dtype not in ("float64", "float32"):
            raise ConfigError(f"sklearn_dtype={self.sklearn_dtype!r} must be float64 or float32")

    @classmethod
    def quick(cls, **overrides: Any) -> "TrainingBenchConfig":
        """A small version (20,000 rows, 2 repetitions) that runs in about a minute."""
        values = {"rows": 20_000, "reps": 2, "epochs_per_rep": 3, "target_reps": 2, "max_epochs": 10}
        return cls(**{**values, **overrides})

    @property
    def resolved_threads(self) -> int:
        from paratrain.launch.env import default_threads

        return self.threads or default_threads(1)


@dataclass
class TrainingBenchResult:
    """Everything one benchmark run measured; ``to_dict`` is the JSON report."""

    config: TrainingBenchConfig
    environment: dict[str, Any]
    paratrain_single: ThroughputRun
    plain_torch: ThroughputRun
    paratrain_ddp: ThroughputRun
    paratrain_target: TimeToTarget
    sklearn_target: TimeToTarget
    wall_seconds: float = 0.0
    load_average: dict[str, list[float]] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """paratrain single's median epoch time over the plain loop's, minus 1."""
        return self.paratrain_single.median_epoch_seconds / self.plain_torch.median_epoch_seconds - 1

    @property
    def paired_overheads(self) -> list[float]:
        """The overhead within each repetition (the two ran back to back)."""
        return [self.paratrain_single.rep_median_seconds(rep) / self.plain_torch.rep_median_seconds(rep) - 1
                for rep in range(len(self.plain_torch.epoch_seconds))]

    @property
    def best_epoch_overhead(self) -> float:
        """The same ratio from each contender's fastest epoch (the least disturbed by other load)."""
        return self.paratrain_single.best_epoch_seconds / self.plain_torch.best_epoch_seconds - 1

    @property
    def sklearn_over_paratrain(self) -> float | None:
        """sklearn's median time to target over paratrain's; None unless both always reached it."""
        mine, theirs = self.paratrain_target.median_seconds_to_target, self.sklearn_target.median_seconds_to_target
        return None if mine is None or theirs is None else theirs / mine

    @property
    def paired_sklearn_over_paratrain(self) -> list[float | None]:
        """The time-to-target ratio within each repetition (the two ran back to back)."""
        return [None if mine.seconds_to_target is None or theirs.seconds_to_target is None
                else theirs.seconds_to_target / mine.seconds_to_target
                for mine, theirs in zip(self.paratrain_target.runs, self.sklearn_target.runs)]

    @property
    def ddp_over_single(self) -> float:
        """ddp's median samples/s over single's (below 1: ddp is slower)."""
        return self.paratrain_ddp.median_samples_per_s / self.paratrain_single.median_samples_per_s

    @property
    def paired_ddp_over_single(self) -> list[float]:
        """ddp over single within each repetition (ddp ran right after single)."""
        ddp, single = self.paratrain_ddp, self.paratrain_single
        return [(ddp.rows_per_epoch / ddp.rep_median_seconds(rep)) / (single.rows_per_epoch / single.rep_median_seconds(rep))
                for rep in range(len(ddp.epoch_seconds))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {**asdict(self.config), "hidden": list(self.config.hidden),
                       "threads": self.config.resolved_threads},
            "environment": self.environment,
            "wall_seconds": self.wall_seconds,
            "load_average": self.load_average,
            "overhead": {
                "paratrain_single": self.paratrain_single.to_dict(),
                "plain_torch": self.plain_torch.to_dict(),
                "overhead": self.overhead,
                "paired_overheads": self.paired_overheads,
                "best_epoch_overhead": self.best_epoch_overhead,
                "goal": "<= 0.05",
            },
            "time_to_target": {
                "target_r2": self.config.target_r2,
                "paratrain": self.paratrain_target.to_dict(),
                "sklearn": self.sklearn_target.to_dict(),
                "sklearn_over_paratrain": self.sklearn_over_paratrain,
                "paired_sklearn_over_paratrain": self.paired_sklearn_over_paratrain,
                "goal": ">= 4",
            },
            "ddp_vs_single": {
                "single": self.paratrain_single.to_dict(),
                "ddp": self.paratrain_ddp.to_dict(),
                "ddp_over_single": self.ddp_over_single,
                "paired_ddp_over_single": self.paired_ddp_over_single,
            },
        }


def run_training_benchmark(config: TrainingBenchConfig, progress: Progress = _stderr,
                           workdir: str | os.PathLike | None = None) -> TrainingBenchResult:
    """Run the three comparisons; run directories go to ``workdir`` (default: a temp dir, removed)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="paratrain-bench-") as scratch:
            return run_training_benchmark(config, progress, scratch)
    workdir = Path(workdir)
    started = time.perf_counter()
    load_before = list(os.getloadavg())
    from paratrain.demo import friedman1_frame

    frame = friedman1_frame(config.rows, seed=config.seed)
    progress(f"{config.rows} rows of Friedman #1; threads={config.resolved_threads}, "
             f"{config.reps} reps x {config.epochs_per_rep} epochs, {config.target_reps} time-to-target reps")
    single, plain, ddp = _throughput_runs(config, frame, workdir, progress)
    paratrain_target, sklearn_target = _target_runs(config, frame, workdir, progress)
    return TrainingBenchResult(
        config=config, environment=environment(), paratrain_single=single, plain_torch=plain,
        paratrain_ddp=ddp, paratrain_target=paratrain_target, sklearn_target=sklearn_target,
        wall_seconds=time.perf_counter() - started,
        load_average={"start": load_before, "end": list(os.getloadavg())},
    )


def _base_fit_fields(config: TrainingBenchConfig, out: Path) -> dict[str, Any]:
    return {"target": "y", "model": "mlp", "hidden": list(config.hidden), "batch_size": config.batch_size,
            "optimizer": "adam", "lr": config.lr, "schedule": "none", "seed": config.seed,
            "verbosity": 0, "out": str(out)}


def _throughput_runs(config: TrainingBenchConfig, frame: pd.DataFrame, workdir: Path,
                     progress: Progress) -> tuple[ThroughputRun, ThroughputRun, ThroughputRun]:
    """Comparisons 1 and 3: per rep, paratrain single, then the plain loop, then ddp."""
    from paratrain.config import FitConfig
    from paratrain.data.split import train_val_split

    threads = config.resolved_threads
    train_idx, val_idx = train_val_split(len(frame), config.overhead_val_fraction, config.seed)
    data = standardized_split(frame, "y", train_idx, val_idx)
    n_train = len(train_idx)
    ddp_rows = (n_train // config.ddp_workers) * config.ddp_workers  # shards are cut to equal size
    single = ThroughputRun("paratrain single", 1, threads, n_train)
    plain = ThroughputRun("plain PyTorch", 1, threads, n_train)
    ddp = ThroughputRun(f"paratrain ddp x{config.ddp_workers}", config.ddp_workers, 0, ddp_rows)
    for rep in range(config.reps):
        fields = {**_base_fit_fields(config, workdir / f"single-{rep}"), "epochs": config.epochs_per_rep,
                  "val_fraction": config.overhead_val_fraction, "strategy": "single", "threads": threads,
                  # The plain loop it is compared with runs in fp32: loop overhead, not precision, is measured.
                  "precision": "fp32"}
        single.epoch_seconds.append(_paratrain_epoch_seconds(FitConfig.from_dict(fields), frame, n_train))
        progress(f"rep {rep + 1}/{config.reps} paratrain single: {_fmt(single.epoch_seconds[-1])} s/epoch "
                 f"(load average {os.getloadavg()[0]:.1f})")

        plain.epoch_seconds.append(plain_torch_epoch_seconds(
            data.x_train, data.y_train, hidden=config.hidden, batch_size=config.batch_size, lr=config.lr,
            epochs=config.epochs_per_rep, seed=config.seed, threads=threads))
        progress(f"rep {rep + 1}/{config.reps} plain PyTorch:    {_fmt(plain.epoch_seconds[-1])} s/epoch")

        fields.update(out=str(workdir / f"ddp-{rep}"), strategy="ddp", workers=config.ddp_workers, threads=None)
        ddp_config = FitConfig.from_dict(fields)
        ddp.epoch_seconds.append(_paratrain_epoch_seconds(ddp_config, frame, ddp_rows))
        ddp.threads_per_worker = _summary_threads(workdir / f"ddp-{rep}")
        progress(f"rep {rep + 1}/{config.reps} paratrain ddp:    {_fmt(ddp.epoch_seconds[-1])} s/epoch")
    return single, plain, ddp


def _paratrain_epoch_seconds(fit_config, frame: pd.DataFrame, rows: int) -> list[float]:
    """Train with fit(); each epoch's training seconds from metrics.jsonl (rows / samples_per_s)."""
    from paratrain.train.fit import fit

    result = fit(fit_config, data=frame)
    return [rows / record["samples_per_s"] for record in _metrics(result.run_dir)]


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    from paratrain.train import rundir
    from paratrain.train.metrics import MetricsLog

    return MetricsLog(Path(run_dir) / rundir.METRICS_FILE).read()


def _summary_threads(run_dir: Path) -> int:
    import json

    from paratrain.train import rundir

    return int(json.loads((run_dir / rundir.SUMMARY_FILE).read_text()).get("threads_per_worker", 0))


def _target_runs(config: TrainingBenchConfig, frame: pd.DataFrame, workdir: Path,
                 progress: Progress) -> tuple[TimeToTarget, TimeToTarget]:
    """Comparison 2: per rep, paratrain single, then sklearn, on the same 80/20 split."""
    from paratrain.data.split import train_val_split

    threads = config.resolved_threads
    # paratrain's validation rows are exactly the rows this split holds out: same function, same seed.
    train_idx, test_idx = train_val_split(len(frame), config.test_fraction, config.seed)
    split = standardized_split(frame, "y", train_idx, test_idx)
    data_path = workdir / "friedman1.npz"
    np.savez(data_path, **{column: frame[column].to_numpy() for column in frame.columns})
    mine = TimeToTarget("paratrain single", note="training + validation seconds per epoch (metrics.jsonl `seconds`)")
    theirs = TimeToTarget(f"sklearn MLPRegressor ({config.sklearn_dtype})",
                          note="partial_fit seconds only (scoring not counted)")
    for rep in range(config.target_reps):
        mine.runs.append(_paratrain_time_to_target(config, data_path, workdir / f"target-{rep}", threads, progress))
        progress(f"rep {rep + 1}/{config.target_reps} paratrain: R2 {config.target_r2} after "
                 f"{mine.runs[-1].epochs_to_target} epochs, {_fmt_optional(mine.runs[-1].seconds_to_target)} s")
        theirs.runs.append(sklearn_time_to_target(
            split, hidden=config.hidden, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
            threads=threads, target_r2=config.target_r2, max_epochs=config.max_epochs, progress=progress,
            dtype=config.sklearn_dtype))
        progress(f"rep {rep + 1}/{config.target_reps} sklearn:   R2 {config.target_r2} after "
                 f"{theirs.runs[-1].epochs_to_target} epochs, {_fmt_optional(theirs.runs[-1].seconds_to_target)} s")
    return mine, theirs


def _paratrain_time_to_target(config: TrainingBenchConfig, data_path: Path, out: Path, threads: int,
                              progress: Progress) -> TargetRun:
    """One epoch per session (stop_after=1, then resume) so that the run ends once R² is reached.

    The schedule is constant, so stopping and resuming trains exactly as one long run would.
    """
    from paratrain.config import FitConfig
    from paratrain.train.fit import fit, resume

    fields = {**_base_fit_fields(config, out), "path": str(data_path), "epochs": config.max_epochs,
              "stop_after": 1, "val_fraction": config.test_fraction, "strategy": "single", "threads": threads}
    started = time.perf_counter()
    fit(FitConfig.from_dict(fields))
    while True:
        records = _metrics(out)
        last = records[-1]
        progress(f"paratrain epoch {last['epoch']}: test_r2={last['val_r2']:.4f} seconds={last['seconds']:.2f}")
        if last["val_r2"] >= config.target_r2 or len(records) >= config.max_epochs:
            break
        resume(out, {"stop_after": 1})  # one more epoch, then look again
    precision = _chosen_precision(out)
    if precision:
        progress(f"paratrain precision: {precision['name']} ({precision['reason']})")
    rows = _train_rows(config)
    return TargetRun(
        r2_by_epoch=[record["val_r2"] for record in records],
        seconds_by_epoch=[record["seconds"] for record in records],
        train_seconds_by_epoch=[rows / record["samples_per_s"] for record in records],
        target_r2=config.target_r2,
        wall_seconds=time.perf_counter() - started,
    )


def _chosen_precision(run_dir: Path) -> dict[str, Any] | None:
    """The precision the run trained in and why (its checkpoint keeps the choice)."""
    from paratrain.train import rundir
    from paratrain.train.checkpoint import load_torch

    return load_torch(Path(run_dir) / rundir.CHECKPOINT_FILE)["state"].get("precision")


def _train_rows(config: TrainingBenchConfig) -> int:
    from paratrain.data.split import train_val_split

    return len(train_val_split(config.rows, config.test_fraction, config.seed)[0])


def environment() -> dict[str, Any]:
    """Versions and hardware that the figures depend on."""
    import sklearn
    import torch
    from threadpoolctl import threadpool_info

    from paratrain.launch.resources import usable_cores

    cores = usable_cores()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "cores": cores,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "numpy_thread_pools": [f"{pool.get('internal_api')}:{pool.get('num_threads')}" for pool in threadpool_info()],
    }


def _fmt(values: list[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def _fmt_optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"

