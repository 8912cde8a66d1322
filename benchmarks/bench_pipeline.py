"""Pipeline bubble: expected (S-1)/(M+S-1) against each stage's measured idle share, side by side.

    python benchmarks/bench_pipeline.py                          # pipeline:2, M = 1, 2, 4, 8, both schedules
    python benchmarks/bench_pipeline.py --hidden 1024,1024,1024 --rows 8192 --batch 1024 --json /tmp/pp.json

Each run trains an MLP with ``pipeline:STAGES`` on a synthetic regression table and reads the
epoch record's ``pipeline`` report: ``idle_fraction`` is the share of a stage's schedule time
spent outside its own forward and backward passes (waiting for its neighbour, posting sends).
The expected bubble counts only the fill and drain of equal-cost stages; the measured idle
share adds the cost of each send/recv, which on a small model is larger than the compute.
Samples/s of ``ddp`` on the same workers is printed for reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--microbatches", default="1,2,4,8", help="micro-batch counts to try (1,2,4,8)")
    parser.add_argument("--hidden", default="512,512,512", help="MLP hidden sizes (512,512,512)")
    parser.add_argument("--rows", type=int, default=8192, help="training rows (8192)")
    parser.add_argument("--batch", type=int, default=512, help="rows per step (512)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs; the last one is reported (2)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    return parser.parse_args(argv)


def _table(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(rows, 8)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(8)])
    frame["y"] = np.sin(2 * x[:, 0]) + x[:, 1] ** 2
    frame.to_csv(path, index=False)


def _run(data: Path, out: Path, args: argparse.Namespace, strategy: str, **options) -> dict:
    from paratrain.config import FitConfig
    from paratrain.train.fit import fit

    config = FitConfig.from_dict({
        "path": str(data), "target": "y", "hidden": args.hidden, "epochs": args.epochs, "batch_size": args.batch,
        "val_fraction": 0.0, "precision": "fp32", "verbosity": 0, "strategy": strategy, "workers": args.stages,
        "checkpoint_every": 0, "out": str(out), **options})
    return fit(config).summary


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        _table(data, args.rows)
        ddp = _run(data, Path(tmp) / "ddp", args, "ddp")
        print(f"ddp on {args.stages} workers: {ddp['samples_per_s']:.0f} samples/s")
        print(f"{'schedule':>8} {'M':>3} {'expected':>9} {'idle per stage':>22} {'samples/s':>10}")
        for schedule in ("gpipe", "1f1b"):
            for m in (int(v) for v in args.microbatches.split(",")):
                if schedule == "1f1b" and m < args.stages:
                    continue
                summary = _run(data, Path(tmp) / f"{schedule}{m}", args, f"pipeline:{args.stages}",
                               pipeline_schedule=schedule, microbatches=m)
                report = summary["pipeline"]
                idle = " ".join(f"{f:.2f}" for f in report["idle_fraction"])
                print(f"{schedule:>8} {m:>3} {report['bubble_expected']:>9.2f} {idle:>22} "
                      f"{summary['samples_per_s']:>10.0f}")
                rows.append({"schedule": schedule, "microbatches": m, **report,
                             "samples_per_s": summary["samples_per_s"]})
    if args.json:
        args.json.write_text(json.dumps({"ddp_samples_per_s": ddp["samples_per_s"], "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
