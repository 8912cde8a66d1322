"""Searches that survive kill -9: of a worker or of the whole command, on both storages, across two hosts.

After the resume (the same command again, or the coordinator's own restart of its worker),
every trial that was COMPLETE before the kill is still there exactly once with the same
params and values, the trials the kill left RUNNING are FAIL, and COMPLETE+PRUNED equals
--trials: the budget counts each trial once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from paratrain.errors import ConfigError
from paratrain.tune.study import open_storage
from tests.conftest import regression_frame
from tests.tune.conftest import REPO, postgres_server, tune_cli_command

TRIALS = 5
SPACE = "lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}\n"


def tune_command(tmp_path: Path, data: Path, storage: str, study: str) -> list[str]:
    """A search of tiny MLPs whose trials still last a second or so (3 epochs of ~400 steps of 4 rows):
    long enough to be seen RUNNING and killed in the middle, whatever the machine's speed."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return [*tune_cli_command(), "tune", "--data", str(data), "--target", "y", "--model", "mlp",
            "--space", str(space), "--sampler", "random", "--pruner", "none", "--trials", str(TRIALS),
            "--parallel", "1", "--threads", "1", "--epochs", "3", "--hidden", "8", "--batch-size", "4", "--no-retrain",
            "--storage", storage, "--study-name", study, "--out", str(tmp_path / "out")]


@functools.lru_cache(maxsize=None)
def _storage(ref: str):
    """One storage per test run: opening one (an RDB engine, its schema check) costs more than a poll."""
    return open_storage(ref)


def load_trials(storage: str, study: str) -> list:
    if "://" not in storage and not Path(storage).exists():
        return []  # the search has not made its journal yet
    try:
        return optuna.load_study(study_name=study, storage=_storage(storage)).get_trials()
    except KeyError:  # not created yet
        return []


def wait_for(condition, what: str, search: subprocess.Popen, timeout: float = 90.0):
    """``condition()``'s first true value, polled while ``search`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if search.poll() is not None:
            raise AssertionError(f"the search ended before {what}: {search.communicate(timeout=30)[1][-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_after_a_complete(storage: str, study: str, owner=lambda trial: True):
    """Trials RUNNING (with a named owner that ``owner`` accepts) once one trial is COMPLETE."""
    trials = load_trials(storage, study)
    running = [t for t in trials if t.state.name == "RUNNING" and "worker" in t.user_attrs and owner(t)]
    return running if running and any(t.state.name == "COMPLETE" for t in trials) else None


def completed(trials: list) -> dict[int, tuple]:
    return {t.number: (t.params, t.values) for t in trials if t.state.name == "COMPLETE"}


def owner_pid(trial) -> int:
    return int(trial.user_attrs["worker"].split(":")[1])


def assert_survived(before: list, after: list, target: int, killed: set[int]) -> None:
    """Completed trials kept exactly once, those of the ``killed`` processes failed, the budget met exactly."""
    kept = completed(before)
    assert 0 < len(kept) < target, f"the kill came too late or too early: {len(kept)} trials complete"
    found = completed(after)
    for number, (params, values) in kept.items():
        assert found.get(number) == (params, values), f"trial {number} changed or is gone"
        assert list(found.values()).count((params, values)) == 1, f"trial {number}'s point was run again"
    assert sorted(t.number for t in after) == list(range(len(after)))
    states = [t.state.name for t in after]
    assert states.count("COMPLETE") + states.count("PRUNED") == target, states
    assert "RUNNING" not in states and "WAITING" not in states
    for trial in before:
        if trial.state.name == "RUNNING" and "worker" in trial.user_attrs and owner_pid(trial) in killed:
            assert after[trial.number].state.name == "FAIL", f"trial {trial.number} left RUNNING by the kill"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim", ["worker", "command"])
@pytest.mark.parametrize("storage_kind", ["journal", "postgres"])
def test_search_survives_kill_9(storage_kind, victim, request, tmp_path):
    """kill -9 of one worker (its coordinator goes on), or of the whole command (run again), at a random moment.

    The trials sleep (tests.tune.objectives.slow: 1 s, no CPU), so that a moment picked at
    random lands inside a trial on a slow machine as on a fast one; the coordinator, the
    workers, the storages and the budget are those of ``paratrain tune``.
    """
    rng = random.Random(f"{storage_kind}-{victim}")  # the moment and the victim: random, and the same every run
    study = f"crash-{storage_kind}-{victim}"
    url = request.getfixturevalue("postgres_url") if storage_kind == "postgres" else None
    storage = url or str(tmp_path / "study.journal")
    command = [sys.executable, "-m", "tests.tune.objectives", str(tmp_path), str(TRIALS), "2"]
    command += [url, study] if url else []
    study = study if url else "paratrain-function"
    search = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        wait_for(lambda: running_after_a_complete(storage, study), "a trial running after one completed", search)
        time.sleep(rng.uniform(0.0, 0.8))
        # Read again just before the kill: the victim is mid-trial (a trial lasts 1 s, this read milliseconds).
        running = wait_for(lambda: running_after_a_complete(storage, study), "a trial running", search)
        if victim == "worker":
            killed = {rng.choice(sorted(owner_pid(t) for t in running))}
            os.kill(next(iter(killed)), signal.SIGKILL)
            before = load_trials(storage, study)
            _, err = search.communicate(timeout=90)  # the coordinator fails its trial, restarts it, goes on
            assert search.returncode == 0, err
            assert "was killed by SIGKILL" in err
        else:
            os.killpg(search.pid, signal.SIGKILL)  # the command and its workers, at once
            search.communicate(timeout=30)
            before = load_trials(storage, study)
            killed = {owner_pid(t) for t in before if t.state.name == "RUNNING" and "worker" in t.user_attrs}
            assert killed, "the kill left no trial running"
            again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
            assert again.returncode == 0, again.stderr
            assert "were left running by a killed worker: marked failed" in again.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(search.pid, signal.SIGKILL)
        search.wait(timeout=30)
    assert_survived(before, load_trials(storage, study), TRIALS, killed)


@pytest.mark.timeout(300)
def test_tune_worker_on_another_host_killed_and_restarted(tmp_path):
    """The server and the search on host 0, a tune-worker on host 1; host 1's worker is killed mid-trial."""
    from paratrain.launch.links import parse_link
    from paratrain.launch.netns import check_can_emulate, emulated_hosts

    link = parse_link("1gbit")
    try:
        check_can_emulate(link, probe=False)
    except ConfigError as exc:
        pytest.skip(str(exc))
    rng = random.Random("two-hosts")
    data = tmp_path / "data.csv"
    regression_frame(rows=2048).to_csv(data, index=False)
    study = "crash-two-hosts"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    processes: list[subprocess.Popen] = []
    with emulated_hosts(link, workers=2) as net:
        first, second = net.hosts
        # Listening on host 0's address only; clients of the emulated subnet allowed in.
        with postgres_server("--listen", first.address, "--allow", net.subnet, "--netns", first.namespace) as url:
            assert f"@{first.address}:" in url

            def start(command: list[str], host) -> subprocess.Popen:
                processes.append(subprocess.Popen([*host.exec_prefix(), *command], cwd=REPO, env=env,
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                  start_new_session=True))
                return processes[-1]

            def join(index: int) -> subprocess.Popen:
                return start([*tune_cli_command(), "tune-worker", "--study", study, "--storage", url,
                              "--out", str(tmp_path / f"joiner{index}"), "--wait", "120"], second)

            try:
                joiner = join(0)
                search = start(tune_command(tmp_path, data, url, study), first)
                # ip netns exec execs the command: the pid is the tune-worker's own, named in worker_name.
                on_second = wait_for(lambda: running_after_a_complete(
                    url, study, lambda t: f"-{joiner.pid}-slot" in t.user_attrs.get("worker_name", "")),
                    "a trial of the second host's worker", search)
                time.sleep(rng.uniform(0.0, 0.3))
                os.killpg(joiner.pid, signal.SIGKILL)  # host 1's tune-worker and its trial, mid-trial
                joiner.communicate(timeout=30)
                before = load_trials(url, study)
                killed = {owner_pid(t) for t in on_second}
                rejoined = join(1)
                out, err = search.communicate(timeout=200)
                assert search.returncode == 0, err
                r_out, r_err = rejoined.communicate(timeout=120)
                assert rejoined.returncode == 0, r_err
                assert f"joining study '{study}'" in r_err
                after = load_trials(url, study)
            finally:
                for process in processes:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
    assert_survived(before, after, TRIALS, killed)
    assert json.loads(out)["n_complete"] == TRIALS
