"""Sharding benchmark: memory per rank and speed of ddp, zero1 and fsdp, side by side.

    python benchmarks/bench_sharding.py                  # 2 workers, MLP 512x3, 20,000 rows
    python benchmarks/bench_sharding.py --hidden 1024,1024,1024 --workers 4

Trains each strategy on the same synthetic regression table (Friedman #1) with Adam and
prints a Markdown table: the largest rank's parameters + gradients + optimizer state, its
optimizer state alone, the measured peak resident set, samples/s and bytes sent per step,
each also as a ratio to ddp's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

STRATEGIES = (("ddp", {}), ("zero1", {}), ("fsdp", {}), ("fsdp --no-reshard-after-forward",
                                                          {"reshard_after_forward": False}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="512,512,512", help="hidden widths of the MLP (default 512,512,512)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the table (default 20,000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per worker and step (default 256)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from paratrain.config import FitConfig
    from paratrain.train.fit import fit

    hidden = [int(width) for width in args.hidden.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.csv"
        _table(data, args.rows)
        for label, options in STRATEGIES:
            config = FitConfig.from_dict({
                "path": str(data), "target": "y", "hidden": hidden, "epochs": args.epochs, "optimizer": "adam",
                "lr": 0.001, "batch_size": args.batch_size, "precision": "fp32", "strategy": label.split()[0],
                "workers": args.workers, "verbosity": 0, "out": str(Path(folder) / label.replace(" ", "_")),
                **options})
            results[label] = fit(config).summary
    base = results["ddp"]
    print(f"MLP {args.hidden}, Adam, {args.workers} workers x batch {args.batch_size}, {args.rows} rows, "
          f"{args.epochs} epochs (figures of the largest rank)\n")
    print("| strategy | params+grads+optimizer | x ddp | optimizer state | x ddp | peak RSS | samples/s | x ddp "
          "| bytes sent/step | val loss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, summary in results.items():
        state = max(rank["model_state_bytes"] for rank in summary["memory"])
        optimizer = max(rank["optimizer_bytes"] for rank in summary["memory"])
        base_state = max(rank["model_state_bytes"] for rank in base["memory"])
        base_optimizer = max(rank["optimizer_bytes"] for rank in base["memory"])
        print(f"| {label} | {state / 2**20:.2f} MiB | {state / base_state:.2f} | {optimizer / 2**20:.2f} MiB | "
              f"{optimizer / base_optimizer:.2f} | {summary['peak_memory_bytes'] / 2**20:.0f} MiB | "
              f"{summary['samples_per_s']:.0f} | {summary['samples_per_s'] / base['samples_per_s']:.2f} | "
              f"{summary.get('comm_bytes_per_step', 0) / 2**20:.2f} MiB | {summary['val_loss']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
