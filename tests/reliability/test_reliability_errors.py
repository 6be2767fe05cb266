"""Errors are classified by type, not by words in a message, and every failure to open a
data directory is a VecdbError naming the path (never a bare Exception or an OSError)."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from vecdb.engine import Database
from vecdb.errors import (
    DataLoss,
    DiskFull,
    StorageError,
    StorageLocked,
    VecdbError,
)
from vecdb.rpc import status
from vecdb.storage import faults
from vecdb.storage.kv import KV


def test_rocksdb_corruption_is_data_loss_even_when_its_text_says_lock(tmp_path: Path) -> None:
    """ "block checksum mismatch" contains "lock": it is still corruption, not a lock."""
    exc = Exception("Corruption: block checksum mismatch: stored = 1, computed = 2 in 9.sst")
    err = faults.classify(exc, tmp_path, "reading")
    assert isinstance(err, DataLoss) and str(tmp_path) in err.message


def test_io_errors_by_fact_lock_held_disk_full_or_other(tmp_path: Path) -> None:
    """An I/O error is StorageLocked only if the LOCK file is really held, DiskFull only if
    the disk really is below the reserve, otherwise StorageError; OSErrors by errno."""
    text = Exception("IO error: While lock file: x/LOCK: Resource temporarily unavailable")
    assert isinstance(faults.classify(text, tmp_path, "opening"), StorageError)
    assert not isinstance(faults.classify(text, tmp_path, "opening"), StorageLocked)
    kv = KV(tmp_path / "kv")
    try:  # held by this process
        assert isinstance(faults.classify(text, tmp_path / "kv", "opening"), StorageLocked)
    finally:
        kv.close()
    held = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from vecdb.storage.kv import KV; k = KV(Path(sys.argv[1])); print('ok', flush=True); "
         "time.sleep(60)", str(tmp_path / "kv")],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": ":".join(sys.path)},
    )  # fmt: skip
    try:
        assert held.stdout is not None and held.stdout.readline().strip() == "ok"
        with pytest.raises(StorageLocked, match="LOCK"):
            KV(tmp_path / "kv")
    finally:
        held.kill()
        held.wait()
    huge = faults.free_bytes(tmp_path) + 2**40
    io = Exception("IO error: No space left on device")
    assert isinstance(faults.classify(io, tmp_path, "writing", huge), DiskFull)
    assert isinstance(faults.classify(io, tmp_path, "writing", 1), StorageError)
    full = OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(faults.classify(full, tmp_path, "writing"), DiskFull)


def test_disk_full_and_storage_errors_travel_as_the_same_class() -> None:
    """The remote client rebuilds DiskFull / StorageLocked / StorageError from the reason."""
    for err in (DiskFull("d full"), StorageLocked("locked"), StorageError("eio")):
        st = status.to_status(err, "rid")
        back = status.error_from_rpc(st.code, st.details, st.trailing_metadata)
        assert type(back) is type(err) and back.reason == err.reason
        assert back.retry_after == err.retry_after
    assert status.to_status(DiskFull("x"), "r").code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "damage",
    ["manifest_is_a_directory", "lock_is_a_directory", "kv_is_a_file", "current_missing"],
)
def test_every_open_failure_is_a_vecdb_error_naming_the_path(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "db"
    Database(path).close()
    target = {
        "manifest_is_a_directory": path / "MANIFEST.json",
        "lock_is_a_directory": path / "LOCK.vecdb",
        "kv_is_a_file": path / "kv",
        "current_missing": path / "kv" / "CURRENT",
    }[damage]
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    if damage != "current_missing":
        if damage == "kv_is_a_file":
            target.write_text("not a store")
        else:
            target.mkdir()
    with pytest.raises(VecdbError) as err:
        Database(path)
    assert str(target.parent) in err.value.message or str(target) in err.value.message
    if damage == "current_missing":
        assert isinstance(err.value, DataLoss)  # never a new, empty store
