"""Tuning benchmark: parallel trial throughput, time to a target loss, and RandomizedSearchCV.

    python benchmarks/bench_tune.py                # about 15 minutes on 2 quiet cores
    python benchmarks/bench_tune.py --quick        # about 6 minutes
    python benchmarks/bench_tune.py --json /tmp/bench_tune.json

Data: scikit-learn's digits (1,797 8x8 images of handwritten digits, 10 classes, bundled
with scikit-learn: no download); the MLP classifier's validation loss is cross-entropy.
Prints a Markdown table to stdout, progress to stderr. Three parts, side by side:

1. Trials per hour with --parallel 1 vs 2 (the planner gives 2 threads to one trial,
   1 thread each to two), interleaved A B C A B C, medians, on two workloads: the digits
   search's own trials (small batches: what tuning a tabular MLP looks like), and a
   compute-bound one (Friedman #1, 20,000 rows, MLP 256-256, batch 128) where a
   second thread does help a single trial.
2. Time to reach a target validation loss for random, tpe and tpe+asha tuning an MLP
   (each run stops starting trials once a trial reaches the target), medians over seeds.
3. The same search space through scikit-learn's RandomizedSearchCV(n_jobs=2) with
   paratrain's MLPClassifier on the same train/validation split.
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
WORKLOADS = {
    "search": {"label": "digits, MLP 128-128, batch 32",
               "fixed": {"hidden": [128, 128], "batch_size": 32, "task": "classification"}},
    "compute": {"label": "Friedman #1 20,000 rows, MLP 256-256, batch 128",
                "fixed": {"hidden": [256, 256], "batch_size": 128}},
}
"""Throughput workloads: the search's own kind of trial, and a compute-bound one."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_data(workdir: Path) -> Path:
    from sklearn.datasets import load_digits

    path = workdir / "digits.csv"
    load_digits(as_frame=True).frame.to_csv(path, index=False)
    return path


def write_throughput_data(workdir: Path, rows: int) -> Path:
    """Friedman #1 (generated, no download): enough rows per epoch that a trial is compute-bound.

    Here one trial's matrix products are big enough that a second thread helps it.
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


def steady_rate(trials: list) -> float:
    """Trials per second once every worker is running: the sum over workers of
    (trials - 1) / (last end - first end) of that worker's trials.

    Process start-up (about a second each, both workers at once) and the tail (one
    worker done, the other finishing its last trial) are left out: with a dozen
    one-second trials they would otherwise be a fifth of the window.
    """
    ends: dict[str, list[float]] = {}
    for trial in trials:
        ends.setdefault(trial.user_attrs.get("worker_name", "?"), []).append(trial.datetime_complete.timestamp())
    return sum((len(times) - 1) / (max(times) - min(times)) for times in ends.values() if len(times) > 1)


def throughput(workloads: dict[str, Path], workdir: Path, reps: int, trials: int, epochs: dict[str, int]) -> dict:
    """Per workload and setting: trials per hour end to end (start-up included) and steady (first start to last end)."""
    figures = {name: {key: {"end_to_end": [], "steady": []} for key in SETTINGS} for name in workloads}
    for rep in range(reps):
        for name, data in workloads.items():
            for key, (parallel, threads) in SETTINGS.items():  # interleaved: A B C A B C
                fixed = {"epochs": epochs[name], **WORKLOADS[name]["fixed"]}
                if threads:
                    fixed["threads"] = threads
                folder = workdir / f"throughput-{name}-{key.replace(' ', '').replace(',', '-')}-{rep}"
                result, _, wall = run_tune(data, folder, space=THROUGHPUT_SPACE, sampler="random", pruner="none",
                                           trials=trials, parallel=parallel, seed=rep, fixed=fixed)
                steady = steady_rate(result.load_study().get_trials())
                figures[name][key]["end_to_end"].append(trials * 3600 / wall)
                figures[name][key]["steady"].append(steady * 3600)
                log(f"throughput rep {rep} {name} {key}: {trials * 3600 / wall:.0f} trials/h end to end, "
                    f"{steady * 3600:.0f} steady")
    return {name: {key: {k: statistics.median(v) for k, v in f.items()} | {"raw": f} for key, f in per.items()}
            for name, per in figures.items()}


METHODS = {"random": ("random", "none"), "tpe": ("tpe", "none"), "tpe+asha": ("tpe", "asha")}


def time_to_target(data: Path, workdir: Path, seeds: list[int], target: float, cap: int, epochs: int) -> dict:
    """Seconds from the call to the end of the first trial at or below ``target`` (the cap if none)."""
    out: dict[str, dict] = {}
    for seed in seeds:
        for method, (sampler, pruner) in METHODS.items():
            result, started, wall = run_tune(data, workdir / f"target-{method}-{seed}", space=SPACE, sampler=sampler,
                                             pruner=pruner, trials=cap, parallel=2, seed=seed, stop_at=target,
                                             fixed={"epochs": epochs, "task": "classification"})
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
    """RandomizedSearchCV(n_jobs=2) over the same space, scored (log loss) on the same validation rows."""
    import numpy as np
    import pandas as pd
    from scipy.stats import loguniform
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

    from paratrain import MLPClassifier
    from paratrain.data.split import train_val_split

    frame = pd.read_csv(data)
    x, y = frame.drop(columns="target").to_numpy(np.float32), frame["target"].to_numpy()
    _, val_idx = train_val_split(len(frame), 0.2, seed=0)  # the split paratrain's trials use (defaults)
    fold = np.full(len(frame), -1)
    fold[val_idx] = 0
    sizes = [(units,) * layers for layers in (1, 2, 3) for units in (8, 16, 32, 64, 128, 256)]
    distributions = {"hidden_layer_sizes": sizes, "activation": SPACE["activation"],
                     "learning_rate": loguniform(1e-5, 1e-1), "weight_decay": loguniform(1e-6, 1e-1),
                     "batch_size": SPACE["batch_size"]}
    estimator = MLPClassifier(epochs=epochs, validation_fraction=0.0, threads=1, random_state=0)
    search = RandomizedSearchCV(estimator, distributions, n_iter=n_iter, cv=PredefinedSplit(fold), n_jobs=2,
                                scoring="neg_log_loss", random_state=seed, refit=False)
    started = time.time()
    search.fit(x, y)
    wall = time.time() - started
    losses = -search.cv_results_["mean_test_score"]
    first_hit = next((i for i, loss in enumerate(losses) if loss <= target), None)
    # Candidates are dealt out in order to 2 processes: the i-th ends near (i+1)/n of the wall time.
    estimate = wall * (first_hit + 1) / n_iter if first_hit is not None else None
    log(f"RandomizedSearchCV: {n_iter} candidates in {wall:.1f} s, best {np.nanmin(losses):.4f}")
    return {"wall": wall, "n_iter": n_iter, "best": float(np.nanmin(losses)), "trials_per_hour": n_iter * 3600 / wall,
            "seconds_to_target_estimate": estimate}


def markdown(args: argparse.Namespace, tp: dict | None, ttt: dict | None, rscv: dict | None) -> str:
    random_s = ttt["random"]["median_seconds"] if ttt else None
    lines = [
        f"Throughput: {args.throughput_trials} trials per run (lr drawn at random, every trial the same cost), "
        f"{args.reps or 3} interleaved reps, medians; 'search': {WORKLOADS['search']['label']}, "
        f"{args.search_epochs} epochs; 'compute': {WORKLOADS['compute']['label']}, {args.throughput_epochs} epochs. "
        f"Time to target: digits, MLP classifier, search space of 6 parameters, {args.target_epochs} epochs per "
        f"trial, target validation cross-entropy {args.target}, --parallel 2, medians over seeds.",
        "",
        "| measurement | setting | result | vs baseline |",
        "|---|---|---|---|",
    ]
    for name in tp or {}:
        for kind in ("steady", "end_to_end"):
            label = f"trials/hour, {name}, " + ("steady state" if kind == "steady" else "end to end")
            figures = tp[name]
            for key in SETTINGS:
                threads = "2 threads" if key == "P=1" else "1 thread each" if key == "P=2" else "1 thread"
                lines.append(f"| {label} | --parallel {SETTINGS[key][0]} ({threads}) | {figures[key][kind]:.0f} | "
                             f"{figures[key][kind] / figures['P=1'][kind]:.2f}x |")
            ratio = figures["P=2"][kind] / figures["P=1, 1 thread"][kind]
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
    parser.add_argument("--throughput-trials", type=int, default=16, help="trials per throughput run (16)")
    parser.add_argument("--search-epochs", type=int, default=30, help="epochs per 'search' throughput trial (30)")
    parser.add_argument("--throughput-epochs", type=int, default=4, help="epochs per 'compute' throughput trial (4)")
    parser.add_argument("--throughput-rows", type=int, default=20000, help="rows of the 'compute' data (20000)")
    parser.add_argument("--workloads", default="search,compute", help="throughput workloads (search,compute)")
    parser.add_argument("--parts", default="throughput,target,rscv", help="which parts to run (all three)")
    parser.add_argument("--seeds", type=int, help="seeds of the time-to-target runs (3; quick 2)")
    parser.add_argument("--target", type=float, default=0.045, help="target validation cross-entropy (0.045)")
    parser.add_argument("--target-epochs", type=int, default=30, help="epochs per time-to-target trial (30)")
    parser.add_argument("--cap", type=int, default=150,
                        help="most trials (complete + pruned) of a time-to-target run (150); a run that does not "
                             "reach the target counts its wall time, a lower bound")
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
        names = [name for name in args.workloads.split(",") if name]
        unknown = sorted(set(names) - set(WORKLOADS))
        if unknown:
            raise SystemExit(f"--workloads: unknown {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
        files = {"search": data}
        if "compute" in names:
            files["compute"] = write_throughput_data(workdir, args.throughput_rows)
        tp = throughput({name: files[name] for name in names}, workdir, reps, args.throughput_trials,
                        {"search": args.search_epochs, "compute": args.throughput_epochs})
    if "target" in parts:
        ttt = time_to_target(data, workdir, seeds, args.target, args.cap, args.target_epochs)
    if "rscv" in parts:
        rscv = randomized_search(data, args.rscv_iter, args.target_epochs, args.target, seed=0)
    print(markdown(args, tp, ttt, rscv))
    print(f"\nLoad average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores (other processes share the machine: quote ratios, not absolutes).")
    if args.json:
        from paratrain.train.checkpoint import save_text_atomic  # a killed run leaves no half file
        save_text_atomic(json.dumps({"throughput": tp, "time_to_target": ttt, "randomized_search": rscv},
                                    indent=2, default=str), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
