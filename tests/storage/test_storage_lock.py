"""The data-directory lock keeps a second process out and dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vecdb.engine import Database
from vecdb.errors import StorageLocked

HOLDER = textwrap.dedent(
    """
    import sys, time
    from vecdb.engine import Database
    db = Database(sys.argv[1])
    print("ready", flush=True)
    time.sleep(120)
    """
)


def _start_holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_process_gets_clear_lock_error(tmp_path: Path) -> None:
    """Opening a directory another process holds raises StorageLocked naming the lock file."""
    proc = _start_holder(tmp_path / "db")
    try:
        with pytest.raises(StorageLocked) as err:
            Database(tmp_path / "db")
        assert "LOCK.vecdb" in str(err.value)
        assert str(proc.pid) in str(err.value)
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_released_when_holder_is_killed(tmp_path: Path) -> None:
    """After SIGKILL of the holder, the directory opens normally."""
    proc = _start_holder(tmp_path / "db")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = Database(tmp_path / "db")
    db.close()


def test_same_process_second_open_is_refused(tmp_path: Path) -> None:
    """Two Database objects on one directory in one process are refused too."""
    db = Database(tmp_path / "db")
    try:
        with pytest.raises(StorageLocked):
            Database(tmp_path / "db")
    finally:
        db.close()
    Database(tmp_path / "db").close()


def test_a_data_directory_that_is_a_file_or_cannot_be_made_is_a_vecdb_error(
    tmp_path: Path,
) -> None:
    """`connect` on a regular file, or where the directory cannot be created, raises a
    VecdbError naming the path (before: the builtin FileExistsError / OSError)."""
    import vecdb
    from vecdb.errors import InvalidArgument, StorageError

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InvalidArgument, match="is a file, not a directory"):
        vecdb.connect(str(afile))
    blocked = afile / "db"  # under a file: named as such
    with pytest.raises(InvalidArgument, match="cannot create data directory .*afile is a file"):
        vecdb.connect(str(blocked))
    assert afile.read_text() == "x"
    with pytest.raises(StorageError, match="cannot create data directory"):
        vecdb.connect("/proc/vecdb-test")  # a directory that cannot be made
