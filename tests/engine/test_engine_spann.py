"""A SPANN collection through the engine: bulk build, online writes, reopen, I/O counters.

The index's own tests cover its algorithms; these check the engine around it: the write
buffer, the bulk build at optimize(), op-log replay on reopen, and results against an exact
oracle of what the dict of acknowledged writes says is stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracles import FLOAT32, distances, recall_at_k

from vecdb.engine import Database
from vecdb.errors import InvalidArgument

N, DIM, K = 12_000, 16, 10


def _data(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(60, DIM))
    return (centres[rng.integers(0, 60, n)] + rng.normal(0, 1, (n, DIM))).astype(np.float32)


def _recall(db: Database, model: dict[int, np.ndarray], queries: np.ndarray) -> float:
    """Tie-aware recall@K against the float64 oracle over the live points."""
    ids = list(model)
    base = np.stack([model[i] for i in ids])
    res = db.search("s", queries, k=K, params={"max_postings": 64})
    return recall_at_k(res.ids, ids, distances(base, queries, "l2"), K, FLOAT32)


@pytest.fixture()
def loaded(tmp_path: Path) -> tuple[Database, dict[int, np.ndarray], Path]:
    db = Database(tmp_path / "db")
    db.create_collection("s", dim=DIM, metric="l2", index="spann")
    x = _data(0, N)
    for lo in range(0, N, 3000):
        db.upsert("s", list(range(lo, lo + 3000)), x[lo : lo + 3000])
    return db, {i: x[i] for i in range(N)}, tmp_path / "db"


def test_bulk_load_is_buffered_then_built_once_at_optimize(loaded) -> None:
    """Before optimize() everything is in the exact buffer; after, it is all in the index."""
    db, model, _ = loaded
    before = db.stats("s")
    assert before["buffered"] == N and before["index"]["vectors"] == 0
    db.optimize("s")
    after = db.stats("s")
    assert after["buffered"] == 0 and after["index"]["vectors"] == N
    assert after["index"]["heads"] > 0
    assert _recall(db, model, _data(1, 200)) >= 0.95
    db.close()


def test_online_writes_after_build_and_reopen_keep_recall(loaded) -> None:
    """Upserts, replacements and deletes after the build are visible, and survive reopen."""
    db, model, path = loaded
    db.optimize("s")
    rng = np.random.default_rng(5)
    new = _data(2, 3000)
    db.upsert("s", list(range(N, N + 3000)), new)  # fresh ids, in the buffer
    model.update({N + i: new[i] for i in range(3000)})
    moved = rng.choice(N, 500, replace=False).tolist()  # replaced ids get new vectors
    moved_vecs = _data(3, 500)
    db.upsert("s", moved, moved_vecs)
    model.update(dict(zip(moved, moved_vecs)))
    gone = rng.choice(N + 3000, 2000, replace=False).tolist()
    db.delete("s", gone)
    for i in gone:
        model.pop(i, None)
    queries = _data(4, 200)
    live = _recall(db, model, queries)
    assert live >= 0.95
    res = db.search("s", queries, k=K)
    assert not set(res.ids.ravel().tolist()) & set(gone)
    db.close()
    db = Database(path)  # replays the op log past the last checkpoint
    assert db.count("s") == len(model)
    assert _recall(db, model, queries) >= live - 0.01
    db.optimize("s")  # drains the replayed buffer into the index
    assert db.stats("s")["buffered"] == 0
    assert _recall(db, model, queries) >= 0.95
    db.close()


def test_search_io_counters_accumulate(loaded) -> None:
    """Per-collection stats count queries, postings and bytes read by the disk index."""
    db, _, _ = loaded
    db.optimize("s")
    before = db.stats("s")["index"]
    db.search("s", _data(6, 50), k=K, params={"max_postings": 8})
    after = db.stats("s")["index"]
    assert after["queries"] - before["queries"] == 50
    reads = after["postings_read"] - before["postings_read"]
    assert 50 <= reads <= 50 * 8
    assert after["bytes_read"] > before["bytes_read"]
    db.close()


def test_components_beyond_float16_are_refused_before_commit(tmp_path: Path) -> None:
    """Default float16 postings cannot hold 7e4: the upsert fails whole and writes nothing;
    vector_dtype=float32 accepts it."""
    db = Database(tmp_path / "db")
    db.create_collection("h", dim=DIM, metric="l2", index="spann")
    rows = np.ones((3, DIM), np.float32)
    rows[2, 5] = 70_000.0
    with pytest.raises(InvalidArgument, match=r"vectors\[2\]\[5\].*vector_dtype"):
        db.upsert("h", [1, 2, 3], rows)
    assert db.count("h") == 0 and db.get("h", [1, 2, 3]) == []
    db.create_collection(
        "w", dim=DIM, metric="l2", index="spann", index_params={"vector_dtype": "float32"}
    )
    assert db.upsert("w", [1, 2, 3], rows) == 3
    db.optimize("w")
    assert db.search("w", rows[2], k=1).ids.tolist() == [[3]]
    db.close()


def test_bad_build_params_are_rejected_at_create_by_name(tmp_path: Path) -> None:
    """An out-of-range or unknown spann parameter fails create_collection, naming it;
    no collection and no index files are left behind."""
    db = Database(tmp_path / "db")
    with pytest.raises(InvalidArgument, match="head_fraction"):
        db.create_collection("b", dim=DIM, index="spann", index_params={"head_fraction": 5.0})
    with pytest.raises(InvalidArgument, match="no_such_param"):
        db.create_collection("b", dim=DIM, index="spann", index_params={"no_such_param": 1})
    assert db.list_collections() == []
    assert not (tmp_path / "db" / "collections").exists()
    db.close()


def test_optimize_bulk_builds_a_small_buffer(tmp_path: Path) -> None:
    """optimize() on an unbuilt index builds it from however few vectors are buffered."""
    db = Database(tmp_path / "db")
    db.create_collection("t", dim=DIM, metric="l2", index="spann")
    x = _data(9, 500)
    db.upsert("t", list(range(500)), x)
    db.optimize("t")
    st = db.stats("t")
    assert st["buffered"] == 0 and st["index"]["vectors"] == 500
    assert db.search("t", x[:20], k=1).ids[:, 0].tolist() == list(range(20))
    db.close()
