"""Model-splitting strategies side by side on an MLP of ~21M parameters, through `paratrain bench`.

    python benchmarks/bench_model_parallel.py --out bench-model-parallel

Rows: single (1 worker) and ddp, fsdp, zero1, pipeline:2, tensor on 2 workers, interleaved
over repetitions, fp32 (the same precision for every row), on the Friedman #1 workload.
The bench report gives samples/s (medians, min-max), time to target, and the memory table:
parameters, gradients, optimizer state and activations per rank (counted and estimated),
the measured peak, and the pipeline's expected bubble beside its measured idle fraction.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HIDDEN = "2048,2048,2048,2048,2048,2048"
"""6 hidden layers of 2048 on the 10 Friedman inputs: 21.0M parameters (5 x 2048^2 + the first and last layers)."""
STRATEGIES = "single,ddp,fsdp,zero1,pipeline:2,tensor"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="bench output folder")
    parser.add_argument("--rows", type=int, default=8192, help="rows of the Friedman #1 workload (8192)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (3; the first is a warm-up)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions (2)")
    parser.add_argument("--hidden", default=HIDDEN, help=f"hidden sizes ({HIDDEN})")
    parser.add_argument("--strategies", default=STRATEGIES, help=f"contenders ({STRATEGIES})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "fit.yaml"
        data = Path(folder) / "friedman1.csv"
        _friedman1(args.rows).to_csv(data, index=False)
        # fp32 for every row: precision 'auto' could choose differently per row and blur the comparison.
        config.write_text("precision: fp32\nbatch_size: 256\nlr: 0.0003\n")
        command = [sys.executable, "-m", "paratrain", "bench", "--config", str(config), "--data", str(data),
                   "--target", "y",
                   "--hidden", args.hidden, "--epochs", str(args.epochs), "--evals-per-epoch", "1",
                   "--strategies", args.strategies, "--workers", "1,2", "--repeat", str(args.repeat),
                   "--out", args.out]
        print(" ".join(command), file=sys.stderr)
        return subprocess.call(command)


def _friedman1(rows: int):
    """Friedman #1 (10 uniform inputs, 5 of them used, unit noise), as the built-in workload."""
    import pandas as pd
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=rows, n_features=10, noise=1.0, random_state=0)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    frame["y"] = y
    return frame


if __name__ == "__main__":
    raise SystemExit(main())
