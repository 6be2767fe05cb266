"""Delete by filter over more than 20,000 matches: bounded write batches, each atomic and
durable with its op-log entry and payload index entries, never seen half applied by a
concurrent search or count, and a kill between batches leaves whole batches only.

Real RocksDB in tmp_path, the flat index (exact), searches from a thread beside the delete,
and a real SIGKILL of a child process at the "delete_batch" kill point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.engine import Database
from vecdb.engine.filters import parse
from vecdb.engine.writer import DELETE_BATCH

DIM = 4
MATCH = 3 * DELETE_BATCH + 1000  # 25,576 matching points: four batches, the last partial
KEEP = 1000  # points the filter does not select
BATCHES = -(-MATCH // DELETE_BATCH)
FLT = {"doomed": True}  # indexed
FLT_SCAN = {"tag": {"$lt": 1}}  # not indexed, same points


def probes(j: int) -> tuple[int, int]:
    """Two points of batch j (its first and last slot) at a spot of their own."""
    return j * DELETE_BATCH, min((j + 1) * DELETE_BATCH, MATCH) - 1


def spot(j: int) -> np.ndarray:
    return np.array([100.0 * (j + 1), 0, 0, 0], np.float32)


def fill(db: Database) -> None:
    """The matching points first (slot = id), then the others; each batch's two probes sit
    at the batch's spot, every other point near the origin."""
    db.create_collection("c", dim=DIM, metric="l2", index="flat")
    db.create_payload_index("c", "doomed", "bool")
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((MATCH + KEEP, DIM)).astype(np.float32)
    for j in range(BATCHES):
        for p in probes(j):
            xb[p] = spot(j)
    pays = [{"doomed": i < MATCH, "tag": 0 if i < MATCH else 1} for i in range(MATCH + KEEP)]
    for lo in range(0, MATCH + KEEP, 10_000):
        hi = min(lo + 10_000, MATCH + KEEP)
        db.upsert("c", list(range(lo, hi)), xb[lo:hi], pays[lo:hi])


def assert_index_in_step(db: Database) -> None:
    """The payload index answers exactly what a scan of the payloads does."""
    core = db.collections["c"].core
    compiled = parse(FLT)
    assert compiled is not None
    planned = core.pindex.plan(compiled, core.points.alive())
    assert planned is not None
    scanned = core.selector._scan(compiled)
    assert np.array_equal(planned, scanned)


def test_large_delete_by_filter_runs_in_bounded_batches(tmp_path: Path) -> None:
    """Over 20,000 matches are deleted in ceil(matches / DELETE_BATCH) commits; the total is
    returned; the other points, the index entries and a reopen agree."""
    with Database(tmp_path / "db") as db:
        fill(db)
        seq = db.seq.value
        assert db.delete("c", filter=FLT) == MATCH
        assert db.seq.value - seq == BATCHES  # one commit per batch
        assert db.count("c") == KEEP
        assert db.count("c", filter=FLT) == 0 == db.count("c", filter=FLT_SCAN)
        assert_index_in_step(db)
        assert db.delete("c", filter=FLT) == 0
    with Database(tmp_path / "db") as db:
        assert db.count("c") == KEEP and db.count("c", filter=FLT) == 0
        assert sorted(r.id for r in db.get("c", list(range(MATCH + KEEP)))) == list(
            range(MATCH, MATCH + KEEP)
        )


def test_concurrent_search_never_sees_half_a_batch(tmp_path: Path) -> None:
    """While a delete by filter runs, searches for each batch's spot return both of its
    probes or neither, and counts (indexed and not) only ever take whole-batch values."""
    with Database(tmp_path / "db") as db:
        fill(db)
        done = threading.Event()
        seen: list[Any] = []  # what the readers found wrong
        allowed = {MATCH - min(j * DELETE_BATCH, MATCH) for j in range(BATCHES + 1)}
        rounds = {"search": 0, "count": 0}
        q = np.stack([spot(j) for j in range(BATCHES)])

        def searcher() -> None:
            while not done.is_set():
                res = db.search("c", q, k=2)
                for j in range(BATCHES):
                    if len(set(res.ids[j].tolist()) & set(probes(j))) == 1:
                        seen.append(("search", j, res.ids[j].tolist()))
                rounds["search"] += 1

        def counter() -> None:
            while not done.is_set():
                for flt in (FLT, FLT_SCAN):
                    n = db.count("c", filter=flt)
                    if n not in allowed:
                        seen.append(("count", flt, n))
                rounds["count"] += 1

        threads = [threading.Thread(target=f) for f in (searcher, counter)]
        for t in threads:
            t.start()
        try:
            while min(rounds.values()) == 0:  # both are running before the delete starts
                done.wait(0.01)
            start = dict(rounds)
            assert db.delete("c", filter=FLT) == MATCH
            during = {k: rounds[k] - start[k] for k in rounds}
        finally:
            done.set()
            for t in threads:
                t.join()
        assert seen == []
        assert during["search"] >= BATCHES, during  # the searches really ran beside it


CHILD = textwrap.dedent(
    """
    import sys
    from vecdb.engine import Database
    db = Database(sys.argv[1])
    print("ready", flush=True)
    db.delete("c", filter={"doomed": True})
    print("finished", flush=True)
    """
)


def test_kill_between_batches_leaves_whole_batches(tmp_path: Path) -> None:
    """A SIGKILL right after the second batch is durable: exactly two batches are gone after
    reopening, the payload index agrees with the payloads, and deleting again finishes."""
    path = tmp_path / "db"
    with Database(path) as db:
        fill(db)
    env = {**os.environ, "VECDB_KILL_AT": "delete_batch:2"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    assert "finished" not in proc.stdout
    with Database(path) as db:
        left = MATCH - 2 * DELETE_BATCH
        assert db.count("c", filter=FLT) == left == db.count("c", filter=FLT_SCAN)
        assert db.count("c") == left + KEEP
        assert_index_in_step(db)
        assert db.delete("c", filter=FLT) == left
        assert db.count("c") == KEEP
