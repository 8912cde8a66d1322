"""The ``paratrain curvefit`` subcommand: parse, call :mod:`paratrain.curvefit`, print.

Wire it into the main parser with ``add_parser(subparsers)``; the handler
returns an exit status and raises ParatrainError subclasses for user errors
(the main CLI prints those as one line and exits 1). torch is imported only
inside the handler, so ``paratrain --help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings

from paratrain.errors import ConfigError
from paratrain.train.jsonsafe import dumps_strict

__all__ = ["add_parser", "cmd_curvefit"]

_EPILOG = """\
examples:
  paratrain curvefit --formula "b1*(1-exp(-b2*x))" --data data.csv --target y --p0 500,1e-4
  paratrain curvefit --formula "a*exp(-k*t)+c" --data d.csv --target y --bounds "k=0:inf" --json
  paratrain curvefit --formula "A*exp(-k*t)" --data d.csv --target y --group-by batch --out fits.csv
  paratrain curvefit --family auto --data d.csv --target y --plot best.png
  python -m torch.distributed.run --standalone --nproc-per-node 2 -m paratrain curvefit --formula "a*exp(-k*t)" \\
      --data big.csv

names in the formula that are columns of the data are variables; every other name
is a parameter. --bounds takes NAME=LOW:HIGH items separated by commas; "inf" or an
empty side means unbounded (b1=0:10,b2=0:inf,b3=:5). --target may be an expression
of columns, e.g. "log(y)". Write --p0=-1,2 (with "=") when the first value is negative.
"""


def add_parser(subparsers) -> None:
    """Register ``curvefit`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "curvefit", help="fit a formula by nonlinear least squares (many starts, exact Jacobians)",
        description="Fit a formula to a table by batched multi-start Levenberg-Marquardt; or rank built-in "
        "model families (--family auto); or fit every group of a table at once (--group-by).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--formula", help="e.g. 'b1*(1-exp(-b2*x))'")
    model.add_argument("--family", metavar="NAME", help="'auto' ranks all built-in families; or one family name")
    model.add_argument("--x", dest="variable", metavar="COL", help="input column for --family (default: the only "
                       "other numeric column)")
    model.add_argument("--folds", type=int, default=5, help="cross-validation folds for --family (5)")
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="FILE", help="table: .csv, .tsv, .parquet or .npz")
    data.add_argument("--target", default="y", help="response column or expression of columns (y)")
    data.add_argument("--group-by", dest="group_by", metavar="COL", help="fit the formula to every group of COL")
    search = parser.add_argument_group("search")
    search.add_argument("--p0", help="starting values: '500,1e-4' (formula order) or 'b1=500,b2=1e-4'")
    search.add_argument("--bounds", help="e.g. 'b1=0:10,b2=0:inf' (projection onto the box)")
    search.add_argument("--starts", type=int, help="starting points (256; per group with --group-by: 1; "
                        "per fit with --family: 32)")
    search.add_argument("--seed", type=int, default=0, help="seed of the start design and folds (0)")
    search.add_argument("--max-iter", dest="max_iter", type=int, default=1000, help="polish iterations (1000)")
    search.add_argument("--workers", type=int, help="data-parallel processes for very large data (1; under "
                        "torchrun: its WORLD_SIZE, one rank each)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON (JSON lines per group with --group-by)")
    output.add_argument("--plot", metavar="PNG", help="draw data and fit (predicted vs observed for several inputs)")
    output.add_argument("--out", metavar="FILE", help="with --group-by: write the per-group results here (CSV, "
                        "or JSON lines with --json)")
    parser.set_defaults(handler=cmd_curvefit)


def cmd_curvefit(args: argparse.Namespace) -> int:
    """Run the fit the flags describe; warnings go to stderr as 'paratrain: warning: ...'."""
    from paratrain.data.tables import read_table

    if bool(args.formula) == bool(args.family):
        raise ConfigError("give exactly one of --formula (your model) or --family (built-in models, e.g. auto)")
    if args.group_by and args.family:
        raise ConfigError("--group-by fits one --formula per group; it cannot be combined with --family")
    if args.out and not args.group_by:
        raise ConfigError("--out writes per-group results; use it with --group-by (use --json for one fit)")
    args.workers, speaks = _ranks(args)
    frame = read_table(args.data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.family:
            status = _families(args, frame)
        elif args.group_by:
            status = _groups(args, frame)
        else:
            status = _single(args, frame, speaks)
    from paratrain.curvefit.fit import CurveFitWarning

    for warning in caught:  # only ours: third-party deprecation noise is not the user's business
        if speaks and issubclass(warning.category, CurveFitWarning):
            print(f"paratrain: warning: {warning.message}", file=sys.stderr)
    return status


def _ranks(args) -> tuple[int, bool]:
    """The workers to fit with, and whether this process prints: under torchrun, every rank
    fits its share of the rows and rank 0 alone prints and writes."""
    from paratrain.launch.torchrun_env import torchrun_env

    env = torchrun_env()
    if env is None:
        return args.workers or 1, True
    if args.workers not in (None, env.world_size):
        raise ConfigError(f"--workers {args.workers} under torchrun, which started {env.world_size} ranks "
                          f"(WORLD_SIZE): omit --workers, or give --workers {env.world_size}; each rank fits "
                          "its share of the rows")
    if env.world_size > 1 and (args.group_by or args.family):
        raise ConfigError(f"--{'group-by' if args.group_by else 'family'} runs in one process; under torchrun "
                          f"each of the {env.world_size} ranks would repeat it: run it without torchrun")
    return env.world_size, env.is_main


def _single(args, frame, speaks: bool = True) -> int:
    from paratrain.curvefit import curve_fit

    result = curve_fit(args.formula, frame, target=args.target, p0=args.p0, bounds=args.bounds,
                       starts=args.starts or 256, seed=args.seed, max_iter=args.max_iter, workers=args.workers)
    if not speaks:  # another rank of the same fit: rank 0 prints the same result
        return 0
    if args.json:
        print(dumps_strict(result.to_dict()))
    else:
        print(format_result(result))
    if args.plot:
        from paratrain.curvefit.plot import plot_fit

        plot_fit({"fit": (result.formula, result.params)}, frame, args.target, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _groups(args, frame) -> int:
    from paratrain.curvefit import fit_groups

    if args.plot:
        raise ConfigError("--plot draws one fit; it is not available with --group-by")
    table = fit_groups(args.formula, frame, group_by=args.group_by, target=args.target, p0=args.p0,
                       bounds=args.bounds, starts=args.starts or 1, seed=args.seed, max_iter=args.max_iter)
    if args.json:
        text = "".join(dumps_strict(_jsonable(row)) + "\n" for row in table.to_dict(orient="records"))
    else:
        text = table.to_csv(index=False)
    if args.out:
        from paratrain.train.checkpoint import save_text_atomic

        save_text_atomic(text, args.out)
        print(f"wrote {len(table)} group results to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _families(args, frame) -> int:
    from paratrain.curvefit import fit_families

    names = "all" if args.family == "auto" else [args.family]
    report = fit_families(frame, target=args.target, variable=args.variable, families=names, folds=args.folds,
                          starts=args.starts or 32, seed=args.seed)
    if args.json:
        best = report.fits.get(report.best)
        print(dumps_strict({"ranking": [_jsonable(row) for row in report.table.to_dict(orient="records")],
                          "best": report.best, "fit": best.to_dict() if best else None}))
    else:
        print(format_ranking(report.table))
    if args.plot:
        from paratrain.curvefit.plot import plot_fit

        top = [name for name in report.table["family"] if name in report.fits][:3]
        curves = {name: (report.fits[name].formula, report.fits[name].params) for name in top}
        plot_fit(curves, frame, args.target, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def format_result(result) -> str:
    """The readable table: value, standard error and 95% t-interval per parameter."""
    ci = result.confidence_intervals(0.95)
    width = max(9, *(len(name) for name in result.params))
    lines = [f"{result.target} ~ {result.formula}",
             f"rows {result.n_obs}, parameters {len(result.params)}, degrees of freedom {result.dof}",
             "",
             f"{'parameter':<{width}}  {'value':>15}  {'std. error':>12}  {'95% CI low':>15}  {'95% CI high':>15}"]
    for name, value in result.params.items():
        low, high = ci[name]
        lines.append(f"{name:<{width}}  {value:>15.8g}  {result.stderr[name]:>12.5g}  {low:>15.8g}  {high:>15.8g}")
    lines += ["",
              f"RSS {result.rss:.10g}   R² {result.r2:.8g}   iterations {result.n_iter}   "
              f"starts {result.starts_used}",
              f"converged: {'yes' if result.converged else 'NO'} ({result.message})"]
    return "\n".join(lines)


def format_ranking(table) -> str:
    """The family ranking, best first."""
    lines = [f"{'rank':>4}  {'family':<12} {'k':>2}  {'CV RMSE':>11}  {'AIC':>11}  {'BIC':>11}  {'R²':>9}  "
             f"{'conv.':>5}  formula"]
    for row in table.to_dict(orient="records"):
        cv = math.sqrt(row["cv_mse"]) if row["cv_mse"] == row["cv_mse"] else float("nan")
        note = f"  ({row['note']})" if row.get("note") else ""
        k = "" if row["k"] is None or row["k"] != row["k"] else int(row["k"])
        converged = "yes" if row["converged"] else "no"
        lines.append(f"{row['rank']:>4}  {row['family']:<12} {k:>2}  {cv:>11.5g}  {row['aic']:>11.5g}  "
                     f"{row['bic']:>11.5g}  {row['r2']:>9.6f}  {converged:>5}  {row['formula']}{note}")
    return "\n".join(lines)


def _jsonable(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[str(key)] = value
    return out
