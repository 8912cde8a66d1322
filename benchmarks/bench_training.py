"""Training benchmark: paratrain single vs plain PyTorch, vs scikit-learn, and ddp vs single.

    python benchmarks/bench_training.py --json /tmp/bench_training.json
    python benchmarks/bench_training.py --quick

Prints a Markdown table to stdout, progress to stderr; --json writes every raw figure.
The logic lives in paratrain.bench.training; this script only parses flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run: 20,000 rows, 2 reps (about a minute)")
    parser.add_argument("--rows", type=int, help="rows of Friedman #1 data (default 200,000; 20,000 with --quick)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions of the throughput runs")
    parser.add_argument("--epochs", type=int, dest="epochs_per_rep", help="epochs per throughput run (first not counted)")
    parser.add_argument("--target-reps", type=int, help="interleaved repetitions of the time-to-target runs")
    parser.add_argument("--max-epochs", type=int, help="epoch cap of a time-to-target run")
    parser.add_argument("--target-r2", type=float, help="test R² that counts as reached (default 0.95)")
    parser.add_argument("--threads", type=int, help="threads of the one-process runs (default: every core)")
    parser.add_argument("--ddp-workers", type=int, help="worker processes of the ddp run (default 2)")
    parser.add_argument("--seed", type=int, help="seed of data, splits, weights and shuffles")
    parser.add_argument("--sklearn-dtype", choices=["float64", "float32"],
                        help="dtype of sklearn's arrays (default float64, as pandas gives them)")
    parser.add_argument("--workdir", type=Path, help="keep the run directories here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write all raw figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported after parsing: torch takes seconds to import, --help should not wait for it.
    from paratrain.bench import TrainingBenchConfig, markdown_report, run_training_benchmark
    from paratrain.errors import ParatrainError

    names = ("rows", "reps", "epochs_per_rep", "target_reps", "max_epochs", "target_r2", "threads",
             "ddp_workers", "seed", "sklearn_dtype")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        config = TrainingBenchConfig.quick(**overrides) if args.quick else TrainingBenchConfig(**overrides)
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
        result = run_training_benchmark(config, workdir=args.workdir)
    except ParatrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown_report(result))
    if args.json:
        from paratrain.train.checkpoint import save_text_atomic  # a killed run leaves no half file
        save_text_atomic(json.dumps(result.to_dict(), indent=2), args.json)
        print(f"[bench] raw figures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
