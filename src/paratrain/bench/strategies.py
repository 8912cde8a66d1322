"""The strategy benchmark: every parallel strategy side by side, on the same data and model.

One run trains each contender (single process with 1 thread and with every core,
ddp plain and compressed, local SGD, sparse model averaging, async, hogwild) for the same epochs on the
same Friedman #1 rows, the same MLP, optimizer, schedule and seed, and reports per contender:

* samples/s: median over epochs after the first (a warm-up) of ``samples_per_s``;
* comm bytes per optimizer step (``comm_bytes_per_step``): after the first epoch,
  when warm-ups (PowerSGD's plain all-reduce steps) are over, and over the whole run;
* time to a target validation loss: training seconds (metrics.jsonl ``train_seconds``,
  and inside an epoch those of its ``evals``) until the first validation with
  ``val_loss <= target``. Every run validates ``evals_per_epoch`` times per epoch, so
  the time is resolved to a fraction of an epoch; validation itself, process start-up,
  data preparation and rendezvous are not counted;
* final validation loss (the saved model's: for localsgd and sparse, the workers' average
  validated once more after the last epoch), and its ratio to dense ddp's.

The target is the best validation loss the reference row (one process on every
core) reaches by the middle epoch (any validation up to its end), times ``target_slack``,
unless ``target_loss`` is given. The best, not the middle epoch's own: near the noise floor the validation
loss jumps a few percent from epoch to epoch, and one upward jump would make the
target so loose that every row reaches it after its first epoch.
Contenders alternate (A B C A B C ...) over repetitions; repetition r trains with seed
``seed + r`` (initial weights, validation split, data order: the figures' spread is the
spread over seeds, not only the machine's noise), the target is chosen per repetition,
and figures are medians.

Example:
    >>> from paratrain.bench.strategies import StrategyBenchConfig, run_strategy_benchmark, strategy_markdown_report
    >>> result = run_strategy_benchmark(StrategyBenchConfig.quick())  # doctest: +SKIP
    >>> print(strategy_markdown_report(result))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from paratrain.bench.analysis import Validation, validations
from paratrain.bench.training import Progress, _stderr, environment
from paratrain.errors import ConfigError
from paratrain.launch.resources import usable_cores

if TYPE_CHECKING:
    from paratrain.bench.contenders import BenchRow
    from paratrain.bench.measurement import BenchConfig

REFERENCE = "single"
"""Key of the row the target loss is taken from: one process on every core."""
CONTENDER_KEYS = ("single-1t", "single", "single-global-batch", "no-comm", "ddp", "ddp-fp16", "ddp-bf16", "ddp-int8",
                  "ddp-topk", "ddp-at-topk-lr", "ddp-powersgd", "localsgd", "sparse", "async", "hogwild", "stale")
NEVER = 2 ** 62
"""A localsgd period no run reaches: the workers never average while training (the throughput ceiling row)."""


@dataclass
class StrategyBenchConfig:
    """Sizes, contenders and target of the benchmark; validated on construction."""

    rows: int = 60_000
    """Rows of Friedman #1 data (10 features)."""
    noise: float = 1.0
    """Standard deviation of Friedman #1's noise (sets the floor of the validation loss)."""
    hidden: tuple[int, ...] = (1024, 1024)
    """MLP hidden layer sizes; (1024, 1024) has 1.06M parameters."""
    batch_size: int = 256
    """Rows per optimizer step on each worker (the global batch of a W-worker row is W times this)."""
    optimizer: str = "adam"
    """Optimizer of every run: adam or sgd (with momentum 0.9)."""
    lr: float = 1e-3
    """Learning rate, everywhere."""
    schedule: str = "cosine"
    """Learning-rate schedule of every run: cosine (to zero at the last step) by default. With a constant
    rate the validation loss of this workload moves by up to 10% from one epoch to the next, too much to
    compare final losses to 2%."""
    epochs: int = 8
    """Epochs of every run; the first is a warm-up for samples/s."""
    seed: int = 0
    """Seed of the data; repetition r seeds the split, the initial weights and the shuffles with seed + r."""
    val_fraction: float = 0.2
    """Validation share of the rows."""
    workers: int = 2
    """Worker processes of every multi-process row."""
    reps: int = 1
    """Interleaved repetitions (A B C A B C ...); figures are medians over them."""
    contenders: tuple[str, ...] = CONTENDER_KEYS
    """Rows to run, by key; see CONTENDER_KEYS."""
    topk_ratio: float = 0.01
    """Share of each gradient bucket that ddp topk sends, and of the update that sparse shares."""
    topk_lr: float | None = None
    """Learning rate of the ddp topk row (and of the dense 'ddp-at-topk-lr' check row); None: with adam,
    lr x topk_adam_lr_factor(topk_ratio) (1/sqrt(ratio): error feedback hands Adam bursts of gradient,
    which it moves sqrt(1/ratio) times less than dense steps), with sgd lr."""
    powersgd_rank: int = 4
    """Rank of ddp PowerSGD's approximation."""
    powersgd_warmup: int = 10
    """Plain all-reduce steps before PowerSGD compresses."""
    localsgd_period: int = 8
    """Optimizer steps between parameter averages of localsgd."""
    max_staleness: int | None = None
    """async: bound on how far a worker may run ahead (None: unbounded)."""
    target_loss: float | None = None
    """Validation loss that counts as reached; None: the reference's best by target_epoch, times target_slack."""
    target_epoch: int | None = None
    """The automatic target is the reference's best val_loss up to this epoch; None: the middle epoch."""
    target_slack: float = 1.05
    """Factor on the reference's loss for the automatic target (>= 1)."""
    evals_per_epoch: int = 4
    """Validations per epoch of every run: the resolution of time to target."""

    def __post_init__(self) -> None:
        self.hidden, self.contenders = tuple(self.hidden), tuple(self.contenders)
        for name, minimum in (("rows", 100), ("batch_size", 1), ("epochs", 2), ("seed", 0), ("workers", 2),
                              ("reps", 1), ("powersgd_rank", 1), ("powersgd_warmup", 2), ("localsgd_period", 1),
                              ("evals_per_epoch", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                hint = " (the first epoch is a warm-up)" if name == "epochs" else ""
                raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}{hint}")
        unknown = [key for key in self.contenders if key not in CONTENDER_KEYS]
        if unknown or not self.contenders:
            raise ConfigError(f"contenders={list(self.contenders)!r} must be a non-empty subset of: "
                              f"{', '.join(CONTENDER_KEYS)}")
        if not 0 < self.topk_ratio <= 1:
            raise ConfigError(f"topk_ratio={self.topk_ratio!r} must be in (0, 1]")
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must be in (0, 0.5)")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer={self.optimizer!r} must be adam or sgd")
        if self.schedule not in ("none", "cosine", "step", "onecycle"):
            raise ConfigError(f"schedule={self.schedule!r} must be one of: none, cosine, step, onecycle")
        if self.lr <= 0 or self.noise < 0:
            raise ConfigError(f"lr={self.lr!r} must be > 0 and noise={self.noise!r} >= 0")
        if self.topk_lr is not None and not self.topk_lr > 0:
            raise ConfigError(f"topk_lr={self.topk_lr!r} must be > 0, or None to derive it from lr and topk_ratio")
        if self.target_loss is not None and not self.target_loss > 0:
            raise ConfigError(f"target_loss={self.target_loss!r} must be > 0, or None to choose it from the reference")
        if self.target_epoch is not None and not 1 <= self.target_epoch <= self.epochs:
            raise ConfigError(f"target_epoch={self.target_epoch!r} must be in [1, epochs={self.epochs}]")
        if self.target_slack < 1:
            raise ConfigError(f"target_slack={self.target_slack!r} must be >= 1")

    @classmethod
    def quick(cls, **overrides: Any) -> "StrategyBenchConfig":
        """A small version (10,000 rows, MLP 128-128, 3 epochs) of every row, in a minute or two."""
        return cls(**{"rows": 10_000, "hidden": (128, 128), "epochs": 3, **overrides})

    @property
    def resolved_topk_lr(self) -> float:
        """The ddp topk row's learning rate: topk_lr, or derived from lr (see topk_lr)."""
        from paratrain.strategies.compression import topk_adam_lr_factor

        if self.topk_lr is not None:
            return self.topk_lr
        return self.lr * topk_adam_lr_factor(self.topk_ratio) if self.optimizer == "adam" else self.lr

    @property
    def resolved_target_epoch(self) -> int:
        return self.target_epoch or math.ceil(self.epochs / 2)


@dataclass(frozen=True)
class Contender:
    """One row: a label and the fit() fields that differ from the shared ones."""

    key: str
    label: str
    workers: int
    threads: int
    batch_size: int
    """Rows per step on each worker."""
    fields: dict[str, Any] = field(default_factory=dict)
    kind: str = "strategy"
    """"strategy": a way to train, a candidate for best row; "ceiling": workers that never communicate,
    whose samples/s bounds every data-parallel row's (its losses are those of unrelated models);
    "probe": a one-process diagnostic (stale gradients), reported but never a candidate;
    "lr-check": dense ddp at the topk row's learning rate, to show whether that rate alone explains topk's loss."""

    @property
    def global_batch(self) -> int:
        return self.workers * self.batch_size

    def to_row(self) -> "BenchRow":
        """This contender as a bench row (its key as the spec; its threads and batch as fields)."""
        from paratrain.bench.contenders import BenchRow

        # The check row is no way to train: like the probe, it is reported but never a candidate.
        kind = "probe" if self.kind == "lr-check" else self.kind
        return BenchRow(self.key, self.workers, "loopback" if self.workers > 1 else None, kind,
                        {**self.fields, "threads": self.threads, "batch_size": self.batch_size})


def build_contenders(config: StrategyBenchConfig) -> list[Contender]:
    """The rows config.contenders asks for, in the order given there."""
    cores = usable_cores()
    w, b, per_worker = config.workers, config.batch_size, max(1, cores // config.workers)

    def parallel(key: str, label: str, strategy: str, **extra: Any) -> Contender:
        return Contender(key, label, w, per_worker, b, {"strategy": strategy, "workers": w, **extra})

    staleness = "" if config.max_staleness is None else f" (max staleness {config.max_staleness})"
    topk_lr = config.resolved_topk_lr
    own_lr = f", lr {topk_lr:g}" if topk_lr != config.lr else ""
    every = {
        "single-1t": Contender("single-1t", "single, 1 thread", 1, 1, b, {"strategy": "single"}),
        "single": Contender("single", f"single, {cores} threads", 1, cores, b, {"strategy": "single"}),
        "single-global-batch": Contender("single-global-batch", f"single, {cores} threads, batch {w * b}",
                                         1, cores, w * b, {"strategy": "single"}),
        "ddp": parallel("ddp", "ddp", "ddp"),
        "ddp-fp16": parallel("ddp-fp16", "ddp fp16", "ddp", compress="fp16"),
        "ddp-bf16": parallel("ddp-bf16", "ddp bf16", "ddp", compress="bf16"),
        "ddp-int8": parallel("ddp-int8", "ddp int8", "ddp", compress="int8"),
        # fit() itself scales Adam's rate under top-k (train/optim.py); a given topk_lr replaces that.
        "ddp-topk": parallel("ddp-topk", f"ddp topk:{config.topk_ratio:g}{own_lr}", "ddp",
                             compress=f"topk:{config.topk_ratio:g}",
                             **({} if config.topk_lr is None else {"lr": topk_lr, "compress_lr_scale": False})),
        # The same dense ddp at topk's learning rate: does the rate alone make topk's final loss?
        "ddp-at-topk-lr": Contender("ddp-at-topk-lr", f"ddp, lr {topk_lr:g} (topk's; check)", w, per_worker, b,
                                    {"strategy": "ddp", "workers": w, "lr": topk_lr}, kind="lr-check"),
        "ddp-powersgd": parallel("ddp-powersgd", f"ddp powersgd:{config.powersgd_rank}", "ddp",
                                 compress=f"powersgd:{config.powersgd_rank}", powersgd_warmup=config.powersgd_warmup),
        "localsgd": parallel("localsgd", f"localsgd:{config.localsgd_period}", f"localsgd:{config.localsgd_period}"),
        "sparse": parallel("sparse", f"sparse:{config.topk_ratio:g}", f"sparse:{config.topk_ratio:g}"),
        "async": parallel("async", f"async{staleness}", "async", max_staleness=config.max_staleness),
        "hogwild": parallel("hogwild", "hogwild", "hogwild"),
        # Upper bound on throughput: the same worker processes, with nothing to wait for.
        "no-comm": Contender("no-comm", f"{w} workers, no communication (ceiling)", w, per_worker, b,
                             {"strategy": f"localsgd:{NEVER}", "workers": w}, kind="ceiling"),
        # What staleness alone costs: W equally fast asynchronous workers see gradients about
        # W-1 updates old; one process with the reference row's threads and batch, nothing else changed.
        "stale": Contender("stale", f"stale:{w - 1} (1 process, gradients {w - 1} step old)", 1, cores, b,
                           {"strategy": f"stale:{w - 1}"}, kind="probe"),
    }
    return [every[key] for key in config.contenders]


@dataclass
class StrategyRun:
    """Every repetition of one contender: its metrics.jsonl records and what the run cost."""

    contender: Contender
    records: list[list[dict[str, Any]]] = field(default_factory=list)
    """Per repetition, the per-epoch records of metrics.jsonl."""
    wall_seconds: list[float] = field(default_factory=list)
    """Per repetition, fit()'s wall time (start-up, data preparation and teardown included)."""
    load_average: list[float] = field(default_factory=list)
    """Per repetition, the 1-minute load average when the run ended."""
    saved_val_losses: list[float | None] = field(default_factory=list)
    """Per repetition, the summary's val_loss: the saved model's (after a final average, if any)."""

    @property
    def samples_per_s(self) -> float:
        """Median samples/s of the epochs after each repetition's first."""
        return statistics.median(r["samples_per_s"] for rep in self.records for r in rep[1:])

    def bytes_per_step(self, after_first_epoch: bool = True) -> float | None:
        """Mean comm bytes per optimizer step, after the first epoch or over the run; None: no figure."""
        values = [[r["comm_bytes_per_step"] for r in rep[1 if after_first_epoch else 0:] if "comm_bytes_per_step" in r]
                  for rep in self.records]
        means = [statistics.fmean(rep) for rep in values if rep]
        return statistics.median(means) if means else None

    @property
    def final_val_loss(self) -> float:
        """Median over repetitions of the saved model's val_loss (the summary's: for localsgd and
        sparse that is the workers' average, validated after the last epoch)."""
        saved = self.saved_val_losses + [None] * (len(self.records) - len(self.saved_val_losses))
        return statistics.median(loss if loss is not None else rep[-1]["val_loss"]
                                 for rep, loss in zip(self.records, saved))

    def best_val_losses_by(self, epoch: int) -> list[float]:
        """Per repetition, the lowest val_loss of any validation up to the end of ``epoch``."""
        return [min(v.val_loss for v in validations(rep) if v.epochs <= epoch) for rep in self.records]

    def tail_val_loss(self, epochs: int = 3) -> float:
        """Median over repetitions of the mean val_loss of the last ``epochs`` epochs (less noisy than the final)."""
        return statistics.median(statistics.fmean(r["val_loss"] for r in rep[-epochs:]) for rep in self.records)

    def first_reaching(self, target: float | Sequence[float]) -> list["Validation | None"]:
        """Per repetition, the first validation with val_loss <= target (None: never).

        ``target``: one loss for every repetition, or one per repetition.
        """
        targets = [target] * len(self.records) if isinstance(target, (int, float)) else list(target)
        return [next((v for v in validations(rep) if v.val_loss <= goal), None)
                for rep, goal in zip(self.records, targets, strict=True)]

    def epochs_to_target(self, target: float | Sequence[float]) -> list[float | None]:
        """Per repetition, the epochs trained (fractional inside an epoch) when the target was first met."""
        return [None if v is None else v.epochs for v in self.first_reaching(target)]

    def seconds_to_target(self, target: float | Sequence[float]) -> float | None:
        """Median training seconds up to the target; None unless every repetition reached it."""
        reached = self.first_reaching(target)
        if not reached or None in reached:
            return None
        return statistics.median(v.train_seconds for v in reached)

    def to_dict(self, target: float | Sequence[float]) -> dict[str, Any]:
        return {
            **asdict(self.contender),
            "global_batch": self.contender.global_batch,
            "samples_per_s": self.samples_per_s,
            "comm_bytes_per_step_after_epoch_1": self.bytes_per_step(True),
            "comm_bytes_per_step_whole_run": self.bytes_per_step(False),
            "epochs_to_target": self.epochs_to_target(target),
            "seconds_to_target": self.seconds_to_target(target),
            "final_val_loss": self.final_val_loss,
            "saved_val_losses": self.saved_val_losses,
            "last_3_epochs_mean_val_loss": self.tail_val_loss(),
            "wall_seconds": self.wall_seconds,
            "load_average": self.load_average,
            "records": self.records,
        }


@dataclass
class StrategyBenchResult:
    """Everything one benchmark run measured; ``to_dict`` is the JSON report."""

    config: StrategyBenchConfig
    runs: dict[str, StrategyRun]
    targets: list[float]
    """Per repetition, the validation loss that counts as reached (repetitions differ in seed, hence split)."""
    target_source: str
    environment: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    load_average: dict[str, list[float]] = field(default_factory=dict)

    @property
    def target_loss(self) -> float:
        """The median of the repetitions' targets (for display)."""
        return statistics.median(self.targets)

    def dense_ratio(self, key: str, after_first_epoch: bool = True) -> float | None:
        """Dense ddp's bytes per step over this row's (how many times fewer bytes it sends)."""
        dense, run = self.runs.get("ddp"), self.runs.get(key)
        mine = run.bytes_per_step(after_first_epoch) if run else None
        theirs = dense.bytes_per_step(after_first_epoch) if dense else None
        return theirs / mine if mine and theirs else None

    def loss_vs_dense(self, key: str, tail: bool = False) -> float | None:
        """This row's final val_loss over dense ddp's (tail: the means of the last 3 epochs)."""
        if "ddp" not in self.runs:
            return None
        mine, dense = self.runs[key], self.runs["ddp"]
        return mine.tail_val_loss() / dense.tail_val_loss() if tail else mine.final_val_loss / dense.final_val_loss

    def best(self, keys: tuple[str, ...] | list[str]) -> tuple[str, float] | None:
        """The row among ``keys`` with the shortest time to target, and that time."""
        times = [(key, self.runs[key].seconds_to_target(self.targets)) for key in keys if key in self.runs]
        times = [(key, seconds) for key, seconds in times if seconds is not None]
        return min(times, key=lambda item: item[1]) if times else None

    def expectations(self) -> list:
        from paratrain.bench.strategy_report import expectations

        return expectations(self)

    def single_process_keys(self) -> list[str]:
        """Rows that train on one process (the probe excluded): the candidates for the best single row."""
        return [key for key, run in self.runs.items() if run.contender.workers == 1 and run.contender.kind == "strategy"]

    def diagnostics(self) -> list[tuple[str, str]]:
        """What the ceiling and probe rows measured, as (row, finding) sentences."""
        from paratrain.bench.strategy_report import diagnostics

        return diagnostics(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {**asdict(self.config), "hidden": list(self.config.hidden),
                       "contenders": list(self.config.contenders)},
            "environment": self.environment,
            "wall_seconds": self.wall_seconds,
            "load_average": self.load_average,
            "target_loss": self.target_loss,
            "targets": self.targets,
            "target_source": self.target_source,
            "notes": {"seconds_to_target": "training seconds (metrics.jsonl `train_seconds`, rank 0; inside an epoch, "
                                           "its `evals`) until the first validation with val_loss <= target; "
                                           "validation, process start-up and data preparation not counted",
                      "samples_per_s": "median over epochs after the first of metrics.jsonl `samples_per_s`"},
            "rows": {key: run.to_dict(self.targets) for key, run in self.runs.items()},
            "expectations": [asdict(item) for item in self.expectations()],
            "diagnostics": [{"row": row, "measured": measured} for row, measured in self.diagnostics()],
        }


def run_strategy_benchmark(config: StrategyBenchConfig, progress: Progress = _stderr,
                           workdir: str | os.PathLike | None = None) -> StrategyBenchResult:
    """Run every contender ``config.reps`` times, interleaved; run directories go to ``workdir``.

    The runs go through bench's measurement (measurement.measure): the same fit() calls,
    seeds and interleaving as ``paratrain bench``."""
    from paratrain.bench.measurement import measure

    started, load_before = time.perf_counter(), list(os.getloadavg())
    contenders = build_contenders(config)
    _warn_about_threads(contenders, progress)
    bench = bench_config(config)
    progress(f"{config.rows:,} rows, MLP {'-'.join(map(str, config.hidden))} ({parameter_count(config):,} parameters), "
             f"{config.epochs} epochs x {len(contenders)} rows x {config.reps} reps; load average "
             + "/".join(f"{value:.2f}" for value in load_before))
    by_row = {contender.to_row().key: contender for contender in contenders}
    runs = {contender.key: StrategyRun(contender) for contender in contenders}

    def record(event: str, figures: dict[str, Any]) -> None:
        if event != "done":
            return
        contender, done = by_row[figures["row"].key], figures["run"]
        run = runs[contender.key]
        run.records.append(done.records)
        run.wall_seconds.append(done.wall_seconds)
        run.load_average.append(done.load_average)
        run.saved_val_losses.append(done.final_val_loss)
        progress(f"rep {figures['rep'] + 1}/{config.reps} {contender.label}: final val_loss {run.final_val_loss:.4f}, "
                 f"{statistics.median(r['samples_per_s'] for r in done.records[1:]):,.0f} samples/s, "
                 f"{done.wall_seconds:.1f} s wall (load average {done.load_average:.1f})")

    measure(bench, [contender.to_row() for contender in contenders], record, workdir)
    targets, source = _choose_target(config, runs)
    progress(f"target val_loss {' / '.join(f'{t:.4f}' for t in targets)} ({source})")
    return StrategyBenchResult(config, runs, targets, source, environment=_environment(),
                               wall_seconds=time.perf_counter() - started,
                               load_average={"start": load_before, "end": list(os.getloadavg())})


def bench_config(config: StrategyBenchConfig, with_data: bool = True) -> "BenchConfig":
    """The same workload as a BenchConfig: the fields every row shares, and the Friedman #1 rows."""
    from paratrain.bench.measurement import BenchConfig
    from paratrain.demo import friedman1_frame

    fit = {"target": "y", "model": "mlp", "hidden": list(config.hidden), "optimizer": config.optimizer, "lr": config.lr,
           "schedule": config.schedule, "seed": config.seed, "epochs": config.epochs,
           "val_fraction": config.val_fraction, "evals_per_epoch": config.evals_per_epoch,
           "batch_size": config.batch_size}
    frame = friedman1_frame(config.rows, seed=config.seed, noise=config.noise) if with_data else None
    workload = (f"Friedman #1 (noise {config.noise:g}), {config.rows:,} rows, MLP {'-'.join(map(str, config.hidden))} "
                f"({parameter_count(config):,} parameters)")
    return BenchConfig(fit=fit, data=frame, workload=workload, contenders=["single"], workers=[1, config.workers],
                       repeat=config.reps, target_loss=config.target_loss, target_slack=config.target_slack)


def _choose_target(config: StrategyBenchConfig, runs: dict[str, StrategyRun]) -> tuple[list[float], str]:
    """Per repetition: each has its own seed, so its own validation rows and loss floor."""
    if config.target_loss is not None:
        return [config.target_loss] * config.reps, "given"
    key = REFERENCE if REFERENCE in runs else next(iter(runs))
    epoch = config.resolved_target_epoch
    losses = runs[key].best_val_losses_by(epoch)
    shown = " / ".join(f"{loss:.4f}" for loss in losses)
    return [loss * config.target_slack for loss in losses], (
        f"per repetition, the best val_loss of '{runs[key].contender.label}' in epochs 1-{epoch} "
        f"({shown}) x {config.target_slack:g}")


def _warn_about_threads(contenders: list[Contender], progress: Progress) -> None:
    # Workers paratrain launches get OMP_WAIT_POLICY=PASSIVE; a several-thread run
    # in this process without it spins, and on a loaded machine thrashes (seen 7x).
    if any(c.workers == 1 and c.threads > 1 for c in contenders) and os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        progress("warning: OMP_WAIT_POLICY is not PASSIVE in this process, unlike the workers paratrain launches; "
                 "multi-thread single rows may thrash on a loaded machine (the benchmark script sets it)")


def _environment() -> dict[str, Any]:
    return {**environment(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def parameter_count(config: StrategyBenchConfig, features: int = 10) -> int:
    """Parameters of the MLP: weights and biases of every Linear layer, 1 output."""
    sizes = [features, *config.hidden, 1]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))




def strategy_markdown_report(result: StrategyBenchResult) -> str:
    """The config line, one row per contender, the expectations, and each row's loss curve (strategy_report.py)."""
    from paratrain.bench.strategy_report import markdown_report

    return markdown_report(result)


__all__ = ["CONTENDER_KEYS", "Contender", "StrategyBenchConfig", "StrategyBenchResult", "StrategyRun", "Validation",
           "bench_config", "build_contenders", "parameter_count", "run_strategy_benchmark", "strategy_markdown_report",
           "validations"]
