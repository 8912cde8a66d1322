"""Run a study's trials in P worker processes and watch them.

Processes, not threads: a trial trains with its own torch thread pool (and may
start its own data-parallel workers), and one crashing trial must not take the
others down. Each worker is ``python -m paratrain.tune.worker`` pinned to its
slot's cores. The coordinator polls: a worker that exits with an error or is
killed (``kill -9``) is noticed within a poll, its RUNNING trial is marked FAIL
(so its budget is used again) and a new worker takes its slot. Workers watch the
coordinator too: if it is killed, they stop within a second or two. A search
that ends while budget is free again (a worker on another machine died) starts
its workers once more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from paratrain.tune.leaderboard import Leaderboard
from paratrain.tune.planner import ResourcePlan, Slot
from paratrain.tune.study import (TuneError, claimed, count_states, fail_dead_trials, fail_stale_rdb_trials,
                                  is_url, reached, trials_failed_with)
from paratrain.tune.worker import EXIT_FAILING, STORAGE_ENV

POLL_SECONDS = 0.25
_GRACE_SECONDS = 5.0


@dataclass
class _Worker:
    slot: Slot
    name: str
    proc: subprocess.Popen


class Coordinator:
    """Starts a worker per slot, restarts killed ones, prints the leaderboard, stops them all."""

    def __init__(self, study: Any, storage_ref: str, plan: ResourcePlan, out_dir: Path, leaderboard: Leaderboard,
                 target: int, data: str | None = None, stream: TextIO | None = None,
                 max_restarts: int | None = None, wait_for_others: bool = True,
                 stop_value: float | None = None, seed_prefix: str = "", lock: Any = None) -> None:
        self.study = study
        self.storage_ref = storage_ref
        self.plan = plan
        self.out_dir = out_dir
        self.leaderboard = leaderboard
        self.target = target
        self.data = data
        self.stream = stream or sys.stderr
        self.max_restarts = max_restarts if max_restarts is not None else 2 * plan.parallel + 2
        self.restarts = 0
        self.wait_for_others = wait_for_others
        self.stop_value = stop_value
        self.lock = lock
        """The budget lock: lets fail_dead_trials tell a trial whose worker died inside ask()."""
        # Sampler seeds: reproducible for one search on one machine (slot, restart, trials so far),
        # and different on a resumed study, so that a seeded random sampler does not replay its points.
        self.seed_prefix = f"{seed_prefix}{len(study.get_trials(deepcopy=False))}-"
        self.workers: list[_Worker] = []
        self.dead_pids: set[int] = set()
        self.prefix = f"{socket.gethostname()}-{os.getpid()}"

    def run(self) -> None:
        """Until the budget is done on this machine and nothing runs elsewhere."""
        self.leaderboard.start(self.study.get_trials(deepcopy=False))
        try:
            for slot in self.plan.slots:
                self._start(slot)
            while True:
                while self.workers:
                    time.sleep(POLL_SECONDS)
                    self._check_workers()
                    self.leaderboard.update(self.study.get_trials(deepcopy=False))
                if not self.wait_for_others or not self._wait_for_other_machines():
                    break
                # Another machine's worker died: its trials were failed and their budget is
                # free again, with nobody left to use it but us.
                print("trials of a worker that died elsewhere were failed: running them again here",
                      file=self.stream, flush=True)
                self.restarts += 1  # new worker names and sampler seeds
                for slot in self.plan.slots:
                    self._start(slot)
        finally:
            self._stop_all()
            self.leaderboard.update(self.study.get_trials(deepcopy=False))

    def _start(self, slot: Slot) -> None:
        name = f"{self.prefix}-slot{slot.index}-{self.restarts}"
        # The storage goes in the environment, not the arguments: any user of the machine
        # can read a process's arguments (ps), and a database URL may hold a password.
        command = [sys.executable, "-m", "paratrain.tune.worker",
                   "--study", self.study.study_name, "--worker", name, "--out", str(self.out_dir),
                   "--seed-key", f"{self.seed_prefix}{slot.index}-{self.restarts}",
                   "--cpus", ",".join(map(str, slot.cpus)), "--threads", str(self.plan.threads),
                   "--parent-pid", str(os.getpid())]
        if self.data:
            command += ["--data", self.data]
        env = dict(os.environ, **self.plan.environment(slot))
        env[STORAGE_ENV] = self.storage_ref
        # Function objectives are imported by name in the worker: let it find what we can import.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        self.workers.append(_Worker(slot, name, subprocess.Popen(command, env=env)))

    def _check_workers(self) -> None:
        for worker in list(self.workers):
            code = worker.proc.poll()
            if code is None:
                continue
            self.workers.remove(worker)
            if code == 0:
                continue
            if code == EXIT_FAILING:
                raise TuneError(f"worker {worker.name} stopped: trials keep failing; last error: {self._last_error()}")
            self.dead_pids.add(worker.proc.pid)
            fail_dead_trials(self.study, {worker.proc.pid}, self.lock)
            failed = trials_failed_with(self.study, worker.proc.pid)  # by us, or by a worker that checked first
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            lost = f"; trial(s) {', '.join(map(str, failed))} marked failed, their budget is used again" if failed else ""
            print(f"worker {worker.name} (pid {worker.proc.pid}) {how}{lost}", file=self.stream, flush=True)
            if claimed(count_states(self.study)) >= self.target or reached(self.study, self.stop_value):
                continue
            if self.restarts >= self.max_restarts:
                raise TuneError(f"workers died {self.restarts + 1} times; giving up (last: {worker.name} {how})")
            self.restarts += 1
            self._start(worker.slot)

    def _last_error(self) -> str:
        failed = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
        return failed[-1].user_attrs.get("error", "unknown") if failed else "unknown"

    def _wait_for_other_machines(self) -> bool:
        """Trials still RUNNING belong to workers on other machines (or died): wait for them.

        Returns True when, that done, budget is left: trials that failed because their
        worker died, which this machine must run again.
        """
        told = False
        while True:
            fail_dead_trials(self.study, self.dead_pids, self.lock)
            if is_url(self.storage_ref):
                fail_stale_rdb_trials(self.study)  # the heartbeat's verdict on other machines
            counts = count_states(self.study)
            if counts.get("RUNNING", 0) == 0:
                return claimed(counts) < self.target and not reached(self.study, self.stop_value)
            if not told:
                print(f"waiting for {counts['RUNNING']} trial(s) running on other machines", file=self.stream, flush=True)
                told = True
            time.sleep(1.0)
            self.leaderboard.update(self.study.get_trials(deepcopy=False))

    def _stop_all(self) -> None:
        """Terminate what still runs (an interrupt, an error); fail the trials it leaves RUNNING."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        deadline = time.monotonic() + _GRACE_SECONDS
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
            self.dead_pids.add(worker.proc.pid)
        if self.workers:
            fail_dead_trials(self.study, self.dead_pids, self.lock)
        self.workers = []
