"""A drain holding at least half as many vectors as the index rebuilds the index from
everything (stored vectors read back from RocksDB) instead of inserting one by one.

A real Database (RocksDB in tmp_path, real SPANN index and kernels). Exact answers come from
the brute-force oracle; the index is searched with every posting so that any difference is a
lost, stale or resurrected point, never approximation.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.engine import maintenance as mt
from vecdb.kernels.scan import exact_topk
from vecdb.storage import kv as kvmod

DIM = 16
ALL = {"max_postings": 4096, "prune_ratio": 1e9}


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def open_db(path: Path, **settings: int) -> Database:
    base = {"idle_seconds": 3600, "build_min_vectors": 1, "drain_vectors": 1_000_000}
    return Database(path, settings={**base, **settings})


def check_exact(db: Database, live: dict[int, np.ndarray]) -> None:
    ids = np.fromiter(live, np.int64)
    base = np.stack([live[i] for i in ids.tolist()])
    q = vectors(20, seed=99)
    rows, _ = exact_topk(q, base, "l2", 10)
    res = db.search("c", q, k=10, params=ALL)
    assert (np.sort(res.ids, axis=1) == np.sort(ids[rows], axis=1)).all()
    assert db.count("c") == len(live)


def status(db: Database) -> dict[str, int]:
    st = db.stats("c")["index_status"]
    return {"builds": st["builds"], "drains": st["drains"]}


def test_a_large_drain_rebuilds_and_keeps_every_point(tmp_path: Path) -> None:
    db = open_db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = vectors(3000, seed=0)
    db.upsert("c", list(range(3000)), x)
    db.optimize("c")
    assert status(db) == {"builds": 1, "drains": 0}
    live = {i: x[i] for i in range(3000)}
    # a second load: new points, replaced points, deleted points (indexed and buffered)
    y = vectors(2000, seed=1)
    db.upsert("c", list(range(2500, 4500)), y)
    live.update({2500 + j: y[j] for j in range(2000)})
    db.delete("c", [0, 1, 2, 4400, 4401])
    for i in (0, 1, 2, 4400, 4401):
        del live[i]
    db.optimize("c")
    assert status(db) == {"builds": 2, "drains": 0}  # 2000 >= 0.2 x 3000: a rebuild
    info = db.get_collection("c")
    assert (info.indexed, info.buffered) == (len(live), 0)
    check_exact(db, live)
    db.close()
    again = open_db(tmp_path / "db")  # the rebuilt index is what a reopen finds
    check_exact(again, live)
    again.close()


def test_small_drains_and_capped_rebuilds_insert(tmp_path: Path) -> None:
    db = open_db(tmp_path / "db", rebuild_max_bytes=0)
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = vectors(4000, seed=2)
    db.upsert("c", list(range(2000)), x[:2000])
    db.optimize("c")
    db.upsert("c", list(range(2000, 4000)), x[2000:])  # large, but rebuilds are off
    db.optimize("c")
    assert status(db) == {"builds": 1, "drains": 1}
    check_exact(db, {i: x[i] for i in range(4000)})
    db.close()
    db = open_db(tmp_path / "db2")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    db.upsert("c", list(range(3000)), x[:3000])
    db.optimize("c")
    db.upsert("c", list(range(3000, 3500)), x[3000:3500])  # 500 < 0.2 x 3000: inserted
    db.optimize("c")
    assert status(db) == {"builds": 1, "drains": 1}
    check_exact(db, {i: x[i] for i in range(3500)})
    db.close()


def test_deletes_and_updates_during_a_rebuild_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that land while the rebuild runs (between reading the stored vectors and
    publishing) are neither lost nor undone."""
    db = open_db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = vectors(3000, seed=3)
    db.upsert("c", list(range(3000)), x)
    db.optimize("c")
    live = {i: x[i] for i in range(3000)}
    y = vectors(2000, seed=4)
    db.upsert("c", list(range(3000, 5000)), y)
    live.update({3000 + j: y[j] for j in range(2000)})
    reading, go_on = threading.Event(), threading.Event()
    inner = mt._with_indexed

    def held(*args: object) -> object:
        out = inner(*args)  # type: ignore[arg-type]
        reading.set()
        assert go_on.wait(60)
        return out

    monkeypatch.setattr(mt, "_with_indexed", held)
    db.optimize("c", wait=False)
    assert reading.wait(60)
    z = vectors(3, seed=5)
    db.delete("c", [10, 11, 3010])  # indexed and buffered points, already read
    db.upsert("c", [12, 3012, 9000], z)  # replaced and new points
    for i in (10, 11, 3010):
        del live[i]
    live.update({12: z[0], 3012: z[1], 9000: z[2]})
    check_exact(db, live)  # correct while the rebuild is held
    go_on.set()
    db.optimize("c")
    check_exact(db, live)
    assert status(db)["builds"] == 2
    db.close()


def posting_bytes(db: Database) -> int:
    core = db.collections["c"].core
    return sum(p.stat().st_size for p in core.directory.glob("postings.*"))


def test_a_rebuild_drops_the_old_posting_file_first_and_serves_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the new index is written, the old posting file is gone (the disk never holds
    two indexes) and every point is answered exactly from memory."""
    db = open_db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = vectors(3000, seed=6)
    db.upsert("c", list(range(3000)), x)
    db.optimize("c")
    before = posting_bytes(db)
    live = {i: x[i] for i in range(3000)}
    y = vectors(2000, seed=7)
    db.upsert("c", list(range(3000, 5000)), y)
    live.update({3000 + j: y[j] for j in range(2000)})
    bridged, go_on = threading.Event(), threading.Event()
    inner = mt._bridge

    def held(*args: object) -> None:
        inner(*args)  # type: ignore[arg-type]
        bridged.set()
        assert go_on.wait(60)

    monkeypatch.setattr(mt, "_bridge", held)
    db.optimize("c", wait=False)
    assert bridged.wait(60)
    assert posting_bytes(db) < before / 10  # only the empty generation is left
    assert len(db.collections["c"].core.index) == 0
    db.delete("c", [5, 3005])  # writes go on; the exact stand-in honours them
    del live[5], live[3005]
    check_exact(db, live)
    go_on.set()
    db.optimize("c")
    check_exact(db, live)
    assert db.kv.get(kvmod.CF_META, kvmod.META_REBUILD + db.collections["c"].core.prefix) is None
    db.close()


CHILD = """
import sys
import numpy as np
from vecdb.engine import Database
path, dim = sys.argv[1], int(sys.argv[2])
db = Database(path, settings={"idle_seconds": 3600, "build_min_vectors": 1,
                              "drain_vectors": 1_000_000})
x = np.random.default_rng(8).standard_normal((5000, dim)).astype(np.float32)
db.create_collection("c", dim=dim, metric="l2", index_params={"vector_dtype": "float32"})
db.upsert("c", list(range(3000)), x[:3000])
db.optimize("c")
db.upsert("c", list(range(3000, 5000)), x[3000:])
db.optimize("c")  # killed inside the rebuild, after the old index was dropped
"""


def test_a_rebuild_killed_after_dropping_the_old_index_starts_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db"
    env = {**os.environ, "VECDB_KILL_AT": "rebuild_bridged:1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(DIM)], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with caplog.at_level(logging.WARNING):
        db = open_db(path)  # the marker says the index files are partial: rebuilt from RocksDB
    assert "an index rebuild was interrupted" in caplog.text
    x = np.random.default_rng(8).standard_normal((5000, DIM)).astype(np.float32)
    live = {i: x[i] for i in range(5000)}
    check_exact(db, live)
    db.optimize("c")
    check_exact(db, live)
    assert db.kv.get(kvmod.CF_META, kvmod.META_REBUILD + db.collections["c"].core.prefix) is None
    db.close()
    again = open_db(path)  # built and checkpointed: a normal open
    check_exact(again, live)
    again.close()


def test_opening_a_collection_that_was_never_built_does_not_report_an_interrupted_rebuild(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Points below the first build's size: every open indexes them from RocksDB (no
    checkpoint yet), which is routine. It used to leave the rebuild marker behind, so from
    the second open on every open warned that "an index rebuild was interrupted"."""
    x = vectors(20, 11)
    with Database(tmp_path / "db") as db:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", list(range(20)), x)
    for _ in range(3):
        with caplog.at_level(logging.WARNING), Database(tmp_path / "db") as db:
            assert db.count("c") == 20
            assert int(db.search("c", x[7], k=1).ids[0, 0]) == 7
    assert "interrupted" not in caplog.text, caplog.text
