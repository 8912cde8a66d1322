"""What checkpoints inside an epoch cost: fit with --checkpoint-every-steps 0 against K steps.

    python benchmarks/bench_checkpoint.py                       # single and fsdp (2 workers), K = 0, 10, 50, 200
    python benchmarks/bench_checkpoint.py --every 0,20 --repeats 5 --hidden 1024,1024

Trains an MLP (512x3 by default, 0.53M parameters, Adam: a 6 MB whole checkpoint) on a synthetic
regression table (Friedman #1), once per strategy and K, the runs interleaved (each repeat runs every
K once, in turn) because the machine is shared and noisy. Prints a Markdown table: the median
training seconds (summary ``train_seconds``: the steps, the step checkpoints written between them
included; not start-up or validation), the step checkpoints written, the seconds per checkpoint
and the ratio to K=0. Every run also writes the usual checkpoint at each epoch's end.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

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


def _table(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(rows, 10))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + rng.normal(size=rows))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    frame["y"] = y
    frame.to_csv(path, index=False)


def _step_checkpoints(every: int, steps_per_epoch: int, epochs: int) -> int:
    """Checkpoints written inside epochs: every K steps of the run, except on an epoch's last step."""
    if every == 0:
        return 0
    return sum(1 for step in range(1, steps_per_epoch * epochs + 1)
               if step % every == 0 and step % steps_per_epoch != 0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from paratrain.config import FitConfig
    from paratrain.train.fit import fit

    hidden = [int(width) for width in args.hidden.split(",")]
    every = [int(k) for k in args.every.split(",")]
    chosen = [(name, workers) for name, workers in STRATEGIES if name in args.strategies.split(",")]
    seconds: dict[tuple[str, int], list[float]] = {}
    steps: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.csv"
        _table(data, args.rows)
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
                    seconds.setdefault((name, k), []).append(summary["train_seconds"])
                    steps[name] = math.ceil(summary["n_train"] / workers / args.batch_size)
                    print(f"# {name} K={k} repeat {repeat + 1}: {summary['train_seconds']:.2f} s", flush=True)
    print(f"\nMLP {args.hidden}, {args.rows:,} rows, batch {args.batch_size} per worker, {args.epochs} epochs, "
          f"medians of {args.repeats} interleaved runs\n")
    print("| strategy | workers | steps/epoch | --checkpoint-every-steps | step checkpoints | train s (median) "
          "| s per checkpoint | vs K=0 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, workers in chosen:
        base = statistics.median(seconds[(name, 0)]) if (name, 0) in seconds else None
        for k in every:
            median = statistics.median(seconds[(name, k)])
            count = _step_checkpoints(k, steps[name], args.epochs)
            each = f"{(median - base) / count:.3f}" if base is not None and count else "-"
            ratio = f"{median / base:.2f}x" if base else "-"
            print(f"| {name} | {workers} | {steps[name]} | {k} | {count} | {median:.2f} | {each} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
