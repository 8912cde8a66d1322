"""Private scratch folders of the local launchers, and the removal of those a killed launcher left.

A launcher removes its scratch folder (and its workers' hogwild shared memory) on every
way out it lives through, and its workers do so when it dies alone (launch.lifeline).
When every process of a run is killed at once (``kill -9`` of the process group, the
OOM killer taking them all) no one is left to clean up. So each name carries the pid of
the launcher that owns it, and every launch first removes the folders and shared-memory
files whose owner is no longer running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

KINDS = ("launch", "curvefit")
"""The launchers' folder kinds: ``paratrain-KIND-PID-RANDOM`` in the temp directory."""


def make_scratch(kind: str) -> Path:
    """A new private (0700) folder for one launch of ``kind``, after removing stale ones.

    Example:
        >>> folder = make_scratch("launch")  # doctest: +SKIP
        >>> folder.name  # doctest: +SKIP
        'paratrain-launch-4242-k2j3h4'
    """
    remove_stale()
    return Path(tempfile.mkdtemp(prefix=f"paratrain-{kind}-{os.getpid()}-"))


def launch_id(scratch: Path) -> str:
    """'PID-RANDOM' of a scratch folder: names the launch's shared-memory files too."""
    return scratch.name.split("-", 2)[2]


def remove_stale() -> list[str]:
    """Remove the scratch folders and hogwild shared-memory files of launchers that are gone."""
    from paratrain.strategies.hogwild import SHM_PREFIX, shared_memory_dir

    removed = []
    places = [(Path(tempfile.gettempdir()), f"paratrain-{kind}-") for kind in KINDS]
    places.append((Path(shared_memory_dir()), SHM_PREFIX))
    for directory, prefix in places:
        with contextlib.suppress(OSError):
            for entry in directory.iterdir():
                if entry.name.startswith(prefix) and owner_is_gone(entry.name[len(prefix):]):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            entry.unlink()
                    removed.append(entry.name)
    return removed


def owner_is_gone(rest: str) -> bool:
    """True when the name's leading pid is of no running process (unsure: False, keep it)."""
    pid = rest.split("-", 1)[0]
    if not pid.isdigit():
        return False  # a name without an owner pid (an older version's): not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
