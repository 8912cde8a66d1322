"""Strategy benchmark: single, ddp (plain and compressed), localsgd, sparse, async and hogwild side by side.

    python benchmarks/bench_strategies.py --json /tmp/bench_strategies.json
    python benchmarks/bench_strategies.py --quick
    python benchmarks/bench_strategies.py --only single,ddp,ddp-topk --epochs 4

Same data, model, seed and epochs for every row; 2 workers for the parallel rows.
Prints the configuration and progress to stderr, a Markdown table to stdout;
--json writes every raw figure (each epoch of each run). The logic lives in
paratrain.bench.strategies; this script only parses flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before torch is imported: the worker processes paratrain launches wait passively
# (launch/local.py); the single-process rows run in this process and must wait the
# same way, or their OpenMP threads spin and thrash on a loaded 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROWS = ("single-1t, single, single-global-batch, no-comm (ceiling), ddp, ddp-fp16, ddp-bf16, ddp-int8, ddp-topk, "
        "ddp-at-topk-lr (check), ddp-powersgd, localsgd, sparse, async, hogwild, stale (probe)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run: 10,000 rows, MLP 128-128, 3 epochs")
    parser.add_argument("--rows", type=int, help="rows of Friedman #1 data (default 60,000)")
    parser.add_argument("--hidden", help="MLP hidden sizes, e.g. 1024,1024 (the default: 1.06M parameters)")
    parser.add_argument("--epochs", type=int,
                        help="epochs of every run (default 8; the first is a warm-up for samples/s)")
    parser.add_argument("--batch-size", type=int, help="rows per step per worker (default 256)")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], help="optimizer of every run (default adam)")
    parser.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    parser.add_argument("--schedule", help="learning-rate schedule of every run: cosine (default), none, step, onecycle")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 1); medians over them")
    parser.add_argument("--workers", type=int, help="workers of the parallel rows (default 2)")
    parser.add_argument("--seed", type=int, help="seed of the data; repetition r seeds split, weights and shuffles with SEED+r (0)")
    parser.add_argument("--noise", type=float, help="Friedman #1 noise (default 1.0)")
    parser.add_argument("--only", dest="contenders", help=f"comma-separated rows to run, of: {ROWS}")
    parser.add_argument("--topk-ratio", type=float, help="ratio of ddp topk and of sparse (default 0.01)")
    parser.add_argument("--topk-lr", type=float, help="learning rate of the ddp topk row and its dense check row "
                        "(default: with adam, lr / sqrt(topk ratio), 10x at 0.01; with sgd, lr)")
    parser.add_argument("--powersgd-rank", type=int, help="ddp PowerSGD rank (default 4)")
    parser.add_argument("--powersgd-warmup", type=int, help="plain steps before PowerSGD compresses (default 10)")
    parser.add_argument("--localsgd-period", type=int, help="steps between localsgd averages (default 8)")
    parser.add_argument("--max-staleness", type=int, help="async staleness bound (default: unbounded)")
    parser.add_argument("--target-loss", type=float, help="validation loss that counts as reached "
                        "(default: single on every core's best val_loss by the middle epoch x 1.05)")
    parser.add_argument("--target-epoch", type=int, help="the automatic target is the best val_loss up to this "
                        "epoch (default: the middle one)")
    parser.add_argument("--evals-per-epoch", type=int,
                        help="validations per epoch of every run: the resolution of time to target (default 4)")
    parser.add_argument("--workdir", type=Path, help="keep the run directories here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write all raw figures to this JSON file")
    parser.add_argument("--out", type=Path, help="also write bench.json, report.md, report.html and PNG plots "
                        "here (the same outputs as `paratrain bench`)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported after parsing: torch takes seconds to import, --help should not wait for it.
    from paratrain.bench.strategies import StrategyBenchConfig, run_strategy_benchmark, strategy_markdown_report
    from paratrain.config import parse_int_list
    from paratrain.errors import ParatrainError

    names = ("rows", "epochs", "batch_size", "lr", "reps", "workers", "seed", "noise", "topk_ratio", "topk_lr",
             "powersgd_rank", "powersgd_warmup", "localsgd_period", "max_staleness", "target_loss", "target_epoch",
             "evals_per_epoch", "schedule", "optimizer")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        if args.hidden:
            overrides["hidden"] = parse_int_list("hidden", args.hidden)
        if args.contenders:
            overrides["contenders"] = tuple(part.strip() for part in args.contenders.split(",") if part.strip())
        config = StrategyBenchConfig.quick(**overrides) if args.quick else StrategyBenchConfig(**overrides)
        print(f"[bench] config: {json.dumps({**vars(config), 'hidden': list(config.hidden)}, default=list)}",
              file=sys.stderr, flush=True)
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
        result = run_strategy_benchmark(config, workdir=args.workdir)
    except ParatrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(strategy_markdown_report(result))
    if args.json:
        from paratrain.train.checkpoint import save_text_atomic  # a killed run leaves no half file
        save_text_atomic(json.dumps(result.to_dict(), indent=2), args.json)
        print(f"[bench] raw figures written to {args.json}", file=sys.stderr)
    if args.out:
        from paratrain.bench.strategy_report import write_strategy_outputs

        write_strategy_outputs(result, args.out)
        print(f"[bench] bench.json, report.md, report.html and plots written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
