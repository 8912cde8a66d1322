"""Memory per worker: the cost model's prediction against what runs count, side by side.

    python benchmarks/memory_prediction.py                       # MLP 16-512-512-1, batch 256
    python benchmarks/memory_prediction.py --hidden 1024,1024 --batch-size 512 --workers 2

Trains one epoch of `single` and of `ddp` on --workers workers (real processes, gloo),
reads summary.json["memory"] (per rank: parameters, gradients, optimizer state counted from
the tensors held, activations from the first step's leaf outputs, peak resident set) and
prints each part next to ``predict_step(...).memory`` for the same model. Sizes in MiB;
ratio = measured / predicted.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

PARTS = (("parameters_bytes", "parameters_bytes"), ("gradients_bytes", "gradients_bytes"),
         ("optimizer_bytes", "optimizer_bytes"), ("activations_bytes", "activations_bytes"),
         ("model_state_bytes", "model_state_bytes"), ("peak_bytes", "total_bytes"))


def main(argv=None) -> None:
    from paratrain.config import FitConfig, parse_int_list
    from paratrain.costmodel.calibrate import workload_from_config
    from paratrain.costmodel.calibration import Calibration, ComputeProfile
    from paratrain.costmodel.predict import predict_step
    from paratrain.costmodel.probes import memory_estimate
    from paratrain.train.fit import fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="512,512")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4096)
    args = parser.parse_args(argv)
    hidden = parse_int_list("hidden", args.hidden)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(args.rows, 16)).astype(np.float32), columns=[f"x{i}" for i in range(16)])
    frame["y"] = frame.sum(axis=1)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.csv"
        frame.to_csv(data, index=False)
        print(f"MLP 16-{'-'.join(map(str, hidden))}-1, batch {args.batch_size}, adam, fp32; MiB per worker")
        print(f"{'run':10s} {'part':18s} {'measured':>10s} {'predicted':>10s} {'ratio':>7s}")
        for strategy, workers in (("single", 1), ("ddp", args.workers)):
            config = FitConfig.from_dict({"path": str(data), "target": "y", "hidden": list(hidden), "epochs": 1,
                                          "batch_size": args.batch_size, "precision": "fp32", "verbosity": 0,
                                          "strategy": strategy, "workers": workers,
                                          "out": str(Path(folder) / strategy)})
            measured = fit(config).summary["memory"]
            workload = workload_from_config(config)
            profile = ComputeProfile(1, 1, 0.01, 0.009, 0.001, 1e-5)  # compute does not enter memory
            calibration = Calibration(workload.fingerprint(), 1, compute={1: profile},
                                      memory=memory_estimate(workload))
            predicted = predict_step(calibration, strategy, workers, "loopback").memory.to_dict()
            for rank, values in enumerate(measured):
                for mine, theirs in PARTS:
                    got, want = values[mine] / 2**20, predicted[theirs] / 2**20
                    name = "peak vs total" if mine == "peak_bytes" else mine.replace("_bytes", "")
                    print(f"{strategy + ' r' + str(rank):10s} {name:18s} {got:>10.2f} {want:>10.2f} "
                          f"{got / want if want else float('nan'):>7.3f}")


if __name__ == "__main__":
    main()
