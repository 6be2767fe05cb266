"""A snapshot restored in another data directory (its directory copied under that one's
`snapshots/`): the restored collection equals the source, and writes made after the restore
are searchable after a reopen even when that directory's sequence was behind the
snapshot's. Real RocksDB directories in tmp_path, the real SPANN and multi-vector indexes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from vecdb.engine import Database

DIM = 8
QUIET = {"idle_seconds": 3600.0}  # no background checkpoint between the steps


def rows(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, DIM)) * scale).astype(np.float32)


def copy_snapshot(src: Path, dst: Path, collection: str, name: str) -> None:
    (dst / "snapshots" / collection).mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "snapshots" / collection / name, dst / "snapshots" / collection / name)


def test_writes_after_a_restore_from_a_longer_history_survive_a_reopen(tmp_path: Path) -> None:
    """The target directory has made fewer commits than the snapshot's sequence: points
    upserted after the restore are found by their own vectors after a reopen (they were
    numbered below the restored index's checkpoint and never replayed into it)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    with Database(src, settings=QUIET) as db:
        db.create_collection("c", dim=DIM, metric="l2", index="spann")
        for b in range(30):  # 30 commits: the snapshot's sequence is past 30
            db.upsert("c", list(range(b * 40, b * 40 + 40)), rows(40, b))
        db.optimize("c")
        snap = db.create_snapshot("c")
    copy_snapshot(src, dst, "c", snap.name)
    far = rows(5, 99, scale=100.0)  # nearest to themselves by far
    with Database(dst, settings=QUIET) as db:
        assert db.seq.value < snap.seq
        db.restore_snapshot("c", snap.name)
        db.upsert("c", list(range(5000, 5005)), far)
        assert db.seq.value > snap.seq
    with Database(dst, settings=QUIET) as db:
        assert db.count("c") == 1205
        assert db.search("c", far, k=1).ids.ravel().tolist() == list(range(5000, 5005))
        db.optimize("c")
        assert db.search("c", far, k=1).ids.ravel().tolist() == list(range(5000, 5005))


def test_a_document_collection_restored_elsewhere_keeps_later_documents(tmp_path: Path) -> None:
    """The same for a trained document collection: documents upserted after the restore
    are there and found by a search after a reopen."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    rng = np.random.default_rng(3)
    with Database(src, settings=QUIET) as db:
        db.create_collection("d", dim=DIM, kind="multivector")
        for b in range(20):
            docs = [rng.standard_normal((6, DIM)).astype(np.float32) for _ in range(20)]
            db.upsert_documents("d", list(range(b * 20, b * 20 + 20)), docs)
        db.optimize("d")
        snap = db.create_snapshot("d")
        before = {d.id: d.tokens.tobytes() for d in db.get_documents("d", list(range(400)))}
    copy_snapshot(src, dst, "d", snap.name)
    late = [np.full((4, DIM), 1.0 + i, np.float32) * np.eye(DIM, dtype=np.float32)[i % DIM]
            for i in range(3)]  # fmt: skip
    with Database(dst, settings=QUIET) as db:
        db.restore_snapshot("d", snap.name)
        db.upsert_documents("d", [9000, 9001, 9002], late)
    with Database(dst, settings=QUIET) as db:
        got = {d.id: d.tokens.tobytes() for d in db.get_documents("d", list(range(400)))}
        assert got == before
        assert db.count("d") == 403
        found = db.search_documents("d", late[1], k=3).ids[0].tolist()
        assert 9001 in found
