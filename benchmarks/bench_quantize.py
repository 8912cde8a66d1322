"""int8 inference against float32: accuracy and speed of each backend, side by side.

    python benchmarks/bench_quantize.py                # about 3 minutes on 2 cores
    python benchmarks/bench_quantize.py --quick        # small data, few repeats
    python benchmarks/bench_quantize.py --json /tmp/bench_quantize.json

Trains MLPs with `paratrain fit` on synthetic tables (a nonlinear regression and a
5-class classification; no download), then, on held-out rows, measures every variant:
torch float32 (what `predict` runs), ONNX Runtime float32, ONNX Runtime int8 dynamic and
static (what `quantize` writes; also with every layer int8, to show why the first and last
stay float32), torch.ao dynamic int8 (deprecated) and torchao int8 (eager; `--torchao-compile`
adds torch.compile). Accuracy: test R² or accuracy. Speed: throughput at batch 4096 and
latency at batch 1, medians of repeats run interleaved (A B C A B C), at 1 and 2 threads.
torchao rows need `pip install torchao==0.18.0`; without it they are left out.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd


def make_table(rows: int, seed: int, task: str) -> pd.DataFrame:
    """20 numeric columns and one category; the target mixes sines, products and squares."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(rows, 20))
    group = rng.choice(["a", "b", "c", "d"], size=rows)
    shift = pd.Series(group).map({"a": 0.0, "b": 0.5, "c": -0.5, "d": 1.0}).to_numpy()
    score = (np.sin(np.pi * x[:, 0] * x[:, 1]) + 2 * (x[:, 2] - 0.2) ** 2 + x[:, 3] * x[:, 4] + np.abs(x[:, 5])
             + 0.5 * np.tanh(3 * x[:, 6]) + shift + 0.3 * x[:, 7:12].sum(axis=1))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    frame["group"] = group
    if task == "regression":
        frame["y"] = score + 0.05 * rng.normal(size=rows)
    else:  # 5 classes by quantile of a noisy score
        noisy = score + 0.1 * rng.normal(size=rows)
        frame["y"] = np.digitize(noisy, np.quantile(score, [0.2, 0.4, 0.6, 0.8])).astype(str)
    return frame


@dataclass
class Case:
    name: str
    task: str
    hidden: str
    run_dir: Path = Path()
    test: pd.DataFrame = field(default_factory=pd.DataFrame)


def train(case: Case, rows: int, epochs: int, workdir: Path, seed: int) -> None:
    from paratrain.config import FitConfig
    from paratrain.train.fit import fit

    data = workdir / f"{case.name}.csv"
    make_table(rows, seed, case.task).to_csv(data, index=False)
    case.test = make_table(8192, seed + 1, case.task)
    config = FitConfig.from_dict({
        "path": str(data), "target": "y", "task": case.task, "hidden": [int(h) for h in case.hidden.split(",")],
        "epochs": epochs, "batch_size": 256, "lr": 1e-3, "schedule": "cosine", "seed": seed,
        "precision": "fp32", "out": str(workdir / case.name), "verbosity": 0, "checkpoint_every": 0})
    started = time.perf_counter()
    case.run_dir = fit(config).run_dir
    print(f"trained {case.name} ({case.hidden}) in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def variants(case: Case, threads: int, torchao_compile: bool) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> function from encoded features to raw outputs, all at ``threads`` threads."""
    import torch

    from paratrain.infer.calibration import calibration_features
    from paratrain.infer.onnx_export import onnx_model_bytes, run_session, session
    from paratrain.infer.quantize import has_vnni, int8_model_bytes
    from paratrain.predict import TrainedModel

    torch.set_num_threads(threads)
    trained = TrainedModel.load(case.run_dir)
    model = trained.model.eval()
    fp32 = onnx_model_bytes(trained)
    calibration = calibration_features(case.run_dir, trained, None, 1024)
    reduce_range = not has_vnni()

    def ort(model_bytes: bytes) -> Callable[[np.ndarray], np.ndarray]:
        sess = session(model_bytes, threads)
        return lambda x: run_session(sess, x)

    def torch_fn(module: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).float().numpy()
        return run

    out = {
        "torch fp32": torch_fn(model),
        "onnxruntime fp32": ort(fp32),
        "onnxruntime int8 dynamic": ort(int8_model_bytes(fp32, "dynamic", None, reduce_range)),
        "onnxruntime int8 static": ort(int8_model_bytes(fp32, "static", calibration, reduce_range)),
        "onnxruntime int8 dynamic, all layers": ort(int8_model_bytes(fp32, "dynamic", None, reduce_range, False)),
        "onnxruntime int8 static, all layers": ort(int8_model_bytes(fp32, "static", calibration, reduce_range, False)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        from torch.ao.quantization import quantize_dynamic

        out["torch.ao int8 dynamic (deprecated)"] = torch_fn(quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                                            dtype=torch.qint8))
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return out
    quantized = copy.deepcopy(model)
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    out["torchao int8 dynamic (eager)"] = torch_fn(quantized)
    if torchao_compile:
        out["torchao int8 dynamic (compiled)"] = torch_fn(torch.compile(quantized, dynamic=True))
    return out


def accuracy(case: Case, trained: Any, raw: np.ndarray, y: pd.Series) -> float:
    if case.task == "classification":  # labels compared as text: the CSV round trip makes "3" the integer 3
        labels = trained.encoder.inverse_target(raw.argmax(axis=1))
        return float(np.mean(np.asarray(labels).astype(str) == y.astype(str).to_numpy()))
    prediction = trained.encoder.inverse_target(raw[:, 0])
    truth = y.to_numpy(dtype=np.float64)
    return float(1 - np.sum((truth - prediction) ** 2) / np.sum((truth - truth.mean()) ** 2))


def median_seconds(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(case: Case, threads: int, reps: int, torchao_compile: bool) -> list[dict[str, Any]]:
    from paratrain.predict import TrainedModel

    trained = TrainedModel.load(case.run_dir)
    x_test = np.ascontiguousarray(trained.encoder.transform_features(case.test), dtype=np.float32)
    x_big, x_one = x_test[:4096], x_test[:1]
    fns = variants(case, threads, torchao_compile)
    scores = {name: accuracy(case, trained, fn(x_test), case.test["y"]) for name, fn in fns.items()}
    for fn in fns.values():  # warm-up (a compiled variant compiles here)
        fn(x_big), fn(x_one), fn(x_one)
    big: dict[str, list[float]] = {name: [] for name in fns}
    one: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):  # interleaved: each round runs every variant once
        for name, fn in fns.items():
            big[name].append(median_seconds(fn, x_big, 3))
            one[name].append(median_seconds(fn, x_one, 50))
    base = "torch fp32"
    rows = []
    for name in fns:
        rows.append({
            "case": case.name, "hidden": case.hidden, "threads": threads, "variant": name,
            "metric": "R²" if case.task == "regression" else "accuracy", "score": scores[name],
            "score_change": scores[name] - scores[base],
            "rows_per_s_4096": 4096 / statistics.median(big[name]),
            "latency_us_1": 1e6 * statistics.median(one[name]),
        })
    base_speed = rows[0]["rows_per_s_4096"]
    for row in rows:
        row["speedup_4096"] = row["rows_per_s_4096"] / base_speed
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | threads | variant | test score | change | rows/s @4096 | x torch fp32 | latency @1 (µs) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} ({r['hidden']}) | {r['threads']} | {r['variant']} | {r['metric']} {r['score']:.4f} | "
                     f"{r['score_change']:+.4f} | {r['rows_per_s_4096']:,.0f} | {r['speedup_4096']:.2f} | "
                     f"{r['latency_us_1']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6,000 rows, 2 epochs, 3 repeats")
    parser.add_argument("--rows", type=int, default=40000, help="training rows (40,000)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (8)")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repeats of the timings (7)")
    parser.add_argument("--threads", default="1,2", help="thread counts to measure (1,2)")
    parser.add_argument("--torchao-compile", action="store_true", help="also torchao under torch.compile (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs, args.reps = 6000, 2, 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch loads OpenMP: idle threads sleep instead of spinning (ONNX Runtime's too, see
    # infer.onnx_export.session), or on a shared 2-core machine the 2-thread rows measure the
    # neighbours' load, and each variant's spinning pool slows the next one, more than the kernels.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from paratrain.infer.quantize import has_vnni

    cases = [Case("regression-large", "regression", "512,512,512"), Case("regression-small", "regression", "64,64"),
             Case("classification-large", "classification", "512,512,512")]
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(2)
        for case in cases:
            train(case, args.rows, args.epochs, workdir, args.seed)
        rows = []
        load_before = os.getloadavg()[0]
        for case in cases:
            for threads in [int(t) for t in args.threads.split(",")]:
                rows.extend(measure(case, threads, args.reps, args.torchao_compile))
                print(f"measured {case.name} at {threads} thread(s)", file=sys.stderr)
    import onnxruntime

    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, VNNI: {has_vnni()}, {os.cpu_count()} cores; torch "
          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}; 1-minute load average {load_before:.1f} before the timings, "
          f"{os.getloadavg()[0]:.1f} after")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
