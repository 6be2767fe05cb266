"""What a storage failure is: RocksDB errors and disk space, classified by type, not by words.

rocksdict raises a plain `Exception` whose text starts with RocksDB's status code name
("Corruption: ...", "IO error: ...", "Invalid argument: ..."): that code is the type, and
`classify` maps it to the error tree: Corruption -> `DataLoss`; an I/O error -> `DiskFull`
when the disk is below the reserve (measured with statvfs, whatever the text says), a
held lock -> `StorageLocked` (tested on the LOCK file itself), else `StorageError`; anything
else -> `StorageError`. Every message names the path. Owns the free-space probe and the set
of stores this process has open (the probe itself is `vecdb.diskspace`'s); knows nothing
about keys or values.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from vecdb.diskspace import free_bytes as free_bytes  # (re-exported: the reserve's probe)
from vecdb.errors import DataLoss, DiskFull, StorageError, StorageLocked, VecdbError, os_error

DISK_RESERVE_BYTES = 16 * 2**20  # writes are refused while the disk has less free than this

_open_here: set[str] = set()  # RocksDB directories this process holds open
_open_lock = threading.Lock()


def disk_full(path: Path, reserve: int) -> bool:
    """Whether the disk of `path` has less than `reserve` bytes free."""
    try:
        return free_bytes(path) < reserve
    except OSError:
        return False


def status_code(exc: BaseException) -> str:
    """RocksDB's status code name at the head of a rocksdict error ("" if none)."""
    head = str(exc).split(":", 1)[0].strip()
    return head if head and len(head) <= 32 else ""


def hold(path: Path) -> None:
    """Record that this process opened the store at `path`."""
    with _open_lock:
        _open_here.add(str(path.resolve()))


def release(path: Path) -> None:
    with _open_lock:
        _open_here.discard(str(path.resolve()))


def lock_held(path: Path) -> bool:
    """Whether a process holds RocksDB's LOCK of the store at `path`. For this process the
    record of open stores answers (a POSIX lock probe would release our own lock on close);
    for others, a non-blocking lock attempt on the LOCK file."""
    with _open_lock:
        if str(path.resolve()) in _open_here:
            return True
    try:
        fd = os.open(path / "LOCK", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def classify(exc: BaseException, path: Path, what: str, reserve: int = 0) -> VecdbError:
    """The vecdb error of a RocksDB failure at `path` while doing `what` (see the module
    docstring). An `OSError` is classified by its errno."""
    if isinstance(exc, VecdbError):
        return exc
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_error(exc, f"{what} {path}")  # (rocksdict's own OSErrors carry no errno:
    # their text, "Read-only file system (os error 30)", is all there is; kept below)
    code = status_code(exc)
    if code == "Corruption":
        return DataLoss(f"{what} {path}: RocksDB reports corruption: {text}")
    if code == "IO error" and disk_full(path, max(reserve, 1)):
        return DiskFull(f"{what} {path}: the disk is full ({text})")
    if code == "IO error" and lock_held(path):
        return StorageLocked(
            f"data directory is in use by another process (RocksDB lock {path / 'LOCK'})"
        )
    return StorageError(f"{what} {path}: {text or type(exc).__name__}")
