"""A study on a real PostgreSQL server: parallel workers, and tune-workers joining from the CLI."""

from __future__ import annotations

import json
import os
import subprocess

import optuna
import pytest

from paratrain.tune import run_function_study
from paratrain.tune.study import SPEC_ATTR, open_storage
from tests.tune.conftest import REPO, tune_cli_command
from tests.tune.objectives import SLOW_SPACE, slow


@pytest.mark.timeout(180)
def test_parallel_workers_on_postgres(postgres_url, tmp_path):
    study = run_function_study(slow, SLOW_SPACE, sampler="random", trials=6, parallel=2, storage=postgres_url,
                               study_name="function-on-postgres", out=tmp_path)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def _coordinator_pid(trial) -> int:
    """worker_name is host-PID-slotN-R, PID being the search or tune-worker that started the worker."""
    return int(trial.user_attrs["worker_name"].rsplit("-slot", 1)[0].rsplit("-", 1)[1])


@pytest.mark.timeout(240)
def test_two_tune_workers_join_a_study_on_postgres(postgres_url, tmp_path, tiny_csv):
    name = "mlp-on-postgres"
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The joiners start first and wait for the study; they are told nothing but its name and storage.
    joiners = [subprocess.Popen([*tune_cli_command(), "tune-worker", "--study", name, "--storage", postgres_url,
                                 "--out", str(tmp_path / f"joiner{i}"), "--wait", "120"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    search = subprocess.Popen([*tune_cli_command(), "tune", "--data", str(tiny_csv), "--target", "y",
                               "--model", "mlp", "--space", str(space), "--sampler", "random", "--pruner", "none",
                               "--trials", "6", "--epochs", "5", "--hidden", "16", "--batch-size", "32",
                               "--storage", postgres_url, "--study-name", name, "--out", str(tmp_path / "main")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = search.communicate(timeout=200)
    assert search.returncode == 0, err
    for joiner in joiners:
        j_out, j_err = joiner.communicate(timeout=60)
        assert joiner.returncode == 0, j_err
        assert "joining study 'mlp-on-postgres'" in j_err
        assert json.loads(j_out)["trials"].get("COMPLETE", 0) >= 1
    summary = json.loads(out)
    assert summary["n_complete"] == 6 and summary["n_failed"] == 0
    assert summary["storage"].startswith("postgresql://")

    study = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))  # no duplicates, no gaps
    # The study holds everything a joiner needed: data path, model, space, fixed config.
    spec = study.user_attrs[SPEC_ATTR]
    assert spec["objective"]["model"] == "mlp" and spec["objective"]["fixed"]["data"]["path"] == str(tiny_csv)
    assert spec["objective"]["fixed"]["train"]["epochs"] == 5 and list(spec["space"]) == ["lr"]
    by_coordinator = {}
    for trial in trials:
        by_coordinator.setdefault(_coordinator_pid(trial), []).append(trial.number)
    joined = {joiner.pid for joiner in joiners} & set(by_coordinator)
    assert joined, f"no trial ran on a tune-worker: {by_coordinator}"
    for joiner in joiners:  # each joiner's trial runs live in its own --out
        for number in by_coordinator.get(joiner.pid, []):
            assert (tmp_path / f"joiner{joiners.index(joiner)}" / "trials" / f"trial-{number:05d}" / "model.pt").exists()


@pytest.mark.timeout(60)
def test_a_trial_of_a_machine_that_stopped_beating_is_failed_and_run_again(postgres_url):
    """Another machine's worker died mid-trial: no pid to check here, only Optuna's heartbeat tells."""
    from sqlalchemy import text

    from paratrain.tune.study import OWNER_ATTR
    from tests.tune.objectives import BRANIN_SPACE, branin

    name = "heartbeat-stopped"
    run_function_study(branin, BRANIN_SPACE, sampler="random", trials=1, storage=postgres_url, study_name=name)
    storage = open_storage(postgres_url)
    study = optuna.load_study(study_name=name, storage=storage)
    with pytest.warns(UserWarning, match="Heartbeat"):  # ask() outside optimize(): as that worker's did
        orphan = study.ask()
    orphan.set_user_attr(OWNER_ATTR, "a-machine-that-died:4242:1")
    storage.record_heartbeat(orphan._trial_id)
    with storage.engine.begin() as connection:  # its last beat, an hour ago: far beyond the grace period
        connection.execute(text("UPDATE trial_heartbeats SET heartbeat = heartbeat - interval '1 hour' "
                                "WHERE trial_id = :trial"), {"trial": orphan._trial_id})
    study = run_function_study(branin, BRANIN_SPACE, sampler="random", trials=3, storage=postgres_url,
                               study_name=name)
    states = [t.state.name for t in study.get_trials()]
    assert states[orphan.number] == "FAIL" and states.count("COMPLETE") == 3
