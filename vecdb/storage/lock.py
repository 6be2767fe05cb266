"""The process lock of a data directory: one vecdb process at a time.

Owns the `LOCK.vecdb` file; an fcntl lock dies with its process, so a SIGKILLed holder never
leaves a stale lock. It must not touch any other file of the directory.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from vecdb.errors import StorageLocked, os_error

LOCK_NAME = "LOCK.vecdb"


class DirLock:
    """An exclusive, non-blocking lock on a data directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a directory in its place, no permission, a full disk
            raise os_error(exc, f"cannot open the lock file {self.path}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            holder = ""
            try:
                holder = self.path.read_text().strip()
            except OSError:
                pass
            who = f" (held by pid {holder})" if holder else ""
            raise StorageLocked(
                f"data directory is in use by another process: cannot lock {self.path}{who}"
            ) from exc
        self._fd = fd
        try:  # the holder's pid, for the message above; not needed for the lock itself
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
