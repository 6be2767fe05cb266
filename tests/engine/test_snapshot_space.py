"""Snapshots and disk space: the estimate counts a document collection's tokens, a snapshot
stops (DiskFull) before it takes the room writes need, and an OSError while writing one is
a typed error naming the snapshot; nothing is left behind and the next snapshot works.
Real RocksDB directories in tmp_path; the disk's free space is stood in for through
`snapshot_files.free_bytes`, an OSError through `snapshot_files.copy_hashed`.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.engine import snapshot_files as sf
from vecdb.errors import DiskFull, StorageError
from vecdb.storage import kv as kvmod
from vecdb.storage.disk import du

DIM = 32
QUIET = {"idle_seconds": 3600.0}


def documents(path: Path) -> Database:
    """A trained document collection "d" of 300 documents x 40 tokens (1.5 MiB of tokens:
    40 times what counting one vector a document said)."""
    db = Database(path, settings=QUIET)
    db.create_collection("d", dim=DIM, kind="multivector")
    rng = np.random.default_rng(2)
    docs = [rng.standard_normal((40, DIM)).astype(np.float32) for _ in range(300)]
    db.upsert_documents("d", list(range(300)), docs)
    db.optimize("d")
    return db


def leftovers(path: Path) -> list[str]:
    root = path / "snapshots" / "d"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_a_document_snapshot_is_refused_when_its_tokens_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free space enough for the index files, the memtables, the reserve and one vector a
    document, but not for the documents' tokens: refused up front, nothing written."""
    db = documents(tmp_path / "db")
    try:
        rows = 300 * 40 * DIM * 4  # the tokens' bytes, which rows.bin holds
        index = du(db.collections["d"].core.directory)[0]
        free = index + rows // 2 + kvmod.MEMTABLE_BUDGET + db.kv.reserve_bytes
        monkeypatch.setattr(sf, "free_bytes", lambda path: free)
        with pytest.raises(DiskFull, match="a snapshot of 'd'"):
            db.create_snapshot("d")
        assert leftovers(tmp_path / "db") == []
        monkeypatch.setattr(sf, "free_bytes", lambda path: free + rows)
        assert db.create_snapshot("d").bytes > rows
    finally:
        db.close()


def test_a_snapshot_stops_before_the_write_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the snapshot is written (another writer): it stops with DiskFull
    rather than taking the disk below the writes' reserve, removes its files, and writes to
    the collection go on."""
    db = documents(tmp_path / "db")
    try:
        calls = [0]

        def filling(path: Path) -> int:
            calls[0] += 1
            return 2**40 if calls[0] == 1 else db.kv.reserve_bytes  # the up-front check only

        monkeypatch.setattr(sf, "free_bytes", filling)
        with pytest.raises(DiskFull, match="must stay free for writes"):
            db.create_snapshot("d")
        assert leftovers(tmp_path / "db") == []
        monkeypatch.undo()
        db.upsert_documents("d", [999], [np.ones((3, DIM), np.float32)])
        assert db.list_snapshots("d") == []
        assert db.create_snapshot("d").name in leftovers(tmp_path / "db")
    finally:
        db.close()


@pytest.mark.parametrize(("code", "error"), [(errno.ENOSPC, DiskFull), (errno.EIO, StorageError)])
def test_an_os_error_while_writing_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, error: type[Exception]
) -> None:
    """ENOSPC or EIO while copying the index files: DiskFull / StorageError naming the
    snapshot (a bare OSError before: INTERNAL over gRPC), nothing left behind."""
    db = documents(tmp_path / "db")
    try:

        def failing(*args: Any) -> Any:
            raise OSError(code, "injected")

        monkeypatch.setattr(sf, "copy_hashed", failing)
        with pytest.raises(error, match="snapshot"):
            db.create_snapshot("d")
        assert leftovers(tmp_path / "db") == []
        monkeypatch.undo()
        assert db.create_snapshot("d").bytes > 0
    finally:
        db.close()
