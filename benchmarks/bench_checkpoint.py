"""What checkpoints inside an epoch cost: fit with --checkpoint-every-steps 0 against K steps.

    python benchmarks/bench_checkpoint.py                       # single and fsdp (2 workers), K = 0, 10, 50, 200
    python benchmarks/bench_checkpoint.py --every 0,20 --repeats 5 --hidden 1024,1024

Trains an MLP (512x3 by default, 0.53M parameters, Adam: a 6 MB whole checkpoint) on a synthetic
regression table (Friedman #1), once per strategy and K, the runs interleaved (each repeat runs every
K once, in turn) because the machine is shared and noisy. Prints a Markdown table: the step
checkpoints written, the median training seconds (summary ``train_seconds``: the steps and the
step checkpoints written between them; not start-up or validation) and its ratio to K=0's, and,
measured inside the same runs (metrics.jsonl ``step_checkpoint_seconds``, rank 0), the median
seconds per checkpoint and the share of training time spent on them. On a shared machine the
share is the steadier figure: the ratio of two medians carries the noise of both. Every run also
writes the usual checkpoint at each epoch's end (not counted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from pathlib import Path

# Before torch loads: threads that wait passively, as the launched workers' do; spinning ones thrash
# on a shared machine (PLATFORM_NOTES: 20k -> 3k samples/s) and would swamp what is measured here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STRATEGIES = (("single", 1), ("fsdp", 2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="512,512,512", help="hidden widths of the MLP (default 512,512,512)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the table (default 20,000)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per worker and step (default 64)")
    parser.add_argument("--every", default="0,10,50,200", help="values of --checkpoint-every-steps (default 0,10,50,200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each strategy and K (default 3)")
    parser.add_argument("--strategies", default="single,fsdp", help="among: single, fsdp (default both)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from paratrain.config import FitConfig
    from paratrain.demo import friedman1_frame
    from paratrain.train.fit import fit

    hidden = [int(width) for width in args.hidden.split(",")]
    every = [int(k) for k in args.every.split(",")]
    chosen = [(name, workers) for name, workers in STRATEGIES if name in args.strategies.split(",")]
    seconds: dict[tuple[str, int], list[float]] = {}
    per_checkpoint: dict[tuple[str, int], list[float]] = {}
    share: dict[tuple[str, int], list[float]] = {}
    written: dict[tuple[str, int], int] = {}
    steps: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.csv"
        friedman1_frame(args.rows).to_csv(data, index=False)
        for repeat in range(args.repeats):
            for name, workers in chosen:
                for k in every:
                    out = Path(folder) / f"{name}-{k}-{repeat}"
                    config = FitConfig.from_dict({
                        "path": str(data), "target": "y", "hidden": hidden, "epochs": args.epochs,
                        "optimizer": "adam", "lr": 0.001, "batch_size": args.batch_size, "precision": "fp32",
                        "strategy": name, "workers": workers, "checkpoint_every_steps": k, "verbosity": 0,
                        "out": str(out)})
                    summary = fit(config).summary
                    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                    count = sum(r.get("step_checkpoints", 0) for r in records)
                    spent = sum(r.get("step_checkpoint_seconds", 0.0) for r in records)
                    seconds.setdefault((name, k), []).append(summary["train_seconds"])
                    share.setdefault((name, k), []).append(spent / summary["train_seconds"])
                    if count:
                        per_checkpoint.setdefault((name, k), []).append(spent / count)
                    written[(name, k)] = count
                    steps[name] = math.ceil(summary["n_train"] / workers / args.batch_size)
                    print(f"# {name} K={k} repeat {repeat + 1}: {summary['train_seconds']:.2f} s", flush=True)
    print(f"\nMLP {args.hidden}, {args.rows:,} rows, batch {args.batch_size} per worker, {args.epochs} epochs, "
          f"medians of {args.repeats} interleaved runs\n")
    print("| strategy | workers | steps/epoch | --checkpoint-every-steps | step checkpoints | train s (median) "
          "| vs K=0 | s per checkpoint | share of train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, workers in chosen:
        base = statistics.median(seconds[(name, 0)]) if (name, 0) in seconds else None
        for k in every:
            median = statistics.median(seconds[(name, k)])
            ratio = f"{median / base:.2f}x" if base else "-"
            each = f"{statistics.median(per_checkpoint[(name, k)]):.3f}" if (name, k) in per_checkpoint else "-"
            part = f"{100 * statistics.median(share[(name, k)]):.0f}%"
            print(f"| {name} | {workers} | {steps[name]} | {k} | {written[(name, k)]} | {median:.2f} | {ratio} "
                  f"| {each} | {part} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
