"""Online snapshots: consistent under concurrent writes, restored byte-exact, never listed
when interrupted, checked names and disk space.

Real RocksDB in tmp_path, the real SPANN index with its maintenance worker, and real
SIGKILLs of a child process (kill points) for the interrupted cases.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.engine import snapshot_files as sf
from vecdb.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted, Unavailable

DIM = 8
BUSY = {"build_min_vectors": 200, "idle_seconds": 0.0, "drain_vectors": 100}  # worker always on
QUIET = {"build_min_vectors": 200, "idle_seconds": 3600.0, "drain_vectors": 10**9}


def vec(ids: Any, gen: int = 0) -> np.ndarray:
    return np.stack(
        [np.random.default_rng([int(i), gen]).standard_normal(DIM) for i in ids]
    ).astype(np.float32)


def points(db: Database, name: str, universe: range) -> dict[int, bytes]:
    return {int(r.id): r.vector.tobytes() for r in db.get(name, list(universe))}


def built(path: Path, settings: dict[str, Any], n: int = 1000) -> Database:
    """A database with collection "c" (SPANN) whose index is built and checkpointed."""
    db = Database(path, settings=settings)
    db.create_collection("c", dim=DIM, metric="l2", index="spann")
    db.upsert("c", list(range(n)), vec(range(n)), [{"i": i} for i in range(n)])
    db.optimize("c")
    return db


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_snapshot_during_concurrent_writes_holds_one_sequence(tmp_path: Path) -> None:
    """Every write acknowledged before create is in the snapshot, and it restores to exactly
    the state after some prefix of the write history (the writes up to its sequence)."""
    db = built(tmp_path / "db", BUSY, n=500)
    base = {i: vec([i])[0].tobytes() for i in range(500)}
    ops: list[tuple[str, list[int], int]] = []  # the write history, in commit order
    acked = [0]  # operations acknowledged so far
    stop = threading.Event()

    def writer() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            ids = [500 + (step * 7 + j) % 900 for j in range(15)]
            ops.append(("up", ids, step))
            db.upsert("c", ids, vec(ids, step))
            acked[0] += 1
            gone = [(step * 13 + j) % 1400 for j in range(5)]
            ops.append(("del", gone, step))
            db.delete("c", gone)
            acked[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        infos = []
        for _ in range(3):
            while acked[0] < 40 * (len(infos) + 1):
                threading.Event().wait(0.01)
            before = acked[0]
            info = db.create_snapshot("c")
            infos.append((info, before, acked[0] + 1))
    finally:
        stop.set()
        t.join()
    for info, before, after in infos:
        db.restore_snapshot("c", info.name)
        got = points(db, "c", range(1400))
        model = dict(base)
        states = [dict(model)]
        for kind, ids, step in ops[:after]:
            if kind == "up":
                model.update({i: vec([i], step)[0].tobytes() for i in ids})
            else:
                for i in ids:
                    model.pop(i, None)
            states.append(dict(model))
        matches = [m for m, s in enumerate(states) if s == got]
        assert matches, "the restored points are no prefix of the write history"
        assert max(matches) >= before, "an acknowledged write is missing from the snapshot"
        res = db.search("c", vec([3]), k=20)
        assert set(res.ids[0].tolist()) - {-1} <= set(got)
    db.close()


def test_restore_is_byte_exact_and_a_new_snapshot_equals_it(tmp_path: Path) -> None:
    """The restored index files have the snapshot's sha256; a snapshot taken right after the
    restore has the same rows and index bytes."""
    db = built(tmp_path / "db", QUIET)
    db.upsert("c", [5000, 5001], vec([5000, 5001]))  # in the op log, past the checkpoint
    a = db.create_snapshot("c")
    db.delete("c", list(range(300)))
    db.upsert("c", [9000], vec([9000]))
    db.restore_snapshot("c", a.name)
    assert db.count("c") == 1002
    assert db.get("c", [9000]) == [] and len(db.get("c", [0, 5001])) == 2
    adir = tmp_path / "db" / "snapshots" / "c" / a.name
    body = sf.load(adir)
    assert body is not None
    coll_dir = db.collections["c"].core.directory
    for rel, want in body["files"].items():
        if rel.startswith("index/"):
            assert sha(coll_dir / rel[6:]) == want["sha256"]
    b = db.create_snapshot("c")
    bbody = sf.load(tmp_path / "db" / "snapshots" / "c" / b.name)
    assert bbody is not None and b.seq > a.seq
    assert bbody["files"] == body["files"]
    assert [i.name for i in db.list_snapshots("c")] == [a.name, b.name]
    db.close()
    db = Database(tmp_path / "db", settings=QUIET)  # survives a reopen
    assert db.count("c") == 1002
    assert np.array_equal(db.get("c", [5001])[0].vector, vec([5001])[0])
    db.close()


def test_corrupt_snapshot_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A flipped byte in any snapshot file: restore raises DataLoss before switching."""
    db = built(tmp_path / "db", QUIET, n=300)
    a = db.create_snapshot("c")
    db.delete("c", [1, 2, 3])
    adir = tmp_path / "db" / "snapshots" / "c" / a.name
    for rel in ("rows.bin", next(r for r in sf.load(adir)["files"] if r.startswith("index/"))):  # type: ignore[index]
        path = adir / rel
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        with pytest.raises(DataLoss, match="does not match its manifest"):
            db.restore_snapshot("c", a.name)
        assert db.count("c") == 297
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    db.restore_snapshot("c", a.name)
    assert db.count("c") == 300
    db.close()


def test_restore_recreates_a_dropped_collection_and_flat_indexes_work(tmp_path: Path) -> None:
    """Snapshots outlive their collection; a flat collection restores from its rows alone."""
    db = Database(tmp_path / "db")
    db.create_collection("f", dim=DIM, metric="cosine", index="flat", id_type="str")
    db.upsert("f", ["a", "b"], vec([1, 2]), [{"x": 1}, None])
    snap = db.create_snapshot("f")
    db.drop_collection("f")
    assert [s.name for s in db.list_snapshots("f")] == [snap.name]
    db.restore_snapshot("f", snap.name)
    info = db.get_collection("f")
    assert (info.count, info.metric.value, info.id_type.value) == (2, "cosine", "str")
    assert db.get("f", ["a"])[0].payload == {"x": 1}
    assert db.search("f", vec([2])[0], k=1).ids[0, 0] == "b"
    db.close()


def test_bad_names_and_unknown_snapshots(tmp_path: Path) -> None:
    """Bad names are InvalidArgument naming the field; unknown ones NotFound."""
    db = built(tmp_path / "db", QUIET, n=50)
    for bad in ("", "../x", "a/b", "x.tmp", ".hidden", "a" * 129, 7):
        with pytest.raises(InvalidArgument, match="snapshot name"):
            db.restore_snapshot("c", bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="snapshot name"):
            db.delete_snapshot("c", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="collection name"):
        db.create_snapshot("no/such")
    with pytest.raises(NotFound, match="collection 'nope'"):
        db.create_snapshot("nope")
    with pytest.raises(NotFound, match="collection 'nope'"):
        db.list_snapshots("nope")
    with pytest.raises(NotFound, match="snapshot 'missing'"):
        db.restore_snapshot("c", "missing")
    with pytest.raises(NotFound, match="snapshot 'missing'"):
        db.delete_snapshot("c", "missing")
    assert db.list_snapshots("c") == []
    db.close()
    with pytest.raises(Unavailable):
        db.list_snapshots("c")


def test_low_disk_space_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Free space below the estimated size: ResourceExhausted, no snapshot left behind."""
    db = built(tmp_path / "db", QUIET, n=200)
    monkeypatch.setattr(sf, "free_bytes", lambda path: 4096)
    with pytest.raises(ResourceExhausted, match="not enough disk space"):
        db.create_snapshot("c")
    assert db.list_snapshots("c") == []
    assert not any((tmp_path / "db" / "snapshots" / "c").iterdir())
    db.close()


CHILD = """
import sys
from vecdb.engine import Database
db = Database(sys.argv[1], settings={"idle_seconds": 3600.0})
if sys.argv[2] == "create":
    db.create_snapshot("c")
else:
    db.restore_snapshot("c", sys.argv[3])
print("survived")
"""


def _killed_child(tmp_path: Path, point: str, *args: str) -> None:
    root = Path(__file__).resolve().parents[2]  # the repository: the child imports this vecdb
    env = dict(os.environ, VECDB_KILL_AT=f"{point}:1", PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "db"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr
    assert "survived" not in proc.stdout


def test_snapshot_killed_midway_is_never_listed_and_cleaned(tmp_path: Path) -> None:
    """SIGKILL after the rows are written, before the rename: not listed, removed on open."""
    db = built(tmp_path / "db", QUIET, n=300)
    db.close()
    _killed_child(tmp_path, "snapshot", "create")
    root = tmp_path / "db" / "snapshots" / "c"
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    (root / "half").mkdir()  # a directory without completion marker
    db = Database(tmp_path / "db", settings=QUIET)
    assert db.list_snapshots("c") == []
    assert list(root.iterdir()) == []
    assert db.count("c") == 300
    db.close()


def test_restore_killed_midway_leaves_the_old_collection(tmp_path: Path) -> None:
    """SIGKILL after the snapshot's rows were imported, before the switch: the collection is
    the old one, and the half-restored rows and files are gone after open."""
    db = built(tmp_path / "db", QUIET, n=300)
    snap = db.create_snapshot("c")
    db.delete("c", list(range(100)))
    db.close()
    _killed_child(tmp_path, "restore", "restore", snap.name)
    db = Database(tmp_path / "db", settings=QUIET)
    assert db.count("c") == 200 and db.get("c", [5]) == []
    assert len(list((tmp_path / "db" / "collections").iterdir())) == 1
    assert list(db.kv.scan_prefix("meta", b"snapshot_restore:")) == []
    db.restore_snapshot("c", snap.name)
    assert db.count("c") == 300
    db.close()
