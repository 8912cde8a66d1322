"""What the training benchmark measures: plain dataclasses that turn into JSON as they are."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ThroughputRun:
    """Per-epoch training times of one contender, over several interleaved repetitions.

    The first epoch of each repetition is a warm-up (allocator, thread pool, caches):
    it is kept in ``epoch_seconds`` but left out of the medians.
    """

    name: str
    """Who ran, e.g. 'paratrain single' or 'plain PyTorch'."""
    workers: int
    """Processes that trained together."""
    threads_per_worker: int
    """Intra-op threads of each process."""
    rows_per_epoch: int
    """Training rows one epoch covers (summed over workers)."""
    epoch_seconds: list[list[float]] = field(default_factory=list)
    """Training seconds of every epoch, one list per repetition (validation excluded)."""

    @property
    def measured_seconds(self) -> list[float]:
        """Epoch times after each repetition's first epoch."""
        return [seconds for rep in self.epoch_seconds for seconds in rep[1:]]

    @property
    def median_epoch_seconds(self) -> float:
        return statistics.median(self.measured_seconds)

    @property
    def median_samples_per_s(self) -> float:
        return self.rows_per_epoch / self.median_epoch_seconds

    @property
    def best_epoch_seconds(self) -> float:
        """The fastest counted epoch: noise on a shared machine only ever slows epochs down."""
        return min(self.measured_seconds)

    def rep_median_seconds(self, rep: int) -> float:
        """Median epoch time (warm-up excluded) of one repetition."""
        return statistics.median(self.epoch_seconds[rep][1:])

    def to_dict(self) -> dict[str, Any]:
        measured = self.measured_seconds
        return {
            "name": self.name,
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "rows_per_epoch": self.rows_per_epoch,
            "epoch_seconds": self.epoch_seconds,
            "median_epoch_seconds": self.median_epoch_seconds,
            "min_epoch_seconds": self.best_epoch_seconds,
            "max_epoch_seconds": max(measured),
            "median_samples_per_s": self.median_samples_per_s,
            "n_measured_epochs": len(measured),
        }


@dataclass
class TargetRun:
    """One training run watched epoch by epoch until the test R² reaches a target."""

    r2_by_epoch: list[float] = field(default_factory=list)
    """Test R² after each epoch."""
    seconds_by_epoch: list[float] = field(default_factory=list)
    """Seconds each epoch counted towards the time to target."""
    train_seconds_by_epoch: list[float] = field(default_factory=list)
    """Pure training seconds of each epoch (no evaluation)."""
    target_r2: float = 0.95
    wall_seconds: float = 0.0
    """Wall time of the whole run as a user waits for it (set-up, every epoch run, scoring)."""

    @property
    def epochs_to_target(self) -> int | None:
        """1-based epoch at which R² first reached the target; None if it never did."""
        for epoch, r2 in enumerate(self.r2_by_epoch, start=1):
            if r2 >= self.target_r2:
                return epoch
        return None

    @property
    def seconds_to_target(self) -> float | None:
        epochs = self.epochs_to_target
        return None if epochs is None else sum(self.seconds_by_epoch[:epochs])

    @property
    def train_seconds_to_target(self) -> float | None:
        epochs = self.epochs_to_target
        return None if epochs is None else sum(self.train_seconds_by_epoch[:epochs])

    def to_dict(self) -> dict[str, Any]:
        return {
            "r2_by_epoch": self.r2_by_epoch,
            "seconds_by_epoch": self.seconds_by_epoch,
            "train_seconds_by_epoch": self.train_seconds_by_epoch,
            "epochs_to_target": self.epochs_to_target,
            "seconds_to_target": self.seconds_to_target,
            "train_seconds_to_target": self.train_seconds_to_target,
            "wall_seconds": self.wall_seconds,
        }


@dataclass
class TimeToTarget:
    """One contender's time-to-target runs (repetitions of the same seeded run)."""

    name: str
    runs: list[TargetRun] = field(default_factory=list)
    note: str = ""
    """What the seconds include."""

    @property
    def reached_every_time(self) -> bool:
        return bool(self.runs) and all(run.epochs_to_target is not None for run in self.runs)

    @property
    def median_seconds_to_target(self) -> float | None:
        if not self.reached_every_time:
            return None
        return statistics.median(run.seconds_to_target for run in self.runs)

    @property
    def median_epochs_to_target(self) -> float | None:
        if not self.reached_every_time:
            return None
        return statistics.median(run.epochs_to_target for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "note": self.note,
            "reached_every_time": self.reached_every_time,
            "median_seconds_to_target": self.median_seconds_to_target,
            "median_epochs_to_target": self.median_epochs_to_target,
            "runs": [run.to_dict() for run in self.runs],
        }
