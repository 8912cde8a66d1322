"""Training that diverges stops at once with one clear error, keeps only finite files, and every
rank stops together."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from paratrain.cli import main
from paratrain.config import FitConfig
from paratrain.errors import DivergenceError
from paratrain.train.checkpoint import load_torch
from paratrain.train.fit import fit
from paratrain.train.divergence import first_non_finite_step, parameters_finite
from tests.conftest import regression_frame


def _finite_checkpoint_epoch(run_dir) -> int:
    """The epoch checkpoint.pt holds, after checking that every tensor in it is finite."""
    checkpoint = load_torch(run_dir / "checkpoint.pt")
    for name, tensor in checkpoint["model"].items():
        assert torch.isfinite(tensor).all(), name
    return checkpoint["state"]["epoch"]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("paratrain: error: ") and "Traceback" not in err
    return lines[0]


def test_a_huge_learning_rate_stops_with_the_epoch_step_and_cause(regression_csv, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "--data", str(regression_csv), "--target", "y", "--lr", "1e6", "--epochs", "3",
                 "--quiet", "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert re.search(r"diverged at epoch 1: the training loss became (nan|inf), first at step \d+ of the epoch", line)
    assert "learning rate too high" in line and "--lr, e.g. 100000 (a tenth)" in line
    assert not (out / "model.pt").exists()
    assert not (out / "summary.json").exists()
    assert not (out / "checkpoint.pt").exists()  # epoch 1 diverged: there is no finite epoch to keep


def test_a_formula_undefined_on_the_data_names_the_formula_as_the_cause(tmp_path, capsys):
    x = np.linspace(0, 10, 200)
    path = tmp_path / "curve.csv"
    pd.DataFrame({"x": x, "y": 2 * x + 1}).to_csv(path, index=False)
    out = tmp_path / "run"
    code = main(["fit", "--data", str(path), "--target", "y", "--model", "formula", "--formula", "b1*log(x-5)+b0",
                 "--epochs", "2", "--quiet", "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert "diverged at epoch 1: the training loss became nan, first at step 1 of the epoch" in line
    assert "log or sqrt of a negative value" in line and "formula's domain" in line
    assert not (out / "model.pt").exists()


def test_a_later_divergence_keeps_the_last_finite_checkpoint(tmp_path):
    # Plain SGD at rate 2 on this data grows for a couple of epochs, then overflows.
    config = FitConfig.from_dict({"target": "y", "optimizer": "sgd", "lr": 2.0, "epochs": 8, "verbosity": 0,
                                  "out": str(tmp_path / "run")})
    with pytest.raises(DivergenceError) as caught:
        fit(config, data=regression_frame())
    epoch = int(re.search(r"diverged at epoch (\d+)", str(caught.value)).group(1))
    assert epoch >= 2, "the test wants a run that was finite for at least one epoch"
    run_dir = tmp_path / "run"
    assert _finite_checkpoint_epoch(run_dir) == epoch - 1
    assert f"keeps epoch {epoch - 1}, the last finite one" in str(caught.value)
    assert not (run_dir / "model.pt").exists()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == epoch - 1  # the diverged epoch is not recorded as if it were a result


def test_the_estimators_raise_the_same_error():
    from paratrain.estimators import MLPRegressor

    frame = regression_frame(rows=200)
    X, y = frame.drop(columns="y").to_numpy(), frame["y"].to_numpy()
    with pytest.raises(DivergenceError, match=r"diverged at epoch \d+: .*learning rate too high"):
        MLPRegressor(hidden_layer_sizes=(16,), optimizer="sgd", learning_rate=1e6, epochs=5).fit(X, y)


@pytest.mark.timeout(180)
def test_two_ddp_workers_stop_together_with_the_message(regression_csv, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "--data", str(regression_csv), "--target", "y", "--lr", "1e6", "--epochs", "3",
                 "--strategy", "ddp", "--workers", "2", "--timeout", "60", "--quiet", "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert re.search(r"rank \d failed: DivergenceError: training diverged at epoch \d+: the training loss became "
                     r"(nan|inf), first at step \d+ of the epoch", line)
    assert "learning rate too high" in line
    assert not (out / "model.pt").exists()


def test_the_first_non_finite_step_is_found_from_the_micro_batch_losses():
    # Steps of 2, 2 and 1 micro-batches; the 4th micro-batch (step 2) is the first NaN.
    losses = torch.tensor([1.0, 2.0, 3.0, float("nan"), float("inf")], dtype=torch.float64)
    assert first_non_finite_step(losses, [2, 4, 5]) == 2
    assert first_non_finite_step(torch.tensor([1.0, float("inf")]), [1, 2]) == 2
    assert first_non_finite_step(torch.tensor([1.0, 2.0]), [1, 2]) == 0


def test_parameters_finite_sees_nan_and_infinity():
    model = torch.nn.Linear(3, 1)
    assert parameters_finite(model)
    for bad in (float("inf"), float("-inf"), float("nan")):
        broken = torch.nn.Linear(3, 1)
        with torch.no_grad():
            broken.weight[0, 1] = bad
        assert not parameters_finite(broken), bad
    with_empty = torch.nn.Linear(3, 1)
    with_empty.register_buffer("empty", torch.zeros(0))
    assert parameters_finite(with_empty)  # an empty tensor has no largest value, and is finite
