"""Outputs that cannot be written, failed runs and resumes, end to end: one line, exit 1,
and a directory the next command can use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paratrain.cli import main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paratrain: error: "), err
    return lines[0]


def _fit(data: Path, *args: str) -> int:
    return main(["fit", "--data", str(data), "--target", "y", "--hidden", "8", "--epochs", "1", "--quiet", *args])


@pytest.mark.timeout(60)
def test_fit_out_where_no_folder_can_be_made(tmp_path, regression_csv, capsys):
    # Root ignores permissions, so a chmod'ed folder proves nothing here: a path under a
    # regular file fails for everyone (NotADirectoryError), /proc for every user too.
    out = f"{regression_csv}/run"
    assert _fit(regression_csv, "--out", out) == 1
    line = _one_error_line(capsys)
    assert f"cannot write the run directory '{out}'" in line and f"'{regression_csv}' is a file, not a folder" in line
    assert _fit(regression_csv, "--out", "/proc/paratrain-run") == 1
    assert "cannot write the run directory '/proc/paratrain-run'" in _one_error_line(capsys)


@pytest.mark.timeout(60)
def test_device_cuda_without_a_gpu_fails_before_the_run_directory(tmp_path, regression_csv, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    assert _fit(regression_csv, "--device", "cuda", "--out", str(out)) == 1
    assert "device='cuda'" in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.timeout(60)
def test_too_many_workers_for_the_memory_are_refused_before_the_run_directory(tmp_path, regression_csv, capsys):
    from paratrain.launch.resources import WORKER_BYTES, available_memory_bytes

    if (available_memory_bytes() or 0) > 400 * WORKER_BYTES:
        pytest.skip("this machine has the memory for 400 workers")
    out = tmp_path / "run"
    assert _fit(regression_csv, "--strategy", "ddp", "--workers", "400", "--out", str(out)) == 1
    line = _one_error_line(capsys)
    assert "workers=400 would need about" in line and "GiB is available" in line and "--workers" in line
    assert not out.exists()


@pytest.mark.timeout(120)
def test_resume_of_a_folder_without_checkpoint_then_rerun_reuses_it(tmp_path, regression_csv, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(f"path: {regression_csv}\ntarget: y\n")  # a run that died at start
    assert main(["fit", "--resume", str(out), "--quiet"]) == 1
    line = _one_error_line(capsys)
    assert "no checkpoint.pt" in line and f"--out {out}" in line
    assert _fit(regression_csv, "--out", str(out)) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


@pytest.mark.timeout(120)
def test_predict_out_a_directory_under_a_file_and_a_missing_folder(tmp_path, regression_csv, capsys):
    run = tmp_path / "run"
    assert _fit(regression_csv, "--out", str(run)) == 0
    capsys.readouterr()
    predict = ["predict", "--run", str(run), "--data", str(regression_csv), "--out"]

    assert main([*predict, str(tmp_path)]) == 1
    line = _one_error_line(capsys)
    assert f"'{tmp_path}' is a directory" in line and "predictions.csv" in line

    under_file = f"{regression_csv}/p.csv"
    assert main([*predict, under_file]) == 1
    line = _one_error_line(capsys)
    assert under_file in line and f"'{regression_csv}' is a file, not a folder" in line

    missing = tmp_path / "new" / "folder" / "p.csv"
    assert main([*predict, str(missing)]) == 0  # a missing folder is made
    assert len(missing.read_text().splitlines()) == 513


@pytest.mark.timeout(120)
def test_resume_from_another_folder_with_the_data_moved(tmp_path, regression_csv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--data", "data.csv", "--target", "y", "--hidden", "8", "--epochs", "2", "--stop-after", "1",
                 "--quiet", "--out", "run"]) == 0
    (tmp_path / "moved").mkdir()
    regression_csv.rename(tmp_path / "moved" / "data.csv")
    monkeypatch.chdir(tmp_path / "moved")
    capsys.readouterr()
    assert main(["fit", "--resume", "../run", "--quiet"]) == 1
    assert "give its place with --data FILE" in _one_error_line(capsys)
    assert main(["fit", "--resume", "../run", "--data", "data.csv", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


@pytest.mark.timeout(120)
def test_a_run_directory_that_refuses_a_write_mid_run_is_one_line(tmp_path, regression_csv, capsys):
    run = tmp_path / "run"
    assert _fit(regression_csv, "--epochs", "2", "--stop-after", "1", "--out", str(run)) == 0
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()  # stands for a file the system will not let us write
    capsys.readouterr()
    assert main(["fit", "--resume", str(run), "--quiet"]) == 1
    line = _one_error_line(capsys)
    assert f"cannot write the run directory '{run}'" in line and "Is a directory" in line
