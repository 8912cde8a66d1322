"""The `paratrain` command: parse arguments, build a config, call the library.

Nothing here trains or reads data itself. torch is imported only inside the
subcommands, so that `paratrain --help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from paratrain.errors import ParatrainError

EXIT_ERROR = 1


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fit`; each maps to a config field of the same name (dashes -> underscores)."""
    parser.add_argument("--config", metavar="YAML", help="YAML file with config fields; flags given here override it")
    parser.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR from its last checkpoint")

    data = parser.add_argument_group("data")
    data.add_argument("--data", dest="path", metavar="FILE", help="training table: .csv, .parquet or .npz")
    data.add_argument("--target", help="name of the target column")
    data.add_argument("--task", choices=["auto", "regression", "classification"], help="default: auto (text target -> classification)")
    data.add_argument("--drop", metavar="COL", action="append", help="ignore this column (repeat, or comma-separate)")
    data.add_argument("--impute", choices=["mean", "median"], help="fill missing values instead of refusing them")
    data.add_argument("--max-categories", type=int, help="most distinct values a text column may have to be one-hot encoded (20)")
    data.add_argument("--unseen-category", choices=["error", "zeros"], help="at predict time, an unseen category is an error or all zeros")
    data.add_argument("--val-fraction", type=float, help="fraction of rows held out for validation (0.2)")
    data.add_argument("--no-shuffle", dest="shuffle", action="store_const", const=False, help="keep row order in each epoch")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=["mlp", "formula"], help="mlp (default) or a formula model")
    model.add_argument("--hidden", metavar="N,N", help="MLP hidden layer sizes, e.g. 256,256 (64,64)")
    model.add_argument("--activation", help="relu (default), gelu, tanh, silu, sigmoid, leaky_relu")
    model.add_argument("--dropout", type=float, help="dropout after each hidden layer (0)")
    model.add_argument("--norm", choices=["none", "batch", "layer"], help="normalization after each hidden layer")
    model.add_argument("--formula", help="formula model, e.g. 'b1*(1-exp(-b2*x))'; column names are variables")
    model.add_argument("--family", help="built-in formula: polynomial, exponential, logarithmic, power, logistic")
    model.add_argument("--degree", type=int, help="degree of the polynomial family (2)")
    model.add_argument("--init", metavar="NAME=V,...", help="initial formula parameters, e.g. b1=1,b2=0.1")

    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="default: adam")
    optim.add_argument("--lr", type=float, help="learning rate (1e-3)")
    optim.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    optim.add_argument("--weight-decay", type=float, help="weight decay (0)")
    optim.add_argument("--schedule", choices=["none", "cosine", "step", "onecycle"], help="learning-rate schedule")
    optim.add_argument("--step-size", type=int, help="epochs between decays of the step schedule (10)")
    optim.add_argument("--gamma", type=float, help="decay factor of the step schedule (0.1)")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, help="passes over the data (20)")
    train.add_argument("--batch-size", type=int, help="rows per micro-batch per worker (256)")
    train.add_argument("--accumulate", type=int, help="micro-batches per optimizer step (1)")
    train.add_argument("--patience", type=int, help="stop after this many epochs without a better validation loss")
    train.add_argument("--min-delta", type=float, help="smallest improvement that counts for --patience")
    train.add_argument("--seed", type=int, help="seed for initialization, split and shuffling (0)")
    # No argparse choices: the config's check gives the one-line error that names field, rule and value.
    train.add_argument("--precision", metavar="NAME",
                       help="auto (default: bf16 where a short probe measures it faster with the same loss, "
                            "else fp32), fp32, bf16 autocast, fp16 (CUDA)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto")
    train.add_argument("--stop-after", type=int, help="end this session after N epochs; continue with --resume")
    train.add_argument("--checkpoint-every", type=int, help="write checkpoint.pt every N epochs and at the end (1); 0 never")
    train.add_argument("--checkpoint-every-steps", type=int, metavar="K",
                       help="also write checkpoint.pt every K optimizer steps inside an epoch (0: never); "
                            "a resume or restart continues mid-epoch exactly")
    train.add_argument("--evals-per-epoch", type=int,
                       help="validations per epoch (1); above 1, metrics.jsonl lists those inside each epoch")

    parallel = parser.add_argument_group("parallelism")
    parallel.add_argument("--strategy", help="single (default), ddp, ...; see `paratrain strategies`; auto: the "
                          "cost model's choice for --workers (see `paratrain advise`)")
    parallel.add_argument("--workers", type=int, help="worker processes on this machine (1)")
    parallel.add_argument("--threads", type=int, help="intra-op threads per worker (default: cores / workers)")
    parallel.add_argument("--timeout", dest="timeout_s", type=float, help="seconds a collective may wait before failing (300)")
    parallel.add_argument("--max-restarts", type=int, metavar="N",
                          help="--workers: when a worker process dies, relaunch them all from the last "
                               "checkpoint up to N times (0); under torchrun use torchrun's --max-restarts")
    parallel.add_argument("--compress", metavar="NAME",
                          help="ddp gradient compression: fp16, bf16, powersgd:RANK, topk:RATIO, int8 "
                               "(with adam, topk:RATIO trains at --lr x 1/sqrt(RATIO); see --no-compress-lr-scale)")
    parallel.add_argument("--no-compress-lr-scale", dest="compress_lr_scale", action="store_const", const=False,
                          help="with adam, keep --lr as given under --compress topk:RATIO instead of "
                               "multiplying it by 1/sqrt(RATIO)")
    parallel.add_argument("--powersgd-warmup", type=int, help="plain all-reduce steps before PowerSGD compresses (10)")
    parallel.add_argument("--no-error-feedback", dest="error_feedback", action="store_const", const=False,
                          help="drop the compression error instead of carrying it to the next step (ablation)")
    parallel.add_argument("--no-overlap", dest="overlap", action="store_const", const=False,
                          help="sparse: wait for each step's exchange instead of overlapping it with the next step")
    parallel.add_argument("--sync-warmup", type=int, help="localsgd: synchronous steps before local steps (0)")
    parallel.add_argument("--max-staleness", type=int, help="async: bound on how far a worker may run ahead")
    parallel.add_argument("--microbatches", type=int,
                          help="pipeline: micro-batches each step's rows are split into (default 4)")
    parallel.add_argument("--pipeline-schedule", dest="pipeline_schedule", choices=("gpipe", "1f1b"),
                          help="pipeline: the schedule (1f1b, default, holds fewer activations; gpipe)")
    parallel.add_argument("--balance", choices=("params", "time"),
                          help="pipeline: split the layers into stages of equal parameter count (default) "
                               "or of equal measured layer time")
    parallel.add_argument("--reshard-after-forward", dest="reshard_after_forward", action="store_const",
                          const=True, help="fsdp: free the gathered parameters after forward (default)")
    parallel.add_argument("--no-reshard-after-forward", dest="reshard_after_forward", action="store_const",
                          const=False, help="fsdp: keep them gathered until backward (more memory, less traffic)")
    parallel.add_argument("--link", help="how the workers are joined: loopback (default), or an emulated network "
                                         "such as 100mbit, 1gbit, 2.5gbit: each worker in its own network "
                                         "namespace, the links limited with tc (needs root and iproute2; "
                                         "bandwidth only, no added latency)")
    parallel.add_argument("--calibration", metavar="JSON",
                          help="--strategy auto: predict from this `paratrain calibrate` file (default: a quick probe)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", help="run directory (default: a new folder under runs/)")
    output.add_argument("--quiet", dest="verbosity", action="store_const", const=0, help="print only errors and the summary")
    output.add_argument("--verbose", dest="verbosity", action="store_const", const=2, help="print debug logging")
    output.add_argument("--tracking", choices=["mlflow", "tensorboard"],
                        help="also log params, per-epoch metrics (and, for mlflow, the run directory) to a tracker; "
                             "needs: pip install 'paratrain[tracking]'")
    output.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: <run dir>/mlruns) or TensorBoard log folder "
                             "(default: <run dir>/tensorboard)")


_NOT_CONFIG = {"command", "config", "resume", "handler"}


def fit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields given on the command line (None means 'not given')."""
    from paratrain.config import parse_int_list

    values = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}
    if "drop" in values:
        values["drop"] = [col for item in values["drop"] for col in item.split(",") if col]
    if "hidden" in values:
        values["hidden"] = parse_int_list("hidden", values["hidden"])
    if "init" in values:
        values["init"] = _parse_init(values["init"])
    return values


def _parse_init(text: str) -> dict[str, float]:
    from paratrain.errors import ConfigError

    out = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"init={text!r}: {item!r} must look like NAME=NUMBER, e.g. b1=0.5")
    return out


def cmd_fit(args: argparse.Namespace) -> int:
    from paratrain.config import FitConfig, load_yaml
    from paratrain.train.fit import fit, process_start_time, resume

    # wall_seconds counts from the start of this command, imports included.
    started_at = process_start_time()
    overrides = fit_overrides(args)
    if args.resume:
        if args.config:
            from paratrain.errors import ConfigError

            raise ConfigError("--resume continues a run with its stored config; do not give --config too")
        _configure_logging(overrides.get("verbosity", 1))
        result = resume(args.resume, overrides, started_at=started_at)
    else:
        config = FitConfig.from_dict(load_yaml(args.config)) if args.config else FitConfig()
        config = config.updated(overrides)
        _configure_logging(config.output.verbosity)
        result = fit(config, started_at=started_at)
    if result.summary:  # under torchrun only rank 0 has one
        _print_summary(result.summary)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from pathlib import Path

    from paratrain.data.tables import read_table
    from paratrain.errors import ConfigError
    from paratrain.train.checkpoint import save_text_atomic
    from paratrain.train.rundir import output_error

    out_path = Path(args.out)
    if out_path.is_dir():
        raise ConfigError(f"--out '{args.out}' is a directory; give a file name, e.g. {out_path / 'predictions.csv'}")
    trained = _load_run(args.run, quantized=args.quantized)
    if args.proba and getattr(trained, "task", "regression") != "classification":
        raise ConfigError(f"--proba needs a classification run, but '{args.run}' was trained for regression; "
                          "drop --proba")
    frame = read_table(args.data)
    out = pd.DataFrame({args.column: trained.predict(frame)})
    if args.proba:
        probabilities = trained.predict_proba(frame)
        for index, label in enumerate(trained.classes):
            out[f"proba_{label}"] = probabilities[:, index]
    try:
        # A missing folder is made; a place that cannot be written is one line, not a traceback.
        save_text_atomic(out.to_csv(index=False), out_path)
    except OSError as exc:
        raise output_error("predictions", out_path, exc) from None
    print(f"wrote {len(out)} predictions to {args.out}", file=sys.stderr)
    return 0


def _load_run(run_dir: str, quantized: bool = False):
    """A torch run directory, or a scikit-learn best model written by `paratrain tune`."""
    from pathlib import Path

    from paratrain.errors import ConfigError
    from paratrain.predict import TrainedModel
    from paratrain.tune.sklearn_models import RUN_FILE, SklearnRun

    if (Path(run_dir) / RUN_FILE).is_file():
        if quantized:
            raise ConfigError(f"--quantized needs a torch run directory, but '{run_dir}' holds a scikit-learn "
                              "model; drop --quantized")
        return SklearnRun.load(run_dir)
    return TrainedModel.load(run_dir, quantized=quantized)


def cmd_strategies(args: argparse.Namespace) -> int:
    import dataclasses

    from paratrain.strategies import known_strategies, strategy_class

    for name in known_strategies():
        cls = strategy_class(name)
        print(f"{name:10s} {cls.description}")
        options = [f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Options)]
        if options:  # what --option / a flat YAML key of that name sets for this strategy
            print(f"{'':10s} options: {', '.join(options)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from paratrain.demo import run_demo

    _configure_logging(1)
    run_demo(args.out, rows=args.rows, workers=args.workers, epochs=args.epochs)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from paratrain.train.jsonsafe import dumps_strict

    print(dumps_strict(summary, indent=2))


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(format="paratrain: %(message)s", level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("paratrain").setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paratrain",
        description="Train MLPs and formula models on your data, on one process or data-parallel across many.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = commands.add_parser(
        "fit", help="train a model and write a run directory",
        description="Train on a CSV, Parquet or NPZ table. Writes a run directory with the model, the last "
        "checkpoint, metrics.jsonl, the resolved config.yaml and summary.json.",
        epilog="example: paratrain fit --data data.csv --target y --model mlp --hidden 256,256 "
        "--strategy ddp --workers 2 --epochs 20",
    )
    _fit_arguments(fit)
    fit.set_defaults(handler=cmd_fit)

    predict = commands.add_parser("predict", help="predict with a trained run",
                                  description="Apply a trained run's model (and its encoding) to a new table.")
    predict.add_argument("--run", required=True, metavar="DIR", help="run directory written by `paratrain fit`")
    predict.add_argument("--data", required=True, metavar="FILE", help="table with the same feature columns")
    predict.add_argument("--out", required=True, metavar="CSV", help="where to write the predictions")
    predict.add_argument("--column", default="prediction", help="name of the output column (prediction)")
    predict.add_argument("--proba", action="store_true",
                         help="classification: also write each class's probability, in columns proba_<class>")
    predict.add_argument("--quantized", action="store_true",
                         help="predict with the int8 model written by `paratrain quantize` (needs paratrain[quant])")
    predict.set_defaults(handler=cmd_predict)

    strategies = commands.add_parser("strategies", help="list the parallel strategies")
    strategies.set_defaults(handler=cmd_strategies)

    demo = commands.add_parser("demo", help="train on built-in synthetic data (Friedman #1), single and ddp",
                               description="Generate Friedman #1 data and train on it with `single` and `ddp`.")
    demo.add_argument("--out", default="runs/demo", help="folder for the data and the runs (runs/demo)")
    demo.add_argument("--rows", type=int, default=20000, help="rows of synthetic data (20000)")
    demo.add_argument("--workers", type=int, default=2, help="workers for the ddp run (2)")
    demo.add_argument("--epochs", type=int, default=5, help="epochs per run (5)")
    demo.set_defaults(handler=cmd_demo)

    # Each area registers its own subcommands (their modules import torch lazily too).
    from paratrain.bench.cli import add_parsers as add_bench_parsers
    from paratrain.costmodel.cli import add_parsers as add_costmodel_parsers
    from paratrain.curvefit.cli import add_parser as add_curvefit_parser
    from paratrain.infer.cli import add_parsers as add_infer_parsers
    from paratrain.launch.cli import add_parser as add_launch_parser
    from paratrain.tune.cli import add_parsers as add_tune_parsers

    add_curvefit_parser(commands)
    add_costmodel_parsers(commands)
    add_tune_parsers(commands)
    add_bench_parsers(commands)
    add_infer_parsers(commands)
    add_launch_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Before build_parser loads torch (and OpenMP reads its settings): bench runs one-process
        # rows in this process, whose threads must wait passively like those of launched workers,
        # or they spin and thrash on a loaded machine (measured 85x slower on 2 busy cores).
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    from paratrain.train import interrupts

    try:
        # SIGTERM (kill, timeout, Slurm, Kubernetes) ends a run as Ctrl-C does: workers stopped
        # at a clean point, temporary files removed, the resume command printed.
        with interrupts.handled():
            return handler(args)
    except ParatrainError as exc:
        print(f"paratrain: error: {exc}", file=sys.stderr)
        details = getattr(exc, "details", "")
        if details and getattr(args, "verbosity", None) == 2:
            print(details, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        print(_interrupted_message(exc, args.command), file=sys.stderr)
        return interrupts.exit_status(exc)  # 130 for SIGINT, 143 for SIGTERM


def _interrupted_message(exc: KeyboardInterrupt, command: str) -> str:
    """What was stopped, and for a run, the command that continues it."""
    import shlex
    import signal
    from pathlib import Path

    name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
    run_dir = getattr(exc, "run_dir", None)  # set by fit() while it held a run directory
    if run_dir is None:
        if command == "tune":  # completed trials are kept; the study goes on where it stopped
            return f"paratrain: interrupted by {name}; continue the search by running the same command again"
        return f"paratrain: interrupted by {name}"
    if not Path(run_dir).is_dir():  # removed: it held nothing yet
        return f"paratrain: interrupted by {name} before the first checkpoint of {run_dir}; nothing to resume"
    if not (Path(run_dir) / "checkpoint.pt").is_file():
        return (f"paratrain: interrupted by {name} before the first checkpoint of {run_dir}; nothing to resume: "
                f"run the same command again with --out {shlex.quote(str(run_dir))}, which reuses the directory")
    return f"paratrain: interrupted by {name}; continue with: paratrain fit --resume {shlex.quote(str(run_dir))}"


def run() -> None:
    """The `paratrain` command (and `python -m paratrain`): run, then exit with main's status.

    A rank started by torchrun ends at once after flushing its output: the run is written
    and the process group left, and the interpreter's teardown of gloo's threads sometimes
    aborts a finished rank ("terminate called without an active exception"), which torchrun
    reports as a failed job."""
    try:
        status = main()
    except KeyboardInterrupt:
        # Ctrl-C before main's own handling began (while the parser's modules import, about a
        # second): nothing was started or written yet, so one line is all there is to say.
        print("paratrain: interrupted by SIGINT before anything started", file=sys.stderr)
        status = 130
    if "torch.distributed" in sys.modules:  # only then can this be a torchrun rank that trained
        from paratrain.launch.torchrun_env import under_torchrun
        from paratrain.launch.lifeline import exit_now

        if under_torchrun():
            exit_now(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
