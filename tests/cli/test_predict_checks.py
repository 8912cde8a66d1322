"""predict: class probabilities, and a refusal of models that are not finite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from paratrain.cli import main
from paratrain.errors import DivergenceError
from paratrain.predict import TrainedModel
from paratrain.train.checkpoint import load_torch, save_torch_atomic


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A finished 3-class run with text labels, and its data."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    labels = np.array(["cat", "dog", "eel"])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)]
    data = root / "animals.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "kind": labels}).to_csv(data, index=False)
    run = root / "run"
    assert main(["fit", "--data", str(data), "--target", "kind", "--epochs", "5", "--quiet", "--out", str(run)]) == 0
    return run, data


def test_proba_writes_one_column_per_class_that_sum_to_one(class_run, tmp_path):
    run, data = class_run
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(out), "--proba"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["prediction", "proba_cat", "proba_dog", "proba_eel"]
    proba = table[["proba_cat", "proba_dog", "proba_eel"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba >= 0).all()
    assert (np.array(["cat", "dog", "eel"])[proba.argmax(axis=1)] == table["prediction"].to_numpy()).all()


def test_trained_model_predict_proba_agrees_with_predict(class_run):
    run, data = class_run
    trained = TrainedModel.load(run)
    frame = pd.read_csv(data)
    proba = trained.predict_proba(frame)
    assert trained.classes == ["cat", "dog", "eel"] and proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert (np.array(trained.classes)[proba.argmax(axis=1)] == trained.predict(frame)).all()


def test_proba_on_a_regression_run_is_one_line(regression_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--data", str(regression_csv), "--target", "y", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--data", str(regression_csv), "--out", str(out), "--proba"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--proba needs a classification run" in err and "regression" in err
    assert not out.exists()


def test_predict_refuses_a_model_with_non_finite_parameters(class_run, tmp_path, capsys):
    run, data = class_run
    broken = tmp_path / "broken"
    broken.mkdir()
    saved = load_torch(run / "model.pt")
    name = next(iter(saved["state_dict"]))
    saved["state_dict"][name] = torch.full_like(saved["state_dict"][name], float("nan"))
    save_torch_atomic(saved, broken / "model.pt")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(broken), "--data", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite parameters" in err and name in err
    assert not out.exists()
    with pytest.raises(DivergenceError, match="non-finite parameters"):
        TrainedModel.load(broken)
