"""A child that ends with its parent: the kernel's parent-death signal, and the pid check behind it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.launch.processes import alive, wait_until

# The child exits 7 on SIGHUP; it polls its parent only every `poll` seconds.
CHILD = """
import os, signal, sys, time
from paratrain.launch.lifeline import stop_with_parent
signal.signal(signal.SIGHUP, lambda *_: os._exit(7))
stop_with_parent(int(sys.argv[1]), signal.SIGHUP, poll_seconds=float(sys.argv[2]))
print(os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_a_parent_that_died_before_the_child_asked_is_noticed_at_once():
    # The pid given is not the parent: as if the launcher died before the child's first line ran.
    child = subprocess.run([sys.executable, "-c", CHILD, "1", "60"], capture_output=True, text=True, timeout=30)
    assert child.returncode == 7, child.stderr


@pytest.mark.timeout(60)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_kernel_signals_the_child_when_its_parent_is_killed():
    # A middle process starts the child and is killed with SIGKILL; the child polls only once a
    # minute, so only the kernel's parent-death signal can end it in time.
    middle = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}, str(os.getpid()), '60'])\n"
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(middle.stdout.readline())
        os.kill(middle.pid, signal.SIGKILL)
        middle.wait()
        killed_at = time.monotonic()
        assert wait_until(lambda: not alive(child_pid), timeout=10)
        assert time.monotonic() - killed_at < 2.0
    finally:
        if middle.poll() is None:
            middle.kill()
            middle.wait()
