"""The study: continuing it checks its settings; dead and unowned trials are failed."""

from __future__ import annotations

import optuna
import pytest

from paratrain.errors import ConfigError
from paratrain.tune import run_function_study
from paratrain.tune.study import OWNER_ATTR, budget_lock, fail_dead_trials, open_storage
from tests.tune.objectives import BRANIN_SPACE, branin


def test_continuing_a_study_with_another_space_names_the_difference(tmp_path):
    journal = str(tmp_path / "study.journal")
    run_function_study(branin, BRANIN_SPACE, sampler="random", trials=3, storage=journal)
    study = run_function_study(branin, BRANIN_SPACE, sampler="random", trials=5, storage=journal)
    assert len(study.trials) == 5  # continued: 3 kept, 2 more
    other = {**BRANIN_SPACE, "x": {"type": "float", "low": -5.0, "high": 5.0}}
    with pytest.raises(ConfigError, match=r"already exists with another space.x.high: 10.0, now 5.0"):
        run_function_study(branin, other, sampler="random", trials=5, storage=journal)


def test_dead_owners_and_unowned_trials_are_failed(tmp_path):
    journal = str(tmp_path / "study.journal")
    storage = open_storage(journal)
    study = optuna.create_study(storage=storage, study_name="s")
    dead = study.ask()
    dead.set_user_attr(OWNER_ATTR, "some-host-that-is-not-this-one:1:1")
    gone = study.ask()
    import socket

    gone.set_user_attr(OWNER_ATTR, f"{socket.gethostname()}:999999999:1")  # no such pid here
    unowned = study.ask()
    failed = fail_dead_trials(study, lock=budget_lock(journal, storage, "s"))
    # Another host's trial is left to that host; the dead pid's and the unowned one are failed.
    assert sorted(failed) == [gone.number, unowned.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {dead.number: "RUNNING", gone.number: "FAIL", unowned.number: "FAIL"}


def test_the_budget_counts_finished_trials_not_those_of_dead_workers(tmp_path):
    """A trial left RUNNING by a process that is gone is failed by the next budget check and run again."""
    import socket

    journal = str(tmp_path / "study.journal")
    study = run_function_study(branin, BRANIN_SPACE, sampler="random", trials=2, storage=journal)
    orphan = study.ask()
    orphan.set_user_attr(OWNER_ATTR, f"{socket.gethostname()}:999999999:1")  # its process was killed
    study = run_function_study(branin, BRANIN_SPACE, sampler="random", trials=4, storage=journal)
    states = [t.state.name for t in study.get_trials()]
    assert states.count("COMPLETE") == 4 and states[orphan.number] == "FAIL"


def test_a_trial_of_another_process_space_is_left_to_its_heartbeat():
    """Same host name, another kernel or pid namespace (a container): its pids mean nothing here."""
    import socket

    from paratrain.tune.study import owner_alive, owner_tag

    assert owner_alive(owner_tag()) is True
    assert owner_alive(f"{socket.gethostname()}:999999999:1:{'0' * 12}") is None
    assert owner_alive(f"{socket.gethostname()}:999999999:1") is False  # tags of older versions: the host decides


def test_a_trial_failed_by_another_worker_while_it_ran_counts_once(capfd):
    """A stale-looking heartbeat let another worker fail a live trial: its late result is dropped, not counted."""
    from optuna.trial import TrialState

    def failed_under_it(params, trial):
        if trial.number == 0:  # as fail_stale_trials in another worker would
            trial.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        return branin(params, trial)

    study = run_function_study(failed_under_it, BRANIN_SPACE, sampler="random", trials=2)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "its result is dropped" in capfd.readouterr().err
