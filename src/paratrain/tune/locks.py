"""The locks of a search: the journal file's write lock and the budget lock.

Both are released by the kernel or the database server when their holder dies, so a
killed worker never leaves a lock behind for the others to wait out.
"""

from __future__ import annotations

import fcntl
import hashlib
from typing import Any


class JournalFlock:
    """The journal file's write lock, as flock: the kernel releases it when its holder dies.

    Optuna's own journal locks (a symlink or an O_EXCL file) outlive a process killed while
    appending, and every other process then waits out a 30 s grace period. flock needs a
    local file system: across machines use an RDB URL instead of a shared journal file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle: Any = None

    def acquire(self) -> bool:
        handle = open(self.path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        self.handle = handle
        return True

    def release(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


class _FileLock:
    """flock on a file beside the journal: released by the kernel if the holder dies."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = None

    def acquire(self) -> None:
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class _AdvisoryLock:
    """A PostgreSQL session advisory lock: released by the server if the holder's connection dies."""

    def __init__(self, engine: Any, name: str) -> None:
        self.engine = engine
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.connection = None

    def acquire(self) -> None:
        from sqlalchemy import text

        self.connection = self.engine.connect()
        self.connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
        self.connection.commit()

    def release(self) -> None:
        from sqlalchemy import text

        if self.connection is not None:
            self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self.connection.commit()
            self.connection.close()
            self.connection = None


class _NoLock:
    exclusive = False
    """Excludes nobody: an unowned RUNNING trial may be another worker's, inside ask()."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


def budget_lock(storage_ref: str | None, storage: Any, study_name: str) -> Any:
    """The lock under which a worker checks the budget and claims a trial."""
    if storage_ref is None:
        return _NoLock()  # in memory: one process
    if "://" not in storage_ref:  # a journal file
        return _FileLock(f"{storage_ref}.budget-lock")
    if storage_ref.startswith("postgresql"):
        return _AdvisoryLock(storage.engine, f"paratrain-tune:{study_name}")
    return _NoLock()  # sqlite/mysql: parallel workers may overshoot by up to workers - 1
