"""A published snapshot that cannot be read (its manifest or completion marker damaged, or a
format a newer vecdb wrote) is kept: an open never deletes it, a restore says what is wrong
(DataLoss naming the file, nothing changed), `delete_snapshot` removes it and
`inspect --verify` reports it. Only `*.tmp` leftovers of interrupted snapshots are removed.
Real RocksDB directories in tmp_path, the real SPANN index.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.engine import snapshot_files as sf
from vecdb.engine.inspect import verify
from vecdb.errors import DataLoss, NotFound
from vecdb.storage.manifest import read_manifest, write_manifest

DIM = 8
QUIET = {"idle_seconds": 3600.0}


def flip_manifest(snap: Path) -> None:
    path = snap / sf.MANIFEST
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def newer_format(snap: Path) -> None:
    """What a newer vecdb's snapshot looks like to this one: a whole manifest and marker of
    snapshot format 2."""
    body = read_manifest(snap / sf.MANIFEST)
    write_manifest(snap / sf.MANIFEST, {**body, "snapshot_format": 2})
    (snap / sf.COMPLETE).write_text(sf.sha256_of(snap / sf.MANIFEST) + "\n")


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (flip_manifest, "does not match"),
        (lambda s: (s / sf.COMPLETE).unlink(), "COMPLETE is unreadable"),
        (newer_format, "snapshot format 2 is not supported"),
    ],
)
def test_an_unreadable_snapshot_is_kept_and_named(
    tmp_path: Path, damage: Callable[[Path], None], said: str
) -> None:
    """Restore: DataLoss naming the problem, the live collection unchanged; a reopen keeps
    every byte of the snapshot (it was deleted as 'interrupted'); delete_snapshot removes it."""
    path = tmp_path / "db"
    db = Database(path, settings=QUIET)
    db.create_collection("c", dim=DIM, metric="l2", index="spann")
    db.upsert("c", list(range(300)), np.random.default_rng(1).standard_normal((300, DIM)))
    db.optimize("c")
    name = db.create_snapshot("c").name
    snap = path / "snapshots" / "c" / name
    damage(snap)
    db.upsert("c", [1000], np.ones((1, DIM), np.float32))
    with pytest.raises(DataLoss, match=said) as err:
        db.restore_snapshot("c", name)
    assert name in err.value.message
    assert db.count("c") == 301
    db.close()
    kept = files(snap)
    (snap.parent / f"other{sf.TMP}").mkdir()  # an interrupted snapshot: still removed
    db = Database(path, settings=QUIET)
    try:
        assert files(snap) == kept
        assert not (snap.parent / f"other{sf.TMP}").exists()
        assert db.list_snapshots("c") == []
        report = verify(path)
        bad = [f for f in report["files"] if not f["ok"]]
        assert [f["file"] for f in bad] == [str(snap)] and said in bad[0]["detail"]
        with pytest.raises(DataLoss, match=said):
            db.restore_snapshot("c", name)
        db.delete_snapshot("c", name)
        assert not snap.exists()
        with pytest.raises(NotFound):
            db.restore_snapshot("c", name)
    finally:
        db.close()


def test_verify_does_not_call_a_snapshot_being_written_damaged(tmp_path: Path) -> None:
    """A `*.tmp` directory (a snapshot being written by a running server, or one a kill
    interrupted) is not damage: `inspect --verify` passes."""
    path = tmp_path / "db"
    with Database(path, settings=QUIET) as db:
        db.create_collection("c", dim=DIM, metric="l2")
        db.upsert("c", [1, 2], np.ones((2, DIM), np.float32))
        db.create_snapshot("c")
    (path / "snapshots" / "c" / f"s9-x{sf.TMP}").mkdir()
    report = verify(path)
    assert report["ok"], report
