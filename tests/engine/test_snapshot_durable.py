"""A restore makes the index files it copies durable before the switch names them: every
file of the snapshot's `index/` is fsynced under the restored collection's directory (a
copy left in the page cache, then a power cut, would leave RocksDB naming unwritten pages;
a document index's row files carry no checksum to catch that). Real RocksDB and indexes in
tmp_path; fsync observed through `os.fsync`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.engine import snapshot_files as sf

DIM = 8
QUIET = {"idle_seconds": 3600.0}


def spy_fsync(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The paths `os.fsync` is called on from now on (until `monkeypatch.undo()`)."""
    synced: set[str] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.parametrize("kind", ["spann", "multivector"])
def test_restored_index_files_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    rng = np.random.default_rng(5)
    db = Database(tmp_path / "db", settings=QUIET)
    try:
        if kind == "spann":
            db.create_collection("c", dim=DIM, metric="l2", index="spann")
            db.upsert("c", list(range(400)), rng.standard_normal((400, DIM)))
        else:
            db.create_collection("c", dim=DIM, kind="multivector")
            docs = [rng.standard_normal((5, DIM)).astype(np.float32) for _ in range(300)]
            db.upsert_documents("c", list(range(300)), docs)
        db.optimize("c")
        snap = db.create_snapshot("c").name
        body = sf.read_snapshot(tmp_path / "db" / "snapshots" / "c" / snap)
        copied = [rel.split("/", 1)[1] for rel in body["files"] if rel.startswith(sf.INDEX + "/")]
        assert copied
        synced = spy_fsync(monkeypatch)
        db.restore_snapshot("c", snap)
        monkeypatch.undo()
        directory = db.collections["c"].core.directory
        missing = [n for n in copied if str(directory / n) not in synced]
        assert missing == [], f"not fsynced before the switch: {missing}"
        assert db.count("c") == (400 if kind == "spann" else 300)
    finally:
        db.close()


def test_a_first_snapshot_makes_its_directories_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first snapshot of a collection creates `snapshots/` and `snapshots/<collection>/`:
    their entries in the data directory and in `snapshots/` are fsynced, not only the rename
    inside the collection's directory."""
    db = Database(tmp_path / "db", settings=QUIET)
    try:
        db.create_collection("c", dim=DIM, metric="l2")
        db.upsert("c", [1, 2], np.ones((2, DIM), np.float32))
        synced = spy_fsync(monkeypatch)
        db.create_snapshot("c")
        monkeypatch.undo()
        root = tmp_path / "db"
        assert {str(root), str(root / "snapshots"), str(root / "snapshots" / "c")} <= synced
    finally:
        db.close()
