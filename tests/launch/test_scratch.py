"""Scratch folders and shared memory that a launch killed with all its workers left: removed by the next launch."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from paratrain.launch.scratch import launch_id, make_scratch, remove_stale
from paratrain.strategies.hogwild import SHM_PREFIX, shared_memory_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_what_dead_launchers_left_is_removed():
    dead, alive = _dead_pid(), os.getpid()
    temp, shm = Path(tempfile.gettempdir()), Path(shared_memory_dir())
    stale_dir = temp / f"paratrain-launch-{dead}-abc123"
    stale_curvefit = temp / f"paratrain-curvefit-{dead}-abc123"
    live_dir = temp / f"paratrain-launch-{alive}-abc123"
    stale_shm = shm / f"{SHM_PREFIX}{dead}-abc123-0000.bin"
    live_shm = shm / f"{SHM_PREFIX}{alive}-abc123-0000.bin"
    unowned = temp / "paratrain-launch-notapid"
    try:
        for folder in (stale_dir, stale_curvefit, live_dir, unowned):
            folder.mkdir()
            (folder / "job.pkl").write_bytes(b"x")
        stale_shm.write_bytes(b"x")
        live_shm.write_bytes(b"x")
        removed = remove_stale()
        assert not stale_dir.exists() and not stale_curvefit.exists() and not stale_shm.exists()
        assert live_dir.exists() and live_shm.exists() and unowned.exists()
        assert {stale_dir.name, stale_curvefit.name, stale_shm.name} <= set(removed)
    finally:
        import shutil

        for folder in (stale_dir, stale_curvefit, live_dir, unowned):
            shutil.rmtree(folder, ignore_errors=True)
        for path in (stale_shm, live_shm):
            path.unlink(missing_ok=True)


def test_a_scratch_folder_is_private_and_named_by_its_owner():
    folder = make_scratch("launch")
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert launch_id(folder).split("-")[0] == str(os.getpid())
    finally:
        folder.rmdir()
