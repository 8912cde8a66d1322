"""Tuning benchmark: parallel trial throughput, time to a target loss, and RandomizedSearchCV.

    python benchmarks/bench_tune.py                # about 10 minutes on 2 quiet cores
    python benchmarks/bench_tune.py --quick        # about 4 minutes
    python benchmarks/bench_tune.py --json /tmp/bench_tune.json

Data: scikit-learn's diabetes table (442 rows, bundled with scikit-learn: no download).
Prints a Markdown table to stdout, progress to stderr. Three parts, side by side:

1. Trials per hour with --parallel 1 vs 2 (same trials; the planner gives 2 threads to
   one trial, 1 thread each to two), interleaved A B A B, medians.
2. Time to reach a target validation loss for random, tpe and tpe+asha tuning an MLP
   (each run stops starting trials once a trial reaches the target), medians over seeds.
3. The same search space through scikit-learn's RandomizedSearchCV(n_jobs=2) with
   paratrain's MLPRegressor on the same train/validation split.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPACE = {
    "n_layers": {"type": "int", "low": 1, "high": 3},
    "units": {"type": "int", "low": 8, "high": 256, "log": True},
    "activation": ["relu", "tanh", "gelu"],
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "batch_size": [16, 32, 64, 128],
}
THROUGHPUT_SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
"""One cheap parameter: every throughput trial costs about the same."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_data(workdir: Path) -> Path:
    from sklearn.datasets import load_diabetes

    path = workdir / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    return path


def write_throughput_data(workdir: Path, rows: int) -> Path:
    """Friedman #1 (generated, no download): enough rows per epoch that a trial is compute-bound.

    On diabetes (354 training rows) an epoch takes milliseconds and a trial's cost is its
    per-epoch checkpoint and journal fsyncs, which do not run faster in parallel.
    """
    import pandas as pd
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=rows, noise=1.0, random_state=0)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["target"] = y
    path = workdir / "friedman.csv"
    frame.to_csv(path, index=False)
    return path


def run_tune(data: Path, out: Path, **kwargs):
    from paratrain.tune import tune

    started = time.time()
    result = tune(data=data, target="target", model="mlp", out=out, retrain=False, verbosity=0, **kwargs)
    return result, started, time.time() - started


SETTINGS = {"P=1": (1, None), "P=1, 1 thread": (1, 1), "P=2": (2, None)}
"""Throughput runs: (parallel, threads); None lets the planner choose (2 threads for P=1, 1 each for P=2)."""


def throughput(data: Path, workdir: Path, reps: int, trials: int, epochs: int, hidden: list[int]) -> dict:
    """Trials per hour, end to end (process start-up included) and in steady state (first start to last end)."""
    figures: dict[str, dict[str, list[float]]] = {key: {"end_to_end": [], "steady": []} for key in SETTINGS}
    for rep in range(reps):
        for key, (parallel, threads) in SETTINGS.items():  # interleaved: A B C A B C
            fixed = {"epochs": epochs, "hidden": hidden, "batch_size": 128}
            if threads:
                fixed["threads"] = threads
            folder = workdir / f"throughput-{key.replace(' ', '').replace(',', '-')}-{rep}"
            result, _, wall = run_tune(data, folder, space=THROUGHPUT_SPACE, sampler="random", pruner="none",
                                       trials=trials, parallel=parallel, seed=rep, fixed=fixed)
            trials_done = result.load_study().get_trials()
            first = min(t.datetime_start.timestamp() for t in trials_done)
            last = max(t.datetime_complete.timestamp() for t in trials_done)
            figures[key]["end_to_end"].append(trials * 3600 / wall)
            figures[key]["steady"].append(trials * 3600 / (last - first))
            log(f"throughput rep {rep} {key}: {trials * 3600 / wall:.0f} trials/h end to end, "
                f"{trials * 3600 / (last - first):.0f} steady")
    return {key: {k: statistics.median(v) for k, v in f.items()} | {"raw": f} for key, f in figures.items()}


METHODS = {"random": ("random", "none"), "tpe": ("tpe", "none"), "tpe+asha": ("tpe", "asha")}


def time_to_target(data: Path, workdir: Path, seeds: list[int], target: float, cap: int, epochs: int) -> dict:
    """Seconds from the call to the end of the first trial at or below ``target`` (the cap if none)."""
    out: dict[str, dict] = {}
    for seed in seeds:
        for method, (sampler, pruner) in METHODS.items():
            result, started, wall = run_tune(data, workdir / f"target-{method}-{seed}", space=SPACE, sampler=sampler,
                                             pruner=pruner, trials=cap, parallel=2, seed=seed, stop_at=target,
                                             fixed={"epochs": epochs})
            trials = result.load_study().get_trials()
            hits = [t.datetime_complete.timestamp() - started for t in trials
                    if t.state.name == "COMPLETE" and t.value <= target]
            seconds = min(hits) if hits else wall
            record = out.setdefault(method, {"seconds": [], "reached": [], "trials": [], "best": []})
            record["seconds"].append(seconds)
            record["reached"].append(bool(hits))
            record["trials"].append(len(trials))
            record["best"].append(min((t.value for t in trials if t.state.name == "COMPLETE"), default=float("nan")))
            log(f"time to target seed {seed} {method}: {'%.1f s' % seconds if hits else 'not reached in %.0f s' % wall}"
                f" after {len(trials)} trials")
    for record in out.values():
        record["median_seconds"] = statistics.median(record["seconds"])
    return out


def randomized_search(data: Path, n_iter: int, epochs: int, target: float, seed: int) -> dict:
    """RandomizedSearchCV(n_jobs=2) over the same space, scored on the same validation rows."""
    import numpy as np
    import pandas as pd
    from scipy.stats import loguniform
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

    from paratrain import MLPRegressor
    from paratrain.tune.sklearn_models import encoded_data, encoding_config

    frame = pd.read_csv(data)
    config = encoding_config({"path": str(data), "target": "target"})
    _, x, y, train_idx, val_idx = encoded_data(config, frame)  # paratrain's split and standardization
    fold = np.full(len(frame), -1)
    fold[val_idx] = 0
    sizes = [(units,) * layers for layers in (1, 2, 3) for units in (8, 16, 32, 64, 128, 256)]
    distributions = {"hidden_layer_sizes": sizes, "activation": SPACE["activation"],
                     "learning_rate": loguniform(1e-5, 1e-1), "weight_decay": loguniform(1e-6, 1e-1),
                     "batch_size": SPACE["batch_size"]}
    estimator = MLPRegressor(epochs=epochs, validation_fraction=0.0, threads=1, random_state=0)
    search = RandomizedSearchCV(estimator, distributions, n_iter=n_iter, cv=PredefinedSplit(fold), n_jobs=2,
                                scoring="neg_mean_squared_error", random_state=seed, refit=False)
    started = time.time()
    search.fit(x, y)
    wall = time.time() - started
    losses = -search.cv_results_["mean_test_score"]
    first_hit = next((i for i, loss in enumerate(losses) if loss <= target), None)
    # Candidates are dealt out in order to 2 processes: the i-th ends near (i+1)/n of the wall time.
    estimate = wall * (first_hit + 1) / n_iter if first_hit is not None else None
    log(f"RandomizedSearchCV: {n_iter} candidates in {wall:.1f} s, best {losses.min():.4f}")
    return {"wall": wall, "n_iter": n_iter, "best": float(losses.min()), "trials_per_hour": n_iter * 3600 / wall,
            "seconds_to_target_estimate": estimate}


def markdown(args: argparse.Namespace, tp: dict | None, ttt: dict | None, rscv: dict | None) -> str:
    random_s = ttt["random"]["median_seconds"] if ttt else None
    lines = [
        f"Throughput: Friedman #1, {args.throughput_rows} rows, MLP {args.throughput_hidden}, batch 128, "
        f"{args.throughput_epochs} "
        f"epochs per trial. Data of the rest: scikit-learn diabetes (442 rows, 10 features). Time to target: MLP search space of 6 parameters, {args.target_epochs} epochs per "
        f"trial, target validation loss {args.target} (MSE in standardized target units).",
        "",
        "| measurement | setting | result | vs baseline |",
        "|---|---|---|---|",
    ]
    for kind in ("steady", "end_to_end") if tp else ():
        label = "trials/hour, steady state" if kind == "steady" else "trials/hour, end to end"
        for key in SETTINGS:
            threads = "2 threads" if key == "P=1" else "1 thread each" if key == "P=2" else "1 thread"
            lines.append(f"| {label} | --parallel {SETTINGS[key][0]} ({threads}) | {tp[key][kind]:.0f} | "
                         f"{tp[key][kind] / tp['P=1'][kind]:.2f}x |")
        ratio = tp["P=2"][kind] / tp["P=1, 1 thread"][kind]
        lines.append(f"| {label} | --parallel 2 vs --parallel 1 with 1 thread | | {ratio:.2f}x |")
    for method, record in (ttt or {}).items():
        reached = sum(record["reached"])
        cell = f"{record['median_seconds']:.1f} s ({reached}/{len(record['reached'])} seeds reached)"
        lines.append(f"| time to target, median | {method}, --parallel 2 | {cell} | "
                     f"{random_s / record['median_seconds']:.2f}x sooner |")
    if not rscv:
        return "\n".join(lines)
    estimate = rscv["seconds_to_target_estimate"]
    lines.append(f"| time to target | RandomizedSearchCV(n_jobs=2), {rscv['n_iter']} candidates | "
                 + (f"~{estimate:.1f} s" if estimate else f"not reached in {rscv['wall']:.1f} s")
                 + f" (best {rscv['best']:.4f}) | "
                 + (f"{random_s / estimate:.2f}x sooner |" if estimate and random_s else "- |"))
    lines.append(f"| trials/hour, end to end | RandomizedSearchCV(n_jobs=2), {args.target_epochs} epochs | "
                 f"{rscv['trials_per_hour']:.0f} | - |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and seeds")
    parser.add_argument("--reps", type=int, help="interleaved repetitions of the throughput runs (3; quick 1)")
    parser.add_argument("--throughput-trials", type=int, default=12, help="trials per throughput run (12)")
    parser.add_argument("--throughput-epochs", type=int, default=4, help="epochs per throughput trial (4)")
    parser.add_argument("--throughput-rows", type=int, default=20000, help="rows of the throughput data (20000)")
    parser.add_argument("--throughput-hidden", default="256,256", help="MLP of the throughput trials (256,256)")
    parser.add_argument("--parts", default="throughput,target,rscv", help="which parts to run (all three)")
    parser.add_argument("--seeds", type=int, help="seeds of the time-to-target runs (3; quick 2)")
    parser.add_argument("--target", type=float, default=0.48, help="target validation loss (0.48)")
    parser.add_argument("--target-epochs", type=int, default=100, help="epochs per time-to-target trial (100)")
    parser.add_argument("--cap", type=int, default=200, help="most trials (complete + pruned) of a time-to-target run (200)")
    parser.add_argument("--rscv-iter", type=int, default=24, help="RandomizedSearchCV candidates (24)")
    parser.add_argument("--workdir", type=Path, help="keep the study folders here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write every raw figure to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-tune-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = write_data(workdir)
    parts = set(args.parts.split(","))
    tp = ttt = rscv = None
    if "throughput" in parts:
        hidden = [int(n) for n in args.throughput_hidden.split(",")]
        tp = throughput(write_throughput_data(workdir, args.throughput_rows), workdir, reps, args.throughput_trials,
                        args.throughput_epochs, hidden)
    if "target" in parts:
        ttt = time_to_target(data, workdir, seeds, args.target, args.cap, args.target_epochs)
    if "rscv" in parts:
        rscv = randomized_search(data, args.rscv_iter, args.target_epochs, args.target, seed=0)
    print(markdown(args, tp, ttt, rscv))
    print(f"\nLoad average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores (other processes share the machine: quote ratios, not absolutes).")
    if args.json:
        args.json.write_text(json.dumps({"throughput": tp, "time_to_target": ttt, "randomized_search": rscv},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
