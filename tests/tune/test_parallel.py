"""Parallel trials in real processes: a consistent study, killed workers, a killed search resumed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paratrain.tune import run_function_study
from paratrain.tune.study import open_storage
from tests.tune.conftest import REPO
from tests.tune.objectives import SLOW_SPACE, slow

STUDY = "paratrain-function"


def _study(out: Path):
    import optuna

    return optuna.load_study(study_name=STUDY, storage=open_storage(str(out / "study.journal")))


def assert_consistent(trials: list, target: int) -> None:
    """Numbers 0..n-1 once each; COMPLETE+PRUNED hits the target exactly; nothing left RUNNING."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == target
    assert states.count("COMPLETE") + states.count("PRUNED") + states.count("FAIL") == len(trials)


@pytest.mark.timeout(120)
def test_parallel_workers_produce_a_consistent_study(tmp_path):
    study = run_function_study(slow, SLOW_SPACE, sampler="random", trials=8, parallel=2, out=tmp_path)
    trials = study.get_trials()
    assert_consistent(trials, 8)
    assert all(t.state.name == "COMPLETE" for t in trials)
    owners = {t.user_attrs["worker"].split(":")[1] for t in trials}
    assert len(owners) == 2 and str(os.getpid()) not in owners  # two worker processes, not us
    # They ran at the same time: some trial started before another one finished.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def _start_search(out: Path, trials: int, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.tune.objectives", str(out), str(trials), "2"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _wait_for_running_after_completes(out: Path, completes: int, timeout: float = 60):
    """Poll the journal until `completes` trials are COMPLETE and one runs with a known owner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "study.journal").exists():
            try:
                trials = _study(out).get_trials()
            except KeyError:  # the study is not created yet
                trials = []
            done = [t for t in trials if t.state.name == "COMPLETE"]
            running = [t for t in trials if t.state.name == "RUNNING" and "worker" in t.user_attrs]
            if len(done) >= completes and running:
                return done, running
        time.sleep(0.1)
    raise AssertionError("the search did not get going")


@pytest.mark.timeout(150)
def test_kill_9_of_a_worker_loses_no_completed_trial(tmp_path):
    search = _start_search(tmp_path, 8)
    done, running = _wait_for_running_after_completes(tmp_path, 2)
    victim = running[0]
    os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
    stdout, stderr = search.communicate(timeout=120)
    assert search.returncode == 0, stderr
    assert "was killed by SIGKILL" in stderr and f"trial(s) {victim.number} marked failed" in stderr
    trials = _study(tmp_path).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[victim.number].state.name == "FAIL"
    assert "died" in by_number[victim.number].user_attrs["failed_because"]
    for trial in done:  # completed before the kill: still there, unchanged
        assert by_number[trial.number].state.name == "COMPLETE" and by_number[trial.number].value == trial.value
    assert_consistent(trials, 8)  # the failed trial's budget was used again


@pytest.mark.timeout(150)
def test_a_killed_search_continues_where_it_stopped(tmp_path):
    search = _start_search(tmp_path, 6, start_new_session=True)
    done, running = _wait_for_running_after_completes(tmp_path, 2)
    os.killpg(search.pid, signal.SIGKILL)  # the coordinator and every worker, at once
    search.communicate(timeout=30)
    left_running = {t.number for t in _study(tmp_path).get_trials() if t.state.name == "RUNNING"}
    assert left_running

    again = _start_search(tmp_path, 6)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert "were left running by a killed worker: marked failed" in stderr
    assert "continuing the study" in stderr
    trials = _study(tmp_path).get_trials()
    by_number = {t.number: t for t in trials}
    assert all(by_number[n].state.name == "FAIL" for n in left_running)
    for trial in done:
        assert by_number[trial.number].state.name == "COMPLETE" and by_number[trial.number].value == trial.value
    assert_consistent(trials, 6)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.timeout(150)
def test_workers_stop_when_their_coordinator_is_killed(tmp_path):
    search = _start_search(tmp_path, 40, start_new_session=True)
    _, running = _wait_for_running_after_completes(tmp_path, 1)
    workers = {int(t.user_attrs["worker"].split(":")[1]) for t in running}
    assert workers and search.pid not in workers
    os.kill(search.pid, signal.SIGKILL)  # the coordinator only
    search.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    with_budget_left = sum(t.state.name in ("COMPLETE", "PRUNED") for t in _study(tmp_path).get_trials()) < 40
    try:
        assert not left, f"workers {left} still run after their coordinator was killed"
        assert with_budget_left  # they stopped early, not because the budget ran out
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)


class _KillWhenWaiting(io.StringIO):
    """A search's stream that kills ``process`` when the search says it waits for trials running elsewhere."""

    def __init__(self, process: subprocess.Popen) -> None:
        super().__init__()
        self.process = process

    def write(self, text: str) -> int:
        if "running on other machines" in text and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        return super().write(text)


@pytest.mark.timeout(120)
def test_budget_freed_by_a_trial_that_fails_elsewhere_is_run_here(tmp_path):
    """A trial of another machine's worker holds budget; the search waits for it, it dies, the search runs it."""
    import socket

    from paratrain.tune.objectives import function_ref
    from paratrain.tune.space import SearchSpace
    from paratrain.tune.study import OWNER_ATTR, StudySpec, create_or_continue, owner_tag

    journal = str(tmp_path / "study.journal")
    other = subprocess.Popen(["sleep", "100"])  # stands for a worker elsewhere, still running
    try:
        spec = StudySpec(objective={"kind": "function", "ref": function_ref(slow)},
                         space=SearchSpace.load(SLOW_SPACE).to_dict(), sampler="random", trials=3)
        study = create_or_continue(open_storage(journal), STUDY, spec)
        elsewhere = study.ask()
        elsewhere.set_user_attr(OWNER_ATTR, owner_tag(other.pid))
        assert owner_tag(other.pid).startswith(socket.gethostname())
        stream = _KillWhenWaiting(other)
        study = run_function_study(slow, SLOW_SPACE, sampler="random", trials=3, parallel=2, out=tmp_path,
                                   storage=journal, study_name=STUDY, verbosity=1, stream=stream)
    finally:
        other.kill()
        other.wait(timeout=10)
    log = stream.getvalue()
    assert "waiting for 1 trial(s) running on other machines" in log and "running them again here" in log
    states = [t.state.name for t in study.get_trials()]
    assert states[elsewhere.number] == "FAIL" and states.count("COMPLETE") == 3
