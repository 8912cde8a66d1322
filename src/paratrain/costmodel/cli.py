"""`paratrain calibrate` and `paratrain advise`."""

from __future__ import annotations

import argparse
import os
import sys


def add_parsers(commands) -> None:
    calibrate = commands.add_parser(
        "calibrate", help="measure this machine for one model (at most 60 s); writes a calibration JSON",
        description="Time the collectives (all-reduce, all-gather, broadcast, send/recv) per link over message "
        "sizes 1 KiB..64 MiB with real gloo ranks, and one worker's training step while 1, 2, ... workers run "
        "at once; trimmed to the time budget. advise, bench and fit --strategy auto read the result.",
        epilog="example: paratrain calibrate --config run.yaml --workers 2,4 --out calib.json")
    _model_arguments(calibrate)
    calibrate.add_argument("--workers", default="2", metavar="N,N",
                           help="worker counts to measure compute for (1 always); default 2")
    calibrate.add_argument("--link", default="loopback", help="links to time the collectives on: loopback, "
                           "1gbit, 100mbit (emulated ones need root); default loopback")
    calibrate.add_argument("--budget-s", type=float, default=60.0, help="hard time budget in seconds (<= 60)")
    calibrate.add_argument("--out", required=True, metavar="JSON", help="where to write the calibration")
    calibrate.set_defaults(handler=cmd_calibrate)

    advise = commands.add_parser(
        "advise", help="rank the strategies by predicted time to target for N workers (runs nothing heavy)",
        description="Predict step time, samples/s, memory per worker, time and cost to the target for every "
        "strategy from a calibration (or a quick probe of this process), and rank them.",
        epilog="example: paratrain advise --config run.yaml --workers 64 --bandwidth 10gbit --price-per-hour 3.06")
    _model_arguments(advise)
    advise.add_argument("--workers", required=True, help="workers (one per machine with --bandwidth)")
    advise.add_argument("--bandwidth", help="network between machines, e.g. 10gbit; default: workers share "
                        "this machine over loopback")
    advise.add_argument("--latency", help="one message's latency between machines, e.g. 50us (default 50us)")
    advise.add_argument("--cores-per-worker", help="cores of each machine (default: as many as this one)")
    advise.add_argument("--price-per-hour", help="price of one machine per hour, for the cost column")
    advise.add_argument("--calibration", metavar="JSON", help="a `paratrain calibrate` file for this model")
    advise.add_argument("--bench", metavar="JSON", help="a bench.json: measured convergence factors")
    advise.add_argument("--memory-per-worker", metavar="SIZE",
                        help="memory each worker may use, e.g. 2GiB or 500MB: strategies predicted to need more "
                        "are ruled out (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB of 1000)")
    advise.add_argument("--json", action="store_true", help="print JSON instead of the table")
    advise.set_defaults(handler=cmd_advise)

    netcheck = commands.add_parser(
        "netcheck", help="time the network between the workers and compare it with a calibration or --bandwidth",
        description="Time all-reduce and send/recv over 1 KiB..64 MiB among the workers (local processes, or one "
        "per machine under torchrun / paratrain launch), fit latency and bandwidth as calibrate does, and say "
        "whether a 4 MiB all-reduce takes what the calibration or advise's --bandwidth/--latency predict.",
        epilog="example (on each of 2 machines): paratrain launch --nnodes 2 --node-rank R --master 10.0.0.1:29400 "
        "-- netcheck --bandwidth 10gbit --latency 50us")
    netcheck.add_argument("--workers", default="2", help="local worker processes (ignored under torchrun); default 2")
    netcheck.add_argument("--link", default="loopback", help="loopback, or an emulated link such as 100mbit (root)")
    netcheck.add_argument("--seconds", type=float, default=20.0, help="time to spend measuring (20)")
    netcheck.add_argument("--calibration", metavar="JSON", help="a calibrate file to compare with")
    netcheck.add_argument("--calibration-link", metavar="LINK",
                          help="which of the calibration's links to compare with (default: --link)")
    netcheck.add_argument("--bandwidth", help="the rate advise is given between machines, e.g. 10gbit")
    netcheck.add_argument("--latency", help="the latency advise is given, e.g. 50us (default 50us)")
    netcheck.add_argument("--json", metavar="FILE", help="also write the measurement and comparison as JSON")
    netcheck.set_defaults(handler=cmd_netcheck)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="the run's config (data, model, batch size, optimizer)")
    parser.add_argument("--data", dest="path", metavar="FILE", help="training table, instead of --config")
    parser.add_argument("--target", help="target column (with --data)")
    parser.add_argument("--hidden", metavar="N,N", help="MLP hidden sizes (with --data; default 64,64)")
    parser.add_argument("--batch-size", type=int, help="rows per step per worker (default 256)")
    parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="default: adam")


def _config(args: argparse.Namespace):
    from paratrain.config import FitConfig, load_yaml, parse_int_list
    from paratrain.errors import ConfigError

    if not args.config and not args.path:
        raise ConfigError("give --config run.yaml, or --data FILE --target COLUMN")
    config = FitConfig.from_dict(load_yaml(args.config)) if args.config else FitConfig()
    overrides = {key: getattr(args, key) for key in ("path", "target", "batch_size", "optimizer")
                 if getattr(args, key) is not None}
    if args.hidden is not None:
        overrides["hidden"] = parse_int_list("hidden", args.hidden)
    # The workers and strategy of the run do not change the step being measured.
    overrides.update({"strategy": "single", "workers": 1, "compress": None})
    return config.updated(overrides)


def _positive_int(field: str, text: object, minimum: int = 1) -> int:
    from paratrain.errors import ConfigError

    try:
        value = int(str(text))
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{field}={text!r} must be an integer >= {minimum}")
    return value


def _positive_float(field: str, text: object) -> float:
    import math

    from paratrain.errors import ConfigError

    try:
        value = float(str(text))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{field}={text!r} must be a number >= 0")
    return value


def cmd_calibrate(args: argparse.Namespace) -> int:
    # Before torch starts: this process times the one-process step, as the launched workers do (passively).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from paratrain.costmodel.calibrate import MAX_BUDGET_S, calibrate, workload_from_config
    from paratrain.errors import ConfigError
    from paratrain.launch.links import parse_links
    from paratrain.train.rundir import output_error

    workers = [_positive_int("workers", part) for part in str(args.workers).split(",") if part.strip()]
    links = parse_links(args.link)
    if not 0 < args.budget_s <= MAX_BUDGET_S:
        raise ConfigError(f"budget-s={args.budget_s!r} must be > 0 and <= {MAX_BUDGET_S:g}")
    config = _config(args)
    workload = workload_from_config(config)
    calibration = calibrate(workload, workers, links, args.budget_s,
                            say=lambda text: print(f"paratrain: calibrate: {text}", file=sys.stderr))
    try:
        calibration.save(args.out)
    except OSError as exc:
        raise output_error("calibration", args.out, exc) from None
    for line in calibration.measured:
        print(f"paratrain: measured {line}", file=sys.stderr)
    print(f"paratrain: wrote {args.out} ({calibration.fingerprint.describe()}, {calibration.elapsed_s:.1f} s)",
          file=sys.stderr)
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from paratrain.costmodel.advise import advise_for_config, format_advice
    from paratrain.costmodel.calibration import load_calibration
    from paratrain.costmodel.convergence import bench_factors
    from paratrain.costmodel.memory import parse_size
    from paratrain.costmodel.network import Network, parse_bandwidth, parse_latency
    from paratrain.data.prepare import load_frame
    from paratrain.launch.links import LOOPBACK
    from paratrain.train.jsonsafe import dumps_strict

    # Every flag is checked before any data is read or anything measured.
    workers = _positive_int("workers", args.workers)
    bits = parse_bandwidth(args.bandwidth) if args.bandwidth is not None else None
    latency = parse_latency(args.latency) if args.latency is not None else None
    cores = _positive_int("cores-per-worker", args.cores_per_worker) if args.cores_per_worker is not None else None
    price = _positive_float("price-per-hour", args.price_per_hour) if args.price_per_hour is not None else None
    memory = parse_size(args.memory_per_worker) if args.memory_per_worker is not None else None
    if args.calibration:
        load_calibration(args.calibration)  # a missing or foreign file fails before the data is read
    factors = bench_factors(args.bench) if args.bench else None
    config = _config(args)
    frame = load_frame(config.data.path)
    if bits is None:
        network = Network(LOOPBACK, None, latency, shared_machine=True)
    else:
        network = Network(args.bandwidth.strip().lower(), bits / 8, latency, shared_machine=False,
                          cores_per_worker=cores)
    advice, calibration = advise_for_config(config, frame, workers, network, args.calibration, price, factors,
                                            memory_per_worker=memory)
    if args.json:
        print(dumps_strict({**advice.to_dict(), "calibration": calibration.source,
                            "measured": calibration.measured}, indent=2))
    else:
        print(format_advice(advice, price))
        if calibration.source == "probe":
            print("(from a quick probe of one process; `paratrain calibrate` measures the collectives and "
                  "concurrent workers)")
    return 0


def cmd_netcheck(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from paratrain.costmodel.calibration import load_calibration
    from paratrain.costmodel.netcheck import compare, describe, measure_network
    from paratrain.costmodel.network import Network, as_network, collective_fit, parse_bandwidth, parse_latency
    from paratrain.errors import ConfigError
    from paratrain.launch.links import parse_link
    from paratrain.launch.torchrun_env import under_torchrun
    from paratrain.train.checkpoint import save_json_atomic
    from paratrain.train.rundir import output_error

    workers = _positive_int("workers", args.workers, minimum=2)
    link = parse_link(args.link)
    if not 2 <= args.seconds <= 600:
        raise ConfigError(f"seconds={args.seconds!r} must be between 2 and 600")
    if args.latency is not None and args.bandwidth is None:
        raise ConfigError("--latency describes the network of --bandwidth: give --bandwidth too")
    # Every input is checked before any process starts.
    calibration = load_calibration(args.calibration) if args.calibration else None
    expected = []
    if calibration is not None:
        name = args.calibration_link or link.name
        if name not in calibration.collectives:
            measured = ", ".join(sorted(calibration.collectives)) or "none"
            raise ConfigError(f"calibration-link={name!r}: {args.calibration} has no collectives timed on it "
                              f"(it has: {measured}); give --calibration-link with one of those")
        expected.append((collective_fit(calibration, as_network(name), "all_reduce"), f"{args.calibration} ({name})"))
    if args.bandwidth is not None:
        rate = parse_bandwidth(args.bandwidth)
        latency = parse_latency(args.latency) if args.latency is not None else None
        network = Network(args.bandwidth, rate / 8, latency, shared_machine=False)
        expected.append((collective_fit(calibration, network, "all_reduce"), f"advise --bandwidth {args.bandwidth}"))
    if under_torchrun() and link.emulated:
        raise ConfigError(f"link={link.name!r} emulates hosts for workers this command starts, but torchrun started "
                          "them: their network is real; drop --link")
    check = measure_network(workers, args.seconds, link)
    if check is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    lines = describe(check)
    comparisons = {}
    for fit, source in expected:
        more = compare(check, fit, source)
        comparisons[source] = more
        lines += more
    print("\n".join(lines))
    if args.json:
        try:
            save_json_atomic({**check.to_dict(), "comparisons": comparisons}, args.json)
        except OSError as exc:
            raise output_error("netcheck result", args.json, exc) from None
    return 0

