"""Export a trained run's model to ONNX, with its column encoding written beside it.

The ONNX graph holds the network only: its input is the encoded feature matrix that
:meth:`TableEncoder.transform_features` makes, its output the raw outputs (standardized
target or class logits). How to get from a table to that input and from the output back
to the target's units is data, not graph: ``model.onnx.json`` says it for programs,
``model.onnx.md`` for people. Keeping text handling (one-hot of categories) out of the graph
lets any ONNX runtime run the model, and keeps the target's de-scaling in float64.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from paratrain.errors import ConfigError
from paratrain.infer.deps import require
from paratrain.train import rundir
from paratrain.train.checkpoint import save_bytes_atomic, save_json_atomic, save_text_atomic

INPUT_NAME = "features"
OUTPUT_NAME = "outputs"
DOC_FORMAT = "paratrain.onnx-encoding"
EXPORT_TOLERANCE = 1e-4
"""Largest |ONNX - torch| output (encoded units) that export accepts; measured ~1e-6 for MLPs."""


def onnx_model_bytes(trained: Any) -> bytes:
    """Serialize ``trained.model`` to ONNX with a dynamic number of rows.

    Uses the torch.export-based exporter (``dynamo=True``, needs onnxscript): the TorchScript
    exporter of torch 2.13 warns that it will be removed.
    """
    torch = require("torch", "ONNX export")
    require("onnxscript", "ONNX export")
    example = torch.zeros(2, len(trained.spec.feature_names))  # 2 rows: a size of 1 would be specialized
    rows = torch.export.Dim("rows", min=1)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            trained.model.eval(), (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamo=True, dynamic_shapes=({0: rows},), verbose=False, report=False, optimize=True,
        )
    return program.model_proto.SerializeToString()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter logs a warning per missing torchvision op, and torch.export a FutureWarning
    # about its own pytree internals: neither concerns the user or our models.
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(previous)


def session(model: bytes | str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; ``threads`` intra-op threads (default: torch's setting)."""
    ort = require("onnxruntime", "ONNX inference")
    options = ort.SessionOptions()
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # One switch for both thread pools: where torch's threads are told to sleep when idle (a
        # shared machine), ORT's must not spin either. Measured on 2 busy cores, 2 threads, int8
        # MLP 512x3 at batch 4096: 32k rows/s spinning, 68k not; on idle cores spinning wins (516k vs 375k).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no notes about unused initializers
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_session(sess: Any, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Outputs for the rows of ``x`` (float32, encoded features), ``chunk`` rows at a time."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [sess.run([OUTPUT_NAME], {INPUT_NAME: x[start:start + chunk]})[0] for start in range(0, len(x), chunk)]
    width = sess.get_outputs()[0].shape[1]
    return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)


def largest_difference(trained: Any, model: bytes, rows: int = 256, seed: int = 0) -> float:
    """max |ONNX - torch| over ``rows`` random standard-normal inputs, in encoded units."""
    import torch

    x = np.random.default_rng(seed).standard_normal((rows, len(trained.spec.feature_names))).astype(np.float32)
    with torch.no_grad():
        expected = trained.model(torch.from_numpy(x)).float().numpy()
    return float(np.max(np.abs(run_session(session(model), x) - expected)))


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``model.onnx`` (default: into the run directory) and its encoding documents.

    Returns:
        The path of the ONNX file; ``<file>.json`` and ``<file>.md`` lie beside it.

    Raises:
        ConfigError: No finished run there, a package missing, or the exported graph
            disagrees with the torch model by more than :data:`EXPORT_TOLERANCE`.

    Example:
        >>> export_onnx("runs/my-run")  # doctest: +SKIP
        PosixPath('runs/my-run/model.onnx')
    """
    from paratrain.predict import TrainedModel

    trained = TrainedModel.load(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / rundir.ONNX_FILE
    if path.is_dir():
        raise ConfigError(f"--out '{path}' is a directory; give a file name, e.g. {path / rundir.ONNX_FILE}")
    model = onnx_model_bytes(trained)
    difference = largest_difference(trained, model)
    if not difference <= EXPORT_TOLERANCE:
        raise ConfigError(f"the exported ONNX graph differs from the torch model by {difference:.3g} "
                          f"(more than {EXPORT_TOLERANCE:g}); please report this model's config")
    doc = encoding_document(trained, path.name, difference)
    save_bytes_atomic(model, path)
    save_json_atomic(doc, doc_path(path, ".json"))
    save_text_atomic(encoding_markdown(doc), doc_path(path, ".md"))
    return path


def doc_path(model_path: Path, suffix: str) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` / ``model.onnx.md``."""
    return model_path.with_name(model_path.name + suffix)


def encoding_document(trained: Any, model_file: str, difference: float) -> dict[str, Any]:
    """What a program needs to feed the ONNX model and read its output, as plain JSON."""
    state = trained.encoder.to_dict()
    options, target = state["options"], state["target"]
    features = []
    for column in state["columns"]:
        features.extend(_column_features(column, options))
    for index, feature in enumerate(features):
        feature["index"] = index
    if len(features) != len(trained.spec.feature_names):  # the encoder and the model must agree
        raise ConfigError(f"the run's encoder makes {len(features)} features but its model takes "
                          f"{len(trained.spec.feature_names)}; the run directory is damaged")
    return {
        "format": DOC_FORMAT,
        "version": 1,
        "model_file": model_file,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["rows", len(features)]},
        "features": features,
        "missing_values": "refused" if options["impute"] is None else f"filled with the training {options['impute']} "
                          "(the 'fill' of each numeric feature); a missing category is all zeros",
        "unseen_category": "refused" if options["unseen_category"] == "error" else "all zeros",
        "output": _output_doc(target, trained.spec.n_outputs),
        "tolerance": {
            "max_abs_difference_to_torch": difference,
            "checked_on": "256 random standard-normal feature rows",
            "limit": EXPORT_TOLERANCE,
            "units": "encoded output units (standardized target or logits)",
        },
    }


def _column_features(column: dict[str, Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """The feature(s) one source column becomes: one scaled number, a 0/1, or a one-hot block."""
    name, kind = column["name"], column["kind"]
    if kind == "category":
        return [{"name": f"{name}={category}", "column": name, "kind": "category", "category": category,
                 "rule": f"1.0 if str(value) == {str(category)!r} else 0.0"} for category in column["categories"]]
    feature = {"name": str(name), "column": name, "kind": kind, "fill": column["fill"]}
    if kind == "bool":
        feature["rule"] = "1.0 if value is true else 0.0"
    else:
        feature.update(mean=column["mean"], std=column["std"], rule="(value - mean) / std")
    return [feature]


def _output_doc(target: dict[str, Any], n_outputs: int) -> dict[str, Any]:
    shape = ["rows", n_outputs]
    if target["task"] == "regression":
        return {"name": OUTPUT_NAME, "shape": shape, "task": "regression", "target": target["name"],
                "mean": target["mean"], "std": target["std"],
                "rule": "prediction = outputs[:, 0] * std + mean (in float64)"}
    return {"name": OUTPUT_NAME, "shape": shape, "task": "classification", "target": target["name"],
            "classes": target["classes"],
            "rule": "label = classes[argmax(outputs[row])]; probabilities = softmax(outputs[row])"}


def encoding_markdown(doc: dict[str, Any]) -> str:
    """The same document for people."""
    output = doc["output"]
    lines = [
        f"# Encoding of {doc['model_file']}",
        "",
        f"Input `{doc['input']['name']}`: float32, shape (rows, {doc['input']['shape'][1]}); one row per table row, "
        "columns in this order:",
        "",
        "| index | feature | source column | rule | mean | std | fill |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in doc["features"]:
        lines.append(f"| {f['index']} | `{f['name']}` | `{f['column']}` | `{f['rule']}` | {f.get('mean', '')} | "
                     f"{f.get('std', '')} | {'' if f.get('fill') is None else f['fill']} |")
    lines += [
        "",
        f"Missing values: {doc['missing_values']}. A category not seen in training: {doc['unseen_category']}.",
        "",
        f"Output `{output['name']}`: float32, shape (rows, {output['shape'][1]}), task {output['task']} "
        f"of `{output['target']}`.",
    ]
    if output["task"] == "regression":
        lines.append(f"`{output['rule']}` with mean = {output['mean']!r}, std = {output['std']!r}.")
    else:
        lines.append(f"`{output['rule']}` with classes = {output['classes']!r}.")
    tolerance = doc["tolerance"]
    lines += ["", f"Checked at export: the graph's outputs equal the torch model's within "
                  f"{tolerance['max_abs_difference_to_torch']:.2g} ({tolerance['units']}; limit {tolerance['limit']:g}).",
              ""]
    return "\n".join(lines)
