"""quantize: int8 models written into the run directory, and predict --quantized using them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnxruntime")

from paratrain.cli import main  # noqa: E402
from paratrain.errors import ConfigError  # noqa: E402
from paratrain.infer import QuantizeOptions, quantize_run  # noqa: E402
from paratrain.predict import TrainedModel  # noqa: E402
from paratrain.train import rundir  # noqa: E402
from paratrain.train.checkpoint import load_torch, save_torch_atomic  # noqa: E402

# int8 against float32, in target units: at most 5% of the target's std (~100 here). Measured on
# this run: 0.29% (dynamic) and 0.25% (static); a wrong scale or a misread calibration would be
# off by far more.
INT8_TOLERANCE_STD = 0.05


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_predictions_are_close_to_float32(regression_run, tmp_path, mode):
    run, data = regression_run
    run = _copy(run, tmp_path)
    frame = pd.read_csv(data)
    path = quantize_run(run, QuantizeOptions(mode=mode))
    assert path == run / rundir.INT8_FILE and path.is_file()
    info = json.loads((run / rundir.INT8_INFO_FILE).read_text())
    assert info["mode"] == mode and info["backend"] == "onnxruntime"
    # static calibrates on the training rows only: 240 of the 300 (val_fraction 0.2).
    assert (info["calibration"] or {}).get("rows") == (240 if mode == "static" else None)

    float32 = TrainedModel.load(run).predict(frame)
    quantized = TrainedModel.load(run, quantized=True)
    int8 = quantized.predict(frame)
    std = float(np.std(frame["y"]))
    assert np.max(np.abs(int8 - float32)) <= INT8_TOLERANCE_STD * std
    assert not np.array_equal(int8, float32)  # the int8 graph computed these, not torch
    assert quantized.int8.mode == mode


def test_cli_predict_quantized_writes_int8_predictions(class_run, tmp_path):
    run, data = class_run
    run = _copy(run, tmp_path)
    assert main(["quantize", "--run", str(run), "--mode", "static", "--data", str(data),
                 "--calibration-rows", "100"]) == 0
    assert json.loads((run / rundir.INT8_INFO_FILE).read_text())["calibration"]["rows"] == 100
    out32, out8 = tmp_path / "p32.csv", tmp_path / "p8.csv"
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(out32), "--proba"]) == 0
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(out8), "--proba", "--quantized"]) == 0
    p32, p8 = pd.read_csv(out32), pd.read_csv(out8)
    # Probabilities within 0.05 (measured: 0.005); labels equal except where float32's top two are close.
    proba = [c for c in p32.columns if c.startswith("proba_")]
    assert np.max(np.abs(p32[proba].to_numpy() - p8[proba].to_numpy())) <= 0.05
    top2 = np.sort(p32[proba].to_numpy(), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1
    assert (p32["prediction"][clear] == p8["prediction"][clear]).all()


def test_stale_or_missing_int8_model_is_refused(regression_run, tmp_path, capsys):
    run, data = regression_run
    run = _copy(run, tmp_path)
    out = str(tmp_path / "p.csv")
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", out, "--quantized"]) == 1
    assert "paratrain quantize --run" in capsys.readouterr().err
    quantize_run(run)
    saved = load_torch(run / rundir.MODEL_FILE)
    saved["state_dict"] = {name: value * 1.01 for name, value in saved["state_dict"].items()}
    save_torch_atomic(saved, run / rundir.MODEL_FILE)  # as a resumed run would replace it
    with pytest.raises(ConfigError, match="changed after it was quantized"):
        TrainedModel.load(run, quantized=True)


def test_static_without_its_training_table_asks_for_data(regression_run, tmp_path):
    run, data = regression_run
    run = _copy(run, tmp_path)
    config = (run / rundir.CONFIG_FILE).read_text().replace(str(data), str(tmp_path / "gone.csv"))
    (run / rundir.CONFIG_FILE).write_text(config)
    with pytest.raises(ConfigError, match="--data FILE"):
        quantize_run(run, QuantizeOptions(mode="static"))
    assert not (run / rundir.INT8_FILE).exists()


@pytest.mark.parametrize("args, message", [
    (["--mode", "fast"], "mode='fast' must be one of 'dynamic', 'static'"),
    (["--mode", "dynamic", "--data", "x.csv"], "drop --data or use --mode static"),
    (["--mode", "static", "--calibration-rows", "0"], "calibration_rows=0 must be an integer >= 1"),
])
def test_bad_options_are_one_line_errors(regression_run, capsys, args, message):
    run, _ = regression_run
    assert main(["quantize", "--run", str(run), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (run / rundir.INT8_FILE).exists()


def test_missing_run_dir_and_run_without_model_are_errors(regression_run, tmp_path, capsys):
    assert main(["quantize", "--run", str(tmp_path / "nowhere")]) == 1
    assert "holds no trained model" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(regression_run[0] / rundir.CONFIG_FILE, unfinished)
    assert main(["quantize", "--run", str(unfinished), "--mode", "static"]) == 1
    assert "has its run finished?" in capsys.readouterr().err


def test_formula_model_is_refused(formula_run, capsys):
    run, _ = formula_run
    assert main(["quantize", "--run", str(run)]) == 1
    assert "quantize is for MLPs" in capsys.readouterr().err
    assert not (run / rundir.INT8_FILE).exists()
