"""How good is `--strategy auto`? Its choice against the measured best, per bench case.

    python benchmarks/check_auto.py bench-out/bench.json --calibration calib.json

For every (workers, link) that a bench run measured, the advisor ranks the same
contenders (and one process, `single`, which auto may also choose) from the
calibration and the convergence factors that bench measured, exactly as
`fit --strategy auto` does; the script then looks up the measured time to target of
the advisor's first choice and of the measured best. A case counts as a hit when
the choice reaches the target within 10% of the best (a choice that never reached it
is a miss). The goal: hits in at least 80% of the cases.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SLACK = 1.10
"""A choice within 10% of the measured best time to target counts as a hit."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="+", help="bench.json files (paratrain bench --out DIR writes DIR/bench.json)")
    parser.add_argument("--calibration", required=True, help="paratrain calibrate's file for the same model and batch")
    parser.add_argument("--workers-only", action="store_true",
                        help="leave one process out: which strategy, given that the workers are used")
    parser.add_argument("--json", help="write the cases here")
    return parser.parse_args(argv)


def measured_time(row: dict | None) -> float:
    value = row.get("time_to_target_s") if row else None
    return float(value) if value is not None else math.inf


def cases(path: str, calibration, workers_only: bool = False) -> list[dict]:
    """One case per (workers >= 2, link) of one bench.json; ``workers_only`` leaves `single` out."""
    from paratrain.costmodel.advise import advise
    from paratrain.costmodel.convergence import bench_factors
    from paratrain.costmodel.network import as_network

    rows = [row for row in json.loads(Path(path).read_text())["rows"] if row.get("kind") == "strategy"]
    singles = [] if workers_only else [row for row in rows if row["strategy"] == "single" and int(row["workers"]) == 1]
    factors = bench_factors(path)
    found = []
    for workers, link in sorted({(int(r["workers"]), r["link"]) for r in rows if int(r["workers"]) > 1}):
        group = [r for r in rows if int(r["workers"]) == workers and r["link"] == link] + singles
        names = [r["strategy"] for r in group]
        advice = advise(calibration, as_network(link), workers, 1.0, contenders=names, bench_factors=factors,
                        verdict=False)
        choice = advice.best.prediction.contender
        chosen = next(r for r in group if r["strategy"] == choice)
        best = min(group, key=measured_time)
        found.append({"bench": path, "workers": workers, "link": link, "auto": choice,
                      "auto_time_to_target_s": measured_time(chosen), "best": best["strategy"],
                      "best_time_to_target_s": measured_time(best),
                      "hit": measured_time(chosen) <= SLACK * measured_time(best) < math.inf})
    return found


def main(argv=None) -> int:
    from paratrain.costmodel.calibration import load_calibration
    from paratrain.train.checkpoint import save_json_atomic

    args = parse_args(argv)
    calibration = load_calibration(args.calibration)
    found = [case for path in args.bench for case in cases(path, calibration, args.workers_only)]
    if not found:
        print("check_auto: no case with 2 or more workers in these bench files", file=sys.stderr)
        return 1
    print("| workers | link | auto's choice | its time to target | measured best | best time | within 10% |")
    print("|---|---|---|---|---|---|---|")
    for case in found:
        print(f"| {case['workers']} | {case['link']} | {case['auto']} | {case['auto_time_to_target_s']:.1f} s "
              f"| {case['best']} | {case['best_time_to_target_s']:.1f} s | {'yes' if case['hit'] else 'no'} |")
    hits = sum(case["hit"] for case in found)
    print(f"\nauto within 10% of the measured best in {hits} of {len(found)} cases ({hits / len(found):.0%}; goal >= 80%)")
    if args.json:
        save_json_atomic({"cases": found, "hits": hits, "total": len(found)}, Path(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
