"""The run directory: a failed run leaves nothing in the way, resume works from anywhere,
files get the user's umask, and the summary's times cover the whole command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.train import rundir
from paratrain.train.fit import fit, process_start_time, resume


def _config(data: Path, out: Path, **fields) -> FitConfig:
    base = {"path": str(data), "target": "y", "hidden": [8], "epochs": 1, "verbosity": 0, "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


@pytest.mark.timeout(60)
def test_a_run_failing_before_its_first_checkpoint_removes_the_folders_it_made(tmp_path, regression_csv):
    out = tmp_path / "runs" / "nan"
    # lr=nan fails inside the worker today (torch refuses it) or in the config check: either way
    # no folder may be left behind to block the rerun.
    with pytest.raises(ValueError):
        fit(_config(regression_csv, out, lr=float("nan")))
    assert not (tmp_path / "runs").exists()
    assert fit(_config(regression_csv, out)).summary["status"] == "finished"


@pytest.mark.timeout(60)
def test_a_folder_left_by_a_failed_run_is_reused(tmp_path, regression_csv):
    out = tmp_path / "run"
    out.mkdir()
    rundir.write_config(out, _config(regression_csv, out))
    (out / rundir.METRICS_FILE).write_text('{"epoch": 1, "train_loss": 9.0}\n')
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    assert rundir.is_reusable(out)
    result = fit(_config(regression_csv, out, epochs=2))
    assert result.summary["status"] == "finished"
    lines = (out / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # the failed run's line is gone
    assert not list(out.glob(".*.tmp"))


def test_a_folder_with_results_or_other_files_is_not_reused(tmp_path):
    finished = tmp_path / "finished"
    finished.mkdir()
    for name in (rundir.CONFIG_FILE, rundir.CHECKPOINT_FILE):
        (finished / name).write_text("x")
    with pytest.raises(ConfigError, match="--resume"):
        rundir.check_new_run_dir(finished)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="already exists and is not empty; choose another --out"):
        rundir.check_new_run_dir(mine)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        rundir.check_new_run_dir(tmp_path / "file")


@pytest.mark.timeout(60)
def test_resume_before_the_first_checkpoint_says_to_rerun_with_out(tmp_path, regression_csv):
    out = tmp_path / "run"
    out.mkdir()
    rundir.write_config(out, _config(regression_csv, out))
    with pytest.raises(ConfigError, match=f"no checkpoint.pt.*same fit command again with --out {out}"):
        resume(out)
    with pytest.raises(ConfigError, match="not a paratrain run directory"):
        resume(tmp_path)


@pytest.mark.timeout(120)
def test_resume_works_from_another_folder_and_data_can_be_moved(tmp_path, regression_csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(_config(Path("data.csv"), Path("run"), epochs=3, stop_after=1))  # a relative path, as typed
    stored = rundir.read_config(tmp_path / "run").data.path
    assert stored == str(regression_csv.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert resume(tmp_path / "run", {"stop_after": 1}).summary["status"] == "stopped"
    moved = shutil.move(regression_csv, elsewhere / "moved.csv")
    with pytest.raises(ConfigError, match="data file .* does not exist; give its place with --data"):
        resume(tmp_path / "run")
    result = resume(tmp_path / "run", {"path": "moved.csv"})
    assert result.summary["epochs"] == 3
    assert rundir.read_config(tmp_path / "run").data.path == str(Path(moved).resolve())


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".checkpoint.pt.x1.tmp").write_bytes(b"half")
    (tmp_path / rundir.CHECKPOINT_FILE).write_bytes(b"whole")
    assert rundir.remove_temp_files(tmp_path) == [".checkpoint.pt.x1.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == [rundir.CHECKPOINT_FILE]


_WRITE_ALL = """
import os, sys
os.umask(int(sys.argv[1], 8))
from paratrain.cli import main
sys.exit(main(["fit", "--data", sys.argv[2], "--target", "y", "--hidden", "8", "--epochs", "1", "--quiet",
               "--out", sys.argv[3]]))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_output_gets_the_users_umask(tmp_path, regression_csv, umask):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _WRITE_ALL, oct(umask), str(regression_csv), str(out)],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == [".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "summary.json"]
    files.remove(".lock")  # the run's lock, not an output: private (tests/train/test_runlock.py)
    modes = {name: oct((out / name).stat().st_mode & 0o777) for name in files}
    assert modes == {name: oct(0o666 & ~umask) for name in files}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~umask)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("strategy", "workers"), [("single", 1), ("ddp", 1), ("ddp", 2)])
def test_wall_seconds_cover_startup_and_training(tmp_path, regression_csv, strategy, workers):
    summary = fit(_config(regression_csv, tmp_path / "run", epochs=2, strategy=strategy, workers=workers)).summary
    wall, startup, train = summary["wall_seconds"], summary["startup_seconds"], summary["train_seconds"]
    assert 0 < startup and 0 < train
    assert wall >= startup + train - 0.05  # validation, checkpoints and the launch come on top
    assert "train_started_at" not in summary
    assert json.loads((tmp_path / "run" / rundir.SUMMARY_FILE).read_text())["wall_seconds"] == wall
    if workers > 1:
        assert startup > 0.5  # two fresh interpreters import torch before the first step


def test_process_start_time_is_before_now():
    import time

    started = process_start_time()
    assert started is not None and started <= time.time()
    assert time.time() - started < 24 * 3600


@pytest.mark.timeout(60)
def test_fit_warns_when_workers_outnumber_the_cores(tmp_path, regression_csv, caplog):
    from paratrain.launch.resources import usable_cores

    workers = usable_cores() + 1
    blocked = regression_csv / "run"  # under a file: fit stops right after its checks, starting nothing
    with caplog.at_level("WARNING", logger="paratrain"), pytest.raises(ConfigError) as error:
        fit(_config(regression_csv, blocked, strategy="ddp", workers=workers))
    if "would need" in str(error.value):
        pytest.skip("not enough memory here for one worker per core plus one")
    assert "cannot write the run directory" in str(error.value)
    assert f"workers={workers} exceeds the {workers - 1} cores" in caplog.text


@pytest.mark.timeout(60)
def test_resume_refuses_fewer_epochs_than_the_checkpoint_holds(tmp_path, regression_csv):
    run_dir = tmp_path / "run"
    fit(_config(regression_csv, run_dir, epochs=4, stop_after=2))
    for epochs in (1, 2):
        with pytest.raises(ConfigError, match=f"epochs={epochs} must be more than the 2 epochs"):
            resume(run_dir, {"epochs": epochs})
    assert not (run_dir / "model.pt").exists()
    assert resume(run_dir, {"epochs": 3}).summary["epochs"] == 3
