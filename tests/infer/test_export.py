"""export --format onnx: model.onnx and its documented encoding reproduce predict."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

ort = pytest.importorskip("onnxruntime")

from paratrain.cli import main  # noqa: E402
from paratrain.errors import ConfigError  # noqa: E402
from paratrain.infer.deps import require  # noqa: E402
from paratrain.predict import TrainedModel  # noqa: E402

# ONNX Runtime against torch, float32: outputs agree within 1e-4 in encoded units (standardized
# target, logits); measured ~1e-7. In target units that is 1e-4 x the target's std.
ONNX_TOLERANCE = 1e-4


def encode_from_document(doc: dict, frame: pd.DataFrame) -> np.ndarray:
    """The input matrix built from model.onnx.json alone, as a program in another language would."""
    columns = []
    for feature in doc["features"]:
        values = frame[feature["column"]]
        if feature["kind"] == "category":
            columns.append((values.astype(str) == str(feature["category"])).to_numpy(dtype=np.float64))
        elif feature["kind"] == "bool":
            columns.append(values.astype(bool).to_numpy(dtype=np.float64))
        else:
            columns.append((values.to_numpy(dtype=np.float64) - feature["mean"]) / feature["std"])
    return np.stack(columns, axis=1).astype(np.float32)


def run_onnx(run, frame):
    doc = json.loads((run / "model.onnx.json").read_text())
    session = ort.InferenceSession(str(run / doc["model_file"]), providers=["CPUExecutionProvider"])
    outputs = session.run([doc["output"]["name"]], {doc["input"]["name"]: encode_from_document(doc, frame)})[0]
    return doc, outputs


def test_regression_export_equals_predict(regression_run, capsys):
    run, data = regression_run
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 0
    assert "model.onnx" in capsys.readouterr().err
    frame = pd.read_csv(data)
    doc, outputs = run_onnx(run, frame)
    assert [f["name"] for f in doc["features"]] == list(TrainedModel.load(run).spec.feature_names)
    out = doc["output"]
    predictions = outputs[:, 0].astype(np.float64) * out["std"] + out["mean"]
    expected = TrainedModel.load(run).predict(frame)
    np.testing.assert_allclose(predictions, expected, rtol=0, atol=ONNX_TOLERANCE * out["std"])
    assert doc["tolerance"]["max_abs_difference_to_torch"] <= ONNX_TOLERANCE
    markdown = (run / "model.onnx.md").read_text()
    assert "`color=red`" in markdown and "(value - mean) / std" in markdown


def test_classification_export_equals_predict(class_run, tmp_path):
    run, data = class_run
    target = tmp_path / "exported" / "net.onnx"
    assert main(["export", "--run", str(run), "--out", str(target)]) == 0
    assert (tmp_path / "exported" / "net.onnx.json").is_file() and (tmp_path / "exported" / "net.onnx.md").is_file()
    frame = pd.read_csv(data)
    doc = json.loads(target.with_name("net.onnx.json").read_text())
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    logits = session.run(None, {doc["input"]["name"]: encode_from_document(doc, frame)})[0].astype(np.float64)
    trained = TrainedModel.load(run)
    labels = np.asarray(doc["output"]["classes"])[logits.argmax(axis=1)]
    assert (labels == trained.predict(frame)).all()
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, trained.predict_proba(frame), rtol=0, atol=ONNX_TOLERANCE)


def test_onnx_takes_any_number_of_rows(regression_run):
    run, data = regression_run
    frame = pd.read_csv(data)
    if not (run / "model.onnx").is_file():  # written already when the whole file runs
        assert main(["export", "--run", str(run)]) == 0
    for rows in (1, 3, 257):
        _, outputs = run_onnx(run, frame.iloc[:rows])
        assert outputs.shape == (rows, 1)


def test_export_errors(regression_run, tmp_path, capsys):
    run, _ = regression_run
    assert main(["export", "--run", str(run), "--format", "tflite"]) == 1
    assert "format='tflite' must be one of 'onnx'" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nowhere")]) == 1
    assert "holds no trained model" in capsys.readouterr().err


def test_missing_package_names_the_extra(regression_run, tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"pip install 'paratrain\[quant\]'"):
        require("paratrain_no_such_package", "ONNX export")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    assert main(["export", "--run", str(regression_run[0]), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "needs the package 'onnxscript'" in err and "paratrain[quant]" in err and "Traceback" not in err


def test_formula_export_equals_predict(formula_run, tmp_path):
    run, data = formula_run
    target = tmp_path / "formula.onnx"
    assert main(["export", "--run", str(run), "--out", str(target)]) == 0
    frame = pd.read_csv(data)
    doc = json.loads(target.with_name("formula.onnx.json").read_text())
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {doc["input"]["name"]: encode_from_document(doc, frame)})[0]
    out = doc["output"]
    predictions = outputs[:, 0].astype(np.float64) * out["std"] + out["mean"]
    # Formula models work in raw units (std 1): the same 1e-4 applies, relative to the values' size.
    expected = TrainedModel.load(run).predict(frame)
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=ONNX_TOLERANCE)
