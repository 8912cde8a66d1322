"""Benchmarks that call paratrain as a library: the harness, its results, and their report.

``paratrain bench`` is ``harness.run_bench``: rows (contenders.py), measurement (measurement.py),
analysis (analysis.py), reports (render.py) and plots (plots.py); ``paratrain report`` is
``rundirs.write_run_report``. The training benchmark (training.py) compares paratrain with plain
PyTorch and scikit-learn.

Example:
    >>> from paratrain.bench import TrainingBenchConfig, markdown_report, run_training_benchmark
    >>> result = run_training_benchmark(TrainingBenchConfig.quick())  # doctest: +SKIP
    >>> print(markdown_report(result))  # doctest: +SKIP
"""

from __future__ import annotations

from paratrain.bench.harness import run_bench
from paratrain.bench.measurement import BenchConfig
from paratrain.bench.report import markdown_report
from paratrain.bench.results import TargetRun, ThroughputRun, TimeToTarget
from paratrain.bench.training import TrainingBenchConfig, TrainingBenchResult, run_training_benchmark

__all__ = [
    "BenchConfig",
    "TargetRun",
    "ThroughputRun",
    "TimeToTarget",
    "TrainingBenchConfig",
    "TrainingBenchResult",
    "markdown_report",
    "run_bench",
    "run_training_benchmark",
]
