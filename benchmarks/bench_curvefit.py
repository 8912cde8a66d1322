"""Curve-fitting benchmark: paratrain.curvefit vs scipy.optimize.curve_fit, side by side.

    python benchmarks/bench_curvefit.py --nist            # 27 NIST StRD problems x 2 starts
    python benchmarks/bench_curvefit.py --speed           # 1,000 starts; 1,000 groups
    python benchmarks/bench_curvefit.py --speed --only b  # just the 1,000 groups
    python benchmarks/bench_curvefit.py --nist --speed --json /tmp/bench_curvefit.json

--nist: every problem from both of NIST's starting points, with paratrain
(defaults: 256 starts around p0, polish to 1e-15) and with scipy's curve_fit
(defaults: p0, Levenberg-Marquardt, finite differences). Digits = LRE =
-log10(|estimate - certified| / |certified|), the minimum over the parameters;
a fit "reaches" NIST when every parameter has >= 6 digits.

--speed: (a) 1,000 starting points of a 4-parameter model on 10,000 points:
one batched paratrain fit vs a loop of scipy curve_fit over the same 1,000
starts; (b) 1,000 groups of 50 points: paratrain's fit_groups (one batch) vs a
loop of curve_fit, one start (p0) per group on both sides. Reported times are
medians over --reps repetitions; the ratio is scipy / paratrain.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nist", action="store_true", help="accuracy on the 27 NIST StRD problems")
    parser.add_argument("--speed", action="store_true", help="speed: 1,000 starts and 1,000 groups")
    parser.add_argument("--problems", nargs="*", help="NIST problems to run (default: all 27)")
    parser.add_argument("--starts", type=int, default=256, help="paratrain starts per NIST fit (256)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each speed measurement (3)")
    parser.add_argument("--n-starts", type=int, default=1000, help="starting points in speed test (a)")
    parser.add_argument("--rows", type=int, default=10_000, help="data points in speed test (a)")
    parser.add_argument("--groups", type=int, default=1000, help="groups in speed test (b)")
    parser.add_argument("--group-rows", type=int, default=50, help="points per group in speed test (b)")
    parser.add_argument("--only", choices=("a", "b"), help="run only this part of the speed test")
    parser.add_argument("--json", type=Path, help="write every raw figure to this JSON file")
    args = parser.parse_args(argv)
    if not (args.nist or args.speed):
        parser.error("choose --nist, --speed or both")
    return args


# -- NIST ----------------------------------------------------------------------------


def _scipy_model(formula: str, names: list[str], variables: list[str]):
    """A numpy callable for scipy from the same formula (parsed safely, evaluated with torch)."""
    import torch

    from paratrain.models.formula import parse_formula

    parsed = parse_formula(formula)

    def f(X, *params):
        columns = X if len(variables) > 1 else (X,)
        env = {name: torch.as_tensor(np.asarray(v, dtype=float)) for name, v in zip(variables, columns)}
        env.update({name: torch.tensor(float(p), dtype=torch.float64) for name, p in zip(names, params)})
        with np.errstate(all="ignore"):
            return torch.broadcast_to(parsed.evaluate(env), (len(np.atleast_1d(columns[0])),)).numpy()
    return f


def run_nist(args) -> dict:
    from scipy.optimize import curve_fit as scipy_fit

    from paratrain.curvefit import curve_fit
    from paratrain.curvefit.nist import PROBLEMS, lre

    names = args.problems or list(PROBLEMS)
    rows = []
    print(f"{'problem':<9} {'start':>5}  {'paratrain':>9} {'scipy':>6}  {'time (s)':>8}  paratrain stderr digits",
          flush=True)
    for name in names:
        problem = PROBLEMS[name]
        frame = problem.frame()
        variables = [c for c in problem.columns if c != "y"]
        y = np.log(frame["y"].to_numpy()) if problem.target == "log(y)" else frame["y"].to_numpy()
        X = frame[variables].to_numpy().T if len(variables) > 1 else frame[variables[0]].to_numpy()
        model = _scipy_model(problem.formula, problem.names, variables)
        for which in (1, 2):
            start = problem.start(which)
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = curve_fit(problem.formula, frame, target=problem.target, p0=start, starts=args.starts,
                                    on_unidentifiable="warn")
                ours = min(lre(fit.params[b], c) for b, c in zip(problem.names, problem.certified))
                se = [lre(fit.stderr[b], c) for b, c in zip(problem.names, problem.certified_stderr or ()) if c]
                ours_se = min(se) if se else None
            except Exception as error:  # noqa: BLE001 - a benchmark reports failures, it does not stop
                ours, ours_se = 0.0, None
                print(f"  paratrain failed: {error}", file=sys.stderr)
            elapsed = time.perf_counter() - t0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    popt, _ = scipy_fit(model, X, y, p0=[start[b] for b in problem.names])
                theirs = min(lre(float(v), c) for v, c in zip(popt, problem.certified))
            except Exception:  # noqa: BLE001 - scipy raises RuntimeError when it gives up
                theirs = 0.0
            rows.append({"problem": name, "start": which, "paratrain": ours, "scipy": theirs, "seconds": elapsed,
                         "paratrain_stderr": ours_se})
            se_text = "-" if ours_se is None else f"{ours_se:.1f}"
            print(f"{name:<9} {which:>5}  {ours:>9.1f} {theirs:>6.1f}  {elapsed:>8.2f}  {se_text}", flush=True)
    ours_ok = sum(r["paratrain"] >= 6 for r in rows)
    scipy_ok = sum(r["scipy"] >= 6 for r in rows)
    print(f"\nfits reaching >= 6 digits: paratrain {ours_ok}/{len(rows)}, scipy curve_fit {scipy_ok}/{len(rows)}")
    failed = [f"{r['problem']} start {r['start']} ({r['paratrain']:.1f})" for r in rows if r["paratrain"] < 6]
    print(f"paratrain below 6 digits: {', '.join(failed) if failed else 'none'}")
    print(f"median digits: paratrain {statistics.median(r['paratrain'] for r in rows):.1f}, "
          f"scipy {statistics.median(r['scipy'] for r in rows):.1f}")
    return {"rows": rows, "paratrain_ok": ours_ok, "scipy_ok": scipy_ok, "fits": len(rows)}


# -- speed ---------------------------------------------------------------------------


FORMULA_A = "b1*exp(-b2*x) + b3*exp(-b4*x)"


def _biexp(x, b1, b2, b3, b4):
    return b1 * np.exp(-b2 * x) + b3 * np.exp(-b4 * x)


FORMULA_B = "a*exp(-b*x) + c"


def _decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def _group_rss(xg, yg, g, m, params) -> float:
    sl = slice(g * m, (g + 1) * m)
    return float(np.sum((_decay(xg[sl], *params) - yg[sl]) ** 2))


def _median_time(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _scipy_loop(f, x, y, starts):
    from scipy.optimize import curve_fit as scipy_fit

    best, failures = math.inf, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p0 in starts:
            try:
                popt, _ = scipy_fit(f, x, y, p0=p0)
                rss = float(np.sum((f(x, *popt) - y) ** 2))
                best = min(best, rss) if math.isfinite(rss) else best
            except Exception:  # noqa: BLE001 - RuntimeError when a start does not converge
                failures += 1
    return best, failures


def run_speed(args) -> dict:
    from paratrain.curvefit.starts import design_starts

    rng = np.random.default_rng(0)
    # (a) one data set, many starts.
    x = np.linspace(0, 10, args.rows)
    y = _biexp(x, 3.0, 1.5, 1.0, 0.2) + 0.01 * rng.normal(size=x.size)
    import torch

    p0 = np.array([1.0, 1.0, 1.0, 0.1])
    k = len(p0)
    starts = design_starts(torch.tensor(p0), args.n_starts, torch.full((k,), -math.inf),
                           torch.full((k,), math.inf), seed=0).numpy()
    out = {}
    if args.only != "b":
        out["a"] = _speed_a(args, x, y, starts)
    # (b) draws its data after (a)'s, so that --only b times the very same groups.
    G, m = args.groups, args.group_rows
    xg = np.tile(np.linspace(0, 8, m), G)
    truth = np.column_stack([rng.uniform(1, 5, G), rng.uniform(0.2, 1.5, G), rng.uniform(-1, 1, G)])
    yg = _decay(xg, *np.repeat(truth, m, axis=0).T) + 0.02 * rng.normal(size=xg.size)
    if args.only != "a":
        out["b"] = _speed_b(args, xg, yg)
    return out


def _speed_a(args, x, y, starts) -> dict:
    """(a) one data set, many starts: one batched fit vs a loop of scipy fits over the same starts."""
    from paratrain.curvefit import curve_fit

    curve_fit(FORMULA_A, x=x[:200], y=y[:200], starts=starts[:8])  # warm-up: torch's lazy imports

    def ours_a():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return curve_fit(FORMULA_A, x=x, y=y, starts=starts)
    t_ours_a, fit_a = _median_time(ours_a, args.reps)
    print(f"(a) paratrain, {args.n_starts} starts x {args.rows} points: {t_ours_a:.2f} s (median of {args.reps}), "
          f"RSS {fit_a.rss:.6g}", flush=True)
    t_scipy_a, (best_a, fail_a) = _median_time(lambda: _scipy_loop(_biexp, x, y, starts), args.reps)
    print(f"(a) scipy curve_fit loop over the same starts: {t_scipy_a:.2f} s (median of {args.reps}), best RSS "
          f"{best_a:.6g}, {fail_a} starts raised", flush=True)
    ratio_a = t_scipy_a / t_ours_a
    print(f"(a) speed-up {ratio_a:.1f}x (target >= 20x)", flush=True)
    return {"paratrain_s": t_ours_a, "scipy_s": t_scipy_a, "ratio": ratio_a, "paratrain_rss": fit_a.rss,
            "scipy_best_rss": best_a, "scipy_failed_starts": fail_a}


def _speed_b(args, xg, yg) -> dict:
    """(b) many groups, one start (p0) each: fit_groups vs a loop of scipy fits over the groups."""
    import pandas as pd

    from paratrain.curvefit import fit_groups

    G, m = args.groups, args.group_rows
    frame = pd.DataFrame({"g": np.repeat(np.arange(G), m), "x": xg, "y": yg})
    p0b = {"a": 1.0, "b": 0.5, "c": 0.0}
    fit_groups(FORMULA_B, frame[frame.g < 4], group_by="g", p0=p0b)  # warm-up

    def ours_b():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_groups(FORMULA_B, frame, group_by="g", p0=p0b)
    t_ours_b, table = _median_time(ours_b, args.reps)
    print(f"(b) paratrain fit_groups, {G} groups x {m} points: {t_ours_b:.3f} s (median of {args.reps}), "
          f"{int(table['converged'].sum())}/{G} converged", flush=True)

    def scipy_b():
        results = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for g in range(G):
                sl = slice(g * m, (g + 1) * m)
                try:
                    popt, _ = __import__("scipy.optimize", fromlist=["curve_fit"]).curve_fit(
                        _decay, xg[sl], yg[sl], p0=list(p0b.values()))
                    results.append(popt)
                except Exception:  # noqa: BLE001
                    results.append(None)
        return results
    t_scipy_b, scipy_params = _median_time(scipy_b, args.reps)
    ours = table[["a", "b", "c"]].to_numpy(dtype=float)
    differ = [g for g, p in enumerate(scipy_params)
              if p is None or not np.allclose(p, ours[g], rtol=1e-5, atol=1e-8)]
    agree = G - len(differ)
    print(f"(b) scipy curve_fit loop over the groups: {t_scipy_b:.3f} s (median of {args.reps}); "
          f"{agree}/{G} groups agree with paratrain to 1e-5", flush=True)
    if differ:  # whose error? Compare the RSS each side reached (same model function, same data).
        raised = sum(scipy_params[g] is None for g in differ)
        lower = sum(scipy_params[g] is not None and _group_rss(xg, yg, g, m, ours[g]) <=
                    _group_rss(xg, yg, g, m, scipy_params[g]) for g in differ)
        print(f"(b) of the {len(differ)} that differ: paratrain has the lower RSS in {lower}, scipy raised in "
              f"{raised}", flush=True)
    ratio_b = t_scipy_b / t_ours_b
    print(f"(b) speed-up {ratio_b:.1f}x (target >= 10x)", flush=True)
    return {"paratrain_s": t_ours_b, "scipy_s": t_scipy_b, "ratio": ratio_b, "groups_agreeing": agree,
            "groups_differing": differ}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = {}
    if args.nist:
        out["nist"] = run_nist(args)
    if args.speed:
        if args.nist:
            print()
        out["speed"] = run_speed(args)
    if args.json:
        from paratrain.train.checkpoint import save_text_atomic  # a killed run leaves no half file
        save_text_atomic(json.dumps(out, indent=2, default=float), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
