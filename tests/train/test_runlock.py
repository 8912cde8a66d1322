"""One writer per run directory: the lock refuses a second holder, names the first, and goes with it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from paratrain.errors import ConfigError
from paratrain.train import runlock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with runlock.hold_run_dir(tmp_path):
        # flock conflicts between two opens of the file, even in one process.
        with pytest.raises(ConfigError, match=rf"'{tmp_path}' is in use by process {os.getpid()}\b"):
            runlock.acquire(tmp_path)
    runlock.release(runlock.acquire(tmp_path))  # free again once the first holder is done


def test_the_lock_file_is_private(tmp_path):
    with runlock.hold_run_dir(tmp_path):
        assert (tmp_path / runlock.LOCK_FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.timeout(60)
def test_a_dead_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from paratrain.train import runlock; runlock.acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by process {holder.pid}\b"):
            runlock.acquire(tmp_path)
    finally:
        holder.kill()  # no clean-up runs: the kernel drops the lock with the process
        holder.wait()
    runlock.release(runlock.acquire(tmp_path))


def test_an_interruption_names_the_run_directory(tmp_path):
    with pytest.raises(KeyboardInterrupt) as caught:
        with runlock.hold_run_dir(tmp_path):
            raise KeyboardInterrupt
    assert caught.value.run_dir == tmp_path


def test_without_the_lock_nothing_is_held(tmp_path):
    with runlock.hold_run_dir(tmp_path, lock=False) as held:
        assert held is None
        runlock.release(runlock.acquire(tmp_path))
