"""Int8 quantization of a trained MLP, written into its run directory.

Backend: ONNX Runtime's quantizer (``quantize_dynamic`` / ``quantize_static``), chosen by
measurement (benchmarks/bench_quantize.py, four runs, ranges below; README "Fast int8
inference and ONNX export"). AMD EPYC with AVX-512 VNNI, 2 shared vCPUs; torch 2.13.0,
onnxruntime 1.31.1, torchao 0.18.0; MLP 24 inputs -> 512x3 -> 1 trained on 32k rows;
1 thread; speed as a multiple of torch float32 (39-78k rows/s at batch 4096 with the
machine's load; 91 us at batch 1):

    backend                                    batch 4096    latency @1    test R² change
    ONNX Runtime int8 dynamic                  2.8-3.9x      27 us         -0.0001
    ONNX Runtime int8 static                   2.7-3.0x      26 us         -0.0000
    torch.ao quantize_dynamic (deprecated)     3.0-3.1x      107-113 us    -0.0002
    torchao Int8DynamicActivationInt8Weight    0.6-2.0x      1.1-1.5 ms    -0.0001
      the same under torch.compile             3.0-3.2x      266-296 us    -0.0001

ONNX Runtime matches the best int8 throughput at batch 4096, is 4-10x faster than the others
at batch 1 (a few rows per call), needs no compile step (torch.compile took 12-24 s in every
new process), still gains 1.5x on a 64x64 MLP (torchao compiled: 0.64x, slower than float32),
and its int8 model is a plain file that loads without pickle, made from the same graph as
`paratrain export`. torchao's int8 kernels need torch.compile to pay off on CPU.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paratrain.errors import ConfigError
from paratrain.infer.deps import quiet_root_warnings, require
from paratrain.infer.onnx_export import onnx_model_bytes, run_session, session
from paratrain.infer.runtime import INFO_FORMAT, file_sha256
from paratrain.train import rundir
from paratrain.train.checkpoint import save_bytes_atomic, save_json_atomic

MODES = ("dynamic", "static")


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize; validated at construction.

    Example:
        >>> QuantizeOptions(mode="static", calibration_rows=512).mode
        'static'
    """

    mode: str = "dynamic"
    """dynamic: int8 weights, activation ranges measured per batch at run time.
    static: int8 weights and activations, ranges measured once on calibration rows."""
    data: str | None = None
    """static: table to calibrate on; default the run's training table (its training rows)."""
    calibration_rows: int = 1024
    """static: rows drawn from the calibration table."""
    seed: int = 0
    """static: seed of the draw of calibration rows."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} must be one of {', '.join(map(repr, MODES))}")
        if type(self.calibration_rows) is not int or self.calibration_rows < 1:
            raise ConfigError(f"calibration_rows={self.calibration_rows!r} must be an integer >= 1")
        if self.data is not None and self.mode != "static":
            raise ConfigError(f"data={self.data!r} is for mode='static' (calibration); mode='dynamic' "
                              "needs no data: drop --data or use --mode static")


def has_vnni() -> bool:
    """Whether this CPU multiplies u8 x s8 without 16-bit saturation (AVX-512 VNNI, AVX-VNNI, AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quantize_run(run_dir: str | os.PathLike, options: QuantizeOptions = QuantizeOptions()) -> Path:
    """Write ``model.int8.onnx`` and ``model.int8.json`` into a finished run's directory.

    Returns:
        The path of the int8 model; ``TrainedModel.load(run_dir, quantized=True)`` uses it.

    Raises:
        ConfigError: No finished run, a formula model, a missing package, no calibration table.

    Example:
        >>> quantize_run("runs/my-run", QuantizeOptions(mode="static"))  # doctest: +SKIP
        PosixPath('runs/my-run/model.int8.onnx')
    """
    from paratrain.predict import TrainedModel

    run_dir = Path(run_dir)
    trained = TrainedModel.load(run_dir)
    if trained.spec.config.model != "mlp":
        raise ConfigError(f"model={trained.spec.config.model!r}: quantize is for MLPs; a formula model has a handful "
                          "of parameters and no matrix products, so int8 would only lose precision")
    calibration = None
    if options.mode == "static":
        from paratrain.infer.calibration import calibration_features

        calibration = calibration_features(run_dir, trained, options.data, options.calibration_rows, options.seed)
    # Without VNNI the u8 x s8 products saturate in 16 bits; 7-bit weights avoid that (ORT's advice).
    reduce_range = not has_vnni()
    model = int8_model_bytes(onnx_model_bytes(trained), options.mode, calibration, reduce_range)
    check = calibration if calibration is not None else _random_rows(trained)
    difference = _largest_difference(trained, model, check)
    path = run_dir / rundir.INT8_FILE
    save_bytes_atomic(model, path)
    # Written last: its hashes tie it to this model.pt and this int8 file, so a quantize that was
    # interrupted between the two writes, or a model.pt replaced since, is refused at load.
    save_json_atomic({
        "format": INFO_FORMAT, "version": 1, "mode": options.mode, "backend": "onnxruntime",
        "onnxruntime": require("onnxruntime", "int8 quantization").__version__,
        "reduce_range": reduce_range, "float32_layers": "first and last linear layers",
        "calibration": None if calibration is None else {
            "rows": len(calibration), "data": options.data or "training rows of the run's data", "seed": options.seed},
        "max_abs_difference_to_float32": difference,
        "difference_checked_on": "calibration rows" if calibration is not None else "256 random standard-normal rows",
        "model_sha256": file_sha256(run_dir / rundir.MODEL_FILE),
        "int8_sha256": file_sha256(path),
    }, run_dir / rundir.INT8_INFO_FILE)
    return path


def int8_model_bytes(float_model: bytes, mode: str, calibration: np.ndarray | None, reduce_range: bool,
                     float32_ends: bool = True) -> bytes:
    """Quantize an ONNX float32 MLP (from :func:`onnx_model_bytes`) with ONNX Runtime.

    ``float32_ends`` keeps the first and last linear layers in float32 (see :func:`_float32_layers`).
    """
    onnx = require("onnx", "int8 quantization")
    quantization = require("onnxruntime.quantization", "int8 quantization")
    graph = onnx.load_from_string(float_model)
    excluded = _float32_layers(graph) if float32_ends else []
    # The exporter records the weights' shapes in value_info; ORT's quantizer rewrites Gemm weights
    # (transposed) and its shape inference then fails on the stale entry ("(8) vs (32)"). Shapes are
    # inferred again anyway, so none are kept.
    del graph.graph.value_info[:]
    with tempfile.TemporaryDirectory(prefix="paratrain-quantize-") as folder, quiet_root_warnings():
        source, target = Path(folder) / "model.onnx", Path(folder) / "model.int8.onnx"
        source.write_bytes(graph.SerializeToString())
        common = dict(per_channel=True, reduce_range=reduce_range, nodes_to_exclude=excluded)
        if mode == "dynamic":
            quantization.quantize_dynamic(source, target, weight_type=quantization.QuantType.QInt8, **common)
        else:
            quantization.quantize_static(
                source, target, _calibration_reader(quantization.CalibrationDataReader, calibration),
                quant_format=quantization.QuantFormat.QDQ, activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8, **common)
        return target.read_bytes()


def _float32_layers(model: Any) -> list[str]:
    """Names of the first and last matrix-product nodes, which stay float32.

    Why: they hold a small share of the work of a wide MLP (inputs x width and width x outputs,
    against width x width for each inner layer), but static int8 there rounds every input feature
    and every output to 8 bits. Measured (bench_quantize.py, 512x3): static with every layer int8
    lost 0.0004 R² and 0.15 points of accuracy, with float32 ends 0.0000 and +0.01; the price is
    speed (3.5x instead of 2.8-3.0x float32 at batch 4096). Dynamic int8 measured the same either way.
    """
    products = [node.name for node in model.graph.node if node.op_type in ("Gemm", "MatMul")]
    return sorted({products[0], products[-1]}) if products else []


def _calibration_reader(base: type, features: np.ndarray) -> Any:
    """A CalibrationDataReader over ``features`` in batches of 256 (its base class is ORT's, imported late)."""
    from paratrain.infer.onnx_export import INPUT_NAME

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: np.ascontiguousarray(features[start:start + 256], dtype=np.float32)}
                                  for start in range(0, len(features), 256)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()


def _random_rows(trained: Any, rows: int = 256) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, len(trained.spec.feature_names))).astype(np.float32)


def _largest_difference(trained: Any, model: bytes, features: np.ndarray) -> float:
    """max |int8 - float32| output on ``features``, in encoded units (recorded, not enforced)."""
    import torch

    with torch.no_grad():
        expected = trained.model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).float().numpy()
    return float(np.max(np.abs(run_session(session(model), features) - expected)))
