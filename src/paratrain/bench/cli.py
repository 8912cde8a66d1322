"""The `paratrain bench` and `paratrain report` subcommands: parse, build a BenchConfig, call the library."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_parsers(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help="measure strategies and worker counts on your workload",
        description="Train every contender on every worker count (and link), interleaved over repetitions, and "
        "write bench.json, report.md, report.html and PNG plots. Without --config or --data: Friedman #1, "
        "60,000 rows, MLP 1024-1024.",
        epilog="example: paratrain bench --data data.csv --target y --strategies single,ddp,ddp+topk:0.01,"
        "localsgd:8 --workers 1,2 --repeat 3 --out bench-out")
    workload = bench.add_argument_group("workload")
    workload.add_argument("--config", metavar="YAML", help="fit config (data, model, optimizer, batch, epochs)")
    workload.add_argument("--data", dest="path", metavar="FILE", help="training table (.csv, .parquet, .npz)")
    workload.add_argument("--target", help="name of the target column")
    workload.add_argument("--rows", type=int, help="rows of the default Friedman #1 workload (60000)")
    workload.add_argument("--hidden", metavar="N,N", help="MLP hidden sizes (default workload: 1024,1024)")
    workload.add_argument("--batch-size", type=int, help="rows per step per worker (256)")
    workload.add_argument("--lr", type=float, help="learning rate (1e-3)")
    workload.add_argument("--epochs", type=int, help="epochs of every run (8; the first is a warm-up)")
    workload.add_argument("--evals-per-epoch", type=int, help="validations per epoch: the resolution of time to "
                          "target (4)")
    workload.add_argument("--seed", type=int, help="seed; repetition r uses SEED+r (0)")
    rows = bench.add_argument_group("rows")
    rows.add_argument("--strategies", help="comma-separated contenders, e.g. single,ddp,ddp+powersgd:4,"
                      "ddp+topk:0.01,localsgd:8,sparse:0.01 (default: every registered one); 'stale' adds the probe")
    rows.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2,4 (1,2)")
    rows.add_argument("--link", default="loopback", help="links, e.g. loopback,1gbit,100mbit (loopback)")
    measure = bench.add_argument_group("measurement")
    measure.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; medians over them (3)")
    measure.add_argument("--target-loss", type=float, help="validation loss that counts as reached (default: the "
                         "single row's best by the middle epoch x 1.05)")
    measure.add_argument("--max-seconds-per-run", type=float, help="stop a run after the epoch in which its "
                         "training seconds pass this")
    measure.add_argument("--calibration", metavar="JSON", help="calibration file (paratrain calibrate): predicted "
                         "step times beside the measured ones")
    bench.add_argument("--out", required=True, metavar="DIR", help="folder for bench.json, the reports and plots")
    bench.add_argument("--workdir", metavar="DIR", help="keep the run directories here (default: a temp folder)")
    bench.set_defaults(handler=cmd_bench)

    report = commands.add_parser(
        "report", help="report run directories side by side (loss curves, throughput, summaries)",
        description="Read the metrics.jsonl and summary.json of each run directory and write report.md, "
        "report.html and PNG plots.")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `paratrain fit`")
    report.add_argument("--out", required=True, metavar="DIR", help="folder for the report")
    report.set_defaults(handler=cmd_report)


_ROW_FIELDS = ("out", "workers", "strategy", "threads", "link")


def build_bench_config(args: argparse.Namespace):
    """The BenchConfig the flags describe."""
    from paratrain.bench.measurement import BenchConfig
    from paratrain.config import FitConfig, load_yaml, parse_int_list
    from paratrain.errors import ConfigError
    from paratrain.launch.links import parse_links

    from paratrain.bench.contenders import parse_contenders

    parse_contenders(args.strategies)  # a typo fails at once, before any data is made or read
    shared = {"contenders": args.strategies, "workers": parse_int_list("workers", args.workers),
              "links": [link.name for link in parse_links(args.link, "link")], "repeat": args.repeat,
              "target_loss": args.target_loss, "max_seconds_per_run": args.max_seconds_per_run,
              "calibration": args.calibration}
    overrides = {name: getattr(args, name) for name in ("batch_size", "lr", "epochs", "evals_per_epoch", "seed")
                 if getattr(args, name) is not None}
    if args.hidden:
        overrides["hidden"] = parse_int_list("hidden", args.hidden)
    if args.config or args.path:
        if args.rows is not None:
            raise ConfigError(f"rows={args.rows!r} sizes the built-in workload only; drop --rows with --config/--data")
        fit = {**(load_yaml(args.config) if args.config else {}), **overrides}
        if args.path:
            fit["path"] = args.path
        if args.target:
            fit["target"] = args.target
        # Bench's rows set these, flat or in their sections; each row's strategy options too (a
        # config's sync_warmup would not apply to the ddp row), so the shared part carries none.
        from paratrain.config import strategy_option_names

        for name in (*_ROW_FIELDS, *sorted(strategy_option_names()), "options"):
            fit.pop(name, None)
            for section in fit.values():
                if isinstance(section, dict):
                    section.pop(name, None)
        resolved = FitConfig.from_dict(fit)
        if not resolved.data.target:
            raise ConfigError("target is required with --config/--data: give --target COLUMN")
        if not any("evals_per_epoch" in part for part in (fit, *[v for v in fit.values() if isinstance(v, dict)])):
            fit["evals_per_epoch"] = 4  # time to target at a quarter of an epoch, unless the config asks otherwise
        workload = f"{resolved.data.path or args.config}, target {resolved.data.target}"
        return BenchConfig(fit=fit, workload=workload, **shared)
    hidden = overrides.pop("hidden", (1024, 1024))
    seed = overrides.pop("seed", 0)
    return BenchConfig.default(rows=args.rows or 60_000, hidden=tuple(hidden), seed=seed, fit=overrides, **shared)


def cmd_bench(args: argparse.Namespace) -> int:
    # OMP_WAIT_POLICY=PASSIVE is set by paratrain.cli.main before torch loads (too late here).
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        print("bench: warning: OMP_WAIT_POLICY is not PASSIVE in this process, unlike the workers paratrain "
              "launches; one-process rows may thrash on a loaded machine", file=sys.stderr)
    from paratrain.bench.harness import run_bench
    from paratrain.bench.live import LiveTable

    config = build_bench_config(args)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    document = run_bench(config, args.out, LiveTable(), args.workdir)
    print(f"bench: {len(document['rows'])} rows written to {os.path.join(args.out, 'bench.json')}, "
          f"report.md and report.html", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from paratrain.bench.rundirs import write_run_report

    write_run_report(args.runs, args.out)
    print(f"report of {len(args.runs)} run(s) written to {os.path.join(args.out, 'report.html')}", file=sys.stderr)
    return 0
