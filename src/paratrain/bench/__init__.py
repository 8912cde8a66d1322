"""Benchmarks that call paratrain as a library: the harness, its results, and their report.

Example:
    >>> from paratrain.bench import TrainingBenchConfig, markdown_report, run_training_benchmark
    >>> result = run_training_benchmark(TrainingBenchConfig.quick())  # doctest: +SKIP
    >>> print(markdown_report(result))  # doctest: +SKIP
"""

from __future__ import annotations

from paratrain.bench.report import markdown_report
from paratrain.bench.results import TargetRun, ThroughputRun, TimeToTarget
from paratrain.bench.training import TrainingBenchConfig, TrainingBenchResult, run_training_benchmark

__all__ = [
    "TargetRun",
    "ThroughputRun",
    "TimeToTarget",
    "TrainingBenchConfig",
    "TrainingBenchResult",
    "markdown_report",
    "run_training_benchmark",
]
