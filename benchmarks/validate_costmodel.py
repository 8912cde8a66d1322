"""Check the cost model against measurement: predicted vs measured step time for every default contender.

    python benchmarks/validate_costmodel.py --workers 2,4 --link loopback
    python benchmarks/validate_costmodel.py --calibration calib.json --json /tmp/validate.json

Calibrates (or loads a calibration), then trains each contender for a few epochs
through ``paratrain.train.fit.fit`` on Friedman #1 rows with the benchmark's model
(MLP 1024-1024, 1.06M parameters, batch 256) and takes the measured step time as
workers x batch / samples per second (the best of the epochs after the first, a
warm-up: on a shared machine other processes only add time; calibration likewise
keeps its fastest repeats). Per (workers, link): each row's predicted and measured step, the median
and maximum absolute % error, and Kendall's tau between the predicted and measured
order of samples per second, and how far apart the first contender measures when
run once more after the others (the machine's own noise). Emulated links (1gbit, 100mbit) run only where the
launcher can emulate them; otherwise they are skipped and the script says so.
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

# Before torch is imported: the single-process rows run in this process and must wait
# passively like the launched workers, or their OpenMP threads spin on a loaded machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,4", help="worker counts (2,4)")
    parser.add_argument("--link", default="loopback", help="links, e.g. loopback,1gbit,100mbit (loopback)")
    parser.add_argument("--rows", type=int, default=25_600, help="rows of Friedman #1 data (25,600)")
    parser.add_argument("--hidden", default="1024,1024", help="MLP hidden sizes (1024,1024)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up (3)")
    parser.add_argument("--contenders", help="comma-separated contenders (default: every default contender)")
    parser.add_argument("--calibration", help="use this calibration instead of calibrating first")
    parser.add_argument("--budget-s", type=float, default=60.0, help="calibration budget (60)")
    parser.add_argument("--json", help="write every figure here")
    return parser.parse_args(argv)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two orderings of the same items (1: same order, -1: reversed)."""
    n = len(a)
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (a[i] - a[j]) * (b[i] - b[j])
            concordant += s > 0
            discordant += s < 0
    pairs = n * (n - 1) / 2
    return (concordant - discordant) / pairs if pairs else 1.0


def measured_step(config, frame, contender: str, workers: int, link: str, out: Path) -> tuple[float, float]:
    """(seconds per step of one worker, samples/s of all workers), medians over the epochs after the first."""
    from paratrain.strategies import split_contender, strategy_class
    from paratrain.train.fit import fit

    strategy, compress = split_contender(contender)
    p = workers if strategy_class(strategy).needs_process_group else 1
    # One process sends nothing: it runs the same on any link (and a link needs 2 or more workers).
    run = config.updated({"strategy": strategy, "compress": compress, "workers": p,
                          "link": link if p > 1 else "loopback", "out": str(out)})
    result = fit(run, data=frame)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    rates = [r["samples_per_s"] for r in records[1:] if r.get("samples_per_s")] or \
        [r["samples_per_s"] for r in records if r.get("samples_per_s")]
    # The best epoch: on a shared machine other processes only add time (calibration takes its
    # fastest repeats likewise).
    rate = max(rates)
    return p * config.train.batch_size / rate, rate


def main(argv=None) -> int:
    args = parse_args(argv)
    from paratrain.config import FitConfig, parse_int_list
    from paratrain.costmodel import load_calibration
    from paratrain.costmodel.calibrate import calibrate, link_launch_supported, workload_from_config
    from paratrain.costmodel.predict import predict_step
    from paratrain.demo import friedman1_frame
    from paratrain.launch.links import parse_links
    from paratrain.strategies import default_contenders, split_contender, strategy_class

    frame = friedman1_frame(args.rows)
    config = FitConfig.from_dict({"target": "y", "hidden": parse_int_list("hidden", args.hidden),
                                  "batch_size": args.batch_size, "epochs": args.epochs, "checkpoint_every": 0,
                                  "verbosity": 0, "seed": 0,
                                  # calibration times fp32 steps: the runs it is checked against must be fp32 too
                                  "precision": "fp32"})
    workers = parse_int_list("workers", args.workers)
    links = parse_links(args.link)
    usable = [link for link in links if not link.emulated or link_launch_supported()]
    for link in links:
        if link not in usable:
            print(f"skipping link {link.name}: this launcher cannot emulate links", file=sys.stderr)
    if args.calibration:
        calibration = load_calibration(args.calibration)
    else:
        started = time.monotonic()
        calibration = calibrate(workload_from_config(config, frame), (1, *workers), usable, args.budget_s,
                                say=lambda text: print(f"calibrate: {text}", file=sys.stderr))
        print(f"calibrated in {time.monotonic() - started:.1f} s: {'; '.join(calibration.measured)}", file=sys.stderr)
    contenders = args.contenders.split(",") if args.contenders else default_contenders()
    rows, settings = [], []
    with tempfile.TemporaryDirectory(prefix="validate-costmodel-") as scratch:
        for link in usable:
            for p in workers:
                setting = []
                for index, contender in enumerate(contenders):
                    cls = strategy_class(split_contender(contender)[0])
                    if link.emulated and not cls.runs_across_hosts:
                        continue
                    predicted = predict_step(calibration, contender, p, link)
                    out = Path(scratch) / f"{link.name}-{p}-{index}"
                    step, rate = measured_step(config, frame, contender, p, link.name, out)
                    error = (predicted.step_s - step) / step * 100
                    row = {"contender": contender, "workers": p, "link": link.name, "predicted_step_s": predicted.step_s,
                           "measured_step_s": step, "predicted_samples_per_s": predicted.samples_per_s,
                           "measured_samples_per_s": rate, "error_pct": error, "reason": predicted.reason}
                    print(f"{link.name:9s} p={p} {contender:16s} predicted {predicted.step_s * 1e3:7.1f} ms  "
                          f"measured {step * 1e3:7.1f} ms  error {error:+6.1f}%", file=sys.stderr)
                    setting.append(row)
                # The machine's own noise: the first contender once more, after all the others.
                first = setting[0]
                again, _ = measured_step(config, frame, first["contender"], p, link.name, Path(scratch) / f"{link.name}-{p}-again")
                noise = abs(again - first["measured_step_s"]) / first["measured_step_s"] * 100
                print(f"{link.name:9s} p={p} {first['contender']:16s} measured again {again * 1e3:7.1f} ms: "
                      f"the same run {noise:.0f}% apart", file=sys.stderr)
                errors = [abs(r["error_pct"]) for r in setting]
                tau = kendall_tau([r["predicted_samples_per_s"] for r in setting],
                                  [r["measured_samples_per_s"] for r in setting])
                # The contender the model would pick by throughput, measured against the measured best.
                picked = max(setting, key=lambda r: r["predicted_samples_per_s"])
                best = max(setting, key=lambda r: r["measured_samples_per_s"])
                shortfall = (1 - picked["measured_samples_per_s"] / best["measured_samples_per_s"]) * 100
                settings.append({"link": link.name, "workers": p, "median_abs_error_pct": statistics.median(errors),
                                 "max_abs_error_pct": max(errors), "kendall_tau": tau,
                                 "picked": picked["contender"], "measured_best": best["contender"],
                                 "picked_shortfall_pct": shortfall, "noise_pct": noise})
                rows += setting
    print("| link | workers | contender | predicted ms | measured ms | error % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['link']} | {r['workers']} | {r['contender']} | {r['predicted_step_s'] * 1e3:.1f} | "
              f"{r['measured_step_s'] * 1e3:.1f} | {r['error_pct']:+.1f} |")
    print()
    print("| link | workers | median abs error % | max abs error % | Kendall tau | model's pick (samples/s) | "
          "measured best | pick's shortfall % | same run repeated, % apart |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in settings:
        print(f"| {s['link']} | {s['workers']} | {s['median_abs_error_pct']:.1f} | {s['max_abs_error_pct']:.1f} | "
              f"{s['kendall_tau']:.2f} | {s['picked']} | {s['measured_best']} | {s['picked_shortfall_pct']:.1f} | "
              f"{s['noise_pct']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration": calibration.to_dict(), "rows": rows,
                                               "settings": settings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
