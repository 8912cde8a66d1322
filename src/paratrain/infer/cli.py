"""`paratrain quantize` and `paratrain export`: parse, call the library, print where the files went."""

from __future__ import annotations

import argparse
import sys

FORMATS = ("onnx",)


def add_parsers(commands) -> None:
    quantize = commands.add_parser(
        "quantize", help="write an int8 copy of a trained MLP into its run directory (ONNX Runtime)",
        description="Quantize a finished run's MLP to int8 with ONNX Runtime and write model.int8.onnx and "
        "model.int8.json into the run directory; `paratrain predict --quantized` then uses it. "
        "Needs: pip install 'paratrain[quant]'.",
        epilog="example: paratrain quantize --run runs/my-run --mode static")
    quantize.add_argument("--run", required=True, metavar="DIR", help="run directory written by `paratrain fit`")
    # No argparse choices: QuantizeOptions' check gives the one-line error that names field, rule and value.
    quantize.add_argument("--mode", default="dynamic", metavar="MODE",
                          help="dynamic (default: int8 weights, activation ranges per batch) or static "
                               "(activation ranges calibrated once on training rows; fastest at batch 1)")
    quantize.add_argument("--data", metavar="FILE",
                          help="static: table to calibrate on (default: the run's training table, training rows)")
    quantize.add_argument("--calibration-rows", type=int, default=1024, metavar="N",
                          help="static: rows drawn for calibration (1024)")
    quantize.set_defaults(handler=cmd_quantize)

    export = commands.add_parser(
        "export", help="export a trained run's model to ONNX, with its column encoding documented",
        description="Write model.onnx (input: encoded features; output: standardized target or logits) and, "
        "beside it, model.onnx.json and model.onnx.md: column order, one-hot categories, means and stds, "
        "and how to turn the output into predictions. Needs: pip install 'paratrain[quant]'.",
        epilog="example: paratrain export --run runs/my-run --format onnx")
    export.add_argument("--run", required=True, metavar="DIR", help="run directory written by `paratrain fit`")
    export.add_argument("--format", default="onnx", metavar="NAME", help="onnx (the only format so far)")
    export.add_argument("--out", metavar="FILE", help="where to write the model (default: DIR/model.onnx)")
    export.set_defaults(handler=cmd_export)


def cmd_quantize(args: argparse.Namespace) -> int:
    from paratrain.infer.quantize import QuantizeOptions, quantize_run

    options = QuantizeOptions(mode=args.mode, data=args.data, calibration_rows=args.calibration_rows)
    path = quantize_run(args.run, options)
    print(f"wrote {path} ({options.mode} int8); predict with: paratrain predict --run {args.run} --quantized ...",
          file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from paratrain.errors import ConfigError

    if args.format not in FORMATS:
        raise ConfigError(f"format={args.format!r} must be one of {', '.join(map(repr, FORMATS))}")
    from paratrain.infer.onnx_export import export_onnx

    path = export_onnx(args.run, args.out)
    print(f"wrote {path} and its encoding, {path.name}.json and {path.name}.md", file=sys.stderr)
    return 0
