"""A `vector_dtype="bits"` SPANN collection through the embedded engine: create, upsert,
optimize, search, delete, re-upsert, get, stats, bad rows, and tenants (the sub-tree walk
and the global walk with a bitmap), against the exact oracle of what was written and
against a float16 collection of the same data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.errors import InvalidArgument

sys.path.insert(0, str(Path(__file__).parents[1]))
from oracles import FLOAT16, distances, recall_at_k  # noqa: E402

K = 10


def _data(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1, size=(40, d))
    return (centres[rng.integers(0, 40, n)] + rng.normal(0, 0.7, (n, d))).astype(np.float32)


def _recall(db: Database, name: str, model: dict[int, np.ndarray], q: np.ndarray, metric: str,
            params: dict | None = None) -> float:  # type: ignore[type-arg]  # fmt: skip
    ids = list(model)
    base = np.stack([model[i] for i in ids])
    res = db.search(name, q, k=K, params=params or {"max_postings": 8})
    return recall_at_k(res.ids, ids, distances(base, q, metric), K, FLOAT16)


@pytest.mark.parametrize(("d", "metric"), [(384, "l2"), (384, "ip"), (384, "cosine"), (50, "l2")])
def test_a_bits_collection_behaves_like_a_float16_one(d: int, metric: str, tmp_path: Path) -> None:
    """Upserts, optimize, search, deletes, re-upserts and get on a bits collection: recall
    within 0.02 of a float16 collection of the same data and params, deleted ids never
    returned, re-upserted vectors found at their new place, and the same after reopen."""
    db = Database(tmp_path / "db")
    for name, p in (("b", {"vector_dtype": "bits"}), ("f", {})):
        db.create_collection(name, dim=d, metric=metric, index="spann", index_params=p)
    x = _data(0, 3000, d)
    for name in ("b", "f"):
        db.upsert(name, list(range(3000)), x)
        db.optimize(name)
    info = db.stats("b")["index"]
    assert "vector_dtype=bits" in info["spec"] and "rerank=float16" in info["spec"]
    assert info["vectors"] == 3000
    model = dict(enumerate(x))
    if metric == "cosine":
        model = {i: v / np.linalg.norm(v) for i, v in model.items()}
    q = _data(1, 50, d)
    want = _recall(db, "f", model, q, metric)
    assert _recall(db, "b", model, q, metric) >= want - 0.02
    # deletes, then re-upserts with new vectors (online: no optimize)
    gone = list(range(0, 3000, 7))
    for name in ("b", "f"):
        db.delete(name, gone)
    for i in gone:
        model.pop(i)
    back = gone[:100]
    y = _data(2, 100, d)
    db.upsert("b", back, y)
    res = db.search("b", q, k=K, params={"max_postings": 8})
    assert not set(res.ids.ravel().tolist()) & (set(gone) - set(back))
    got = db.get("b", back[:5])
    np.testing.assert_allclose(np.stack([r.vector for r in got]), y[:5], rtol=1e-6)
    found = db.search("b", y, k=1, params={"max_postings": 64})
    assert found.ids[:, 0].tolist() == back
    db.close()
    db = Database(tmp_path / "db")
    again = db.search("b", y, k=1, params={"max_postings": 64})
    assert again.ids[:, 0].tolist() == back
    db.close()


def test_bad_rows_and_params_are_refused(tmp_path: Path) -> None:
    """NaN rows are refused as for any dtype (nothing written); rerank="none" with bits is
    refused at create, naming both parameters."""
    db = Database(tmp_path / "db")
    with pytest.raises(InvalidArgument, match="vector_dtype.*rerank"):
        db.create_collection(
            "n", dim=8, index="spann", index_params={"vector_dtype": "bits", "rerank": "none"}
        )
    db.create_collection("b", dim=8, metric="l2", index="spann",
                         index_params={"vector_dtype": "bits"})  # fmt: skip
    rows = np.ones((3, 8), np.float32)
    rows[1, 2] = np.nan
    with pytest.raises(InvalidArgument):
        db.upsert("b", [1, 2, 3], rows)
    assert db.get("b", [1, 2, 3]) == []
    rows[1, 2] = 70_000.0  # beyond the float16 rows of the store
    with pytest.raises(InvalidArgument, match="65"):
        db.upsert("b", [1, 2, 3], rows)
    db.close()


def test_tenants_of_a_bits_collection(tmp_path: Path) -> None:
    """A tenant's search returns only its own points, at recall >= 0.95 against brute force
    over them, on the sub-tree walk and on the global walk with a bitmap."""
    d = 96
    db = Database(tmp_path / "db")
    db.create_collection("m", dim=d, metric="l2", index="spann", multi_tenant=True,
                         index_params={"vector_dtype": "bits"})  # fmt: skip
    x = _data(3, 6000, d)
    for t in ("a", "b"):
        db.create_tenant("m", t)
    owner = np.where(np.arange(6000) % 5 == 0, "a", "b")
    for t in ("a", "b"):
        ids = np.flatnonzero(owner == t)
        db.upsert("m", ids.tolist(), x[ids], tenant=t)
    db.optimize("m")
    q = _data(4, 40, d)
    for t in ("a", "b"):
        mine = np.flatnonzero(owner == t)
        for walk, share in (("tenant_subtree", 1.0), ("tenant_global", 0.0)):
            # no copy (the index's walks); the share rule picks the walk
            params = {"max_postings": 16, "tenant_copy": 0, "tenant_share": share}
            res = db.search("m", q, k=K, tenant=t, params=params, with_stats=True)
            assert res.stats is not None and res.stats[walk] > 0 and res.stats["postings_read"]
            assert set(res.ids.ravel().tolist()) <= set(mine.tolist())
            r = recall_at_k(res.ids, mine.tolist(), distances(x[mine], q, "l2"), K, FLOAT16)
            assert r >= 0.95, (t, params, r)
    db.close()


def test_a_bits_index_of_the_earlier_format_is_rebuilt_on_open(tmp_path: Path) -> None:
    """A "bits" collection whose posting files carry the previous format (VERSION - 1: format
    5's float32 lane-group factors; 4's int64 slots before it) opens with its index rebuilt
    from the stored vectors (the engine's rule for unreadable index files), and answers as
    before; nothing stored is lost."""
    import struct

    from vecdb.index.spann.postings import VERSION

    d = 384
    db = Database(tmp_path / "db")
    db.create_collection("b", dim=d, metric="l2", index="spann",
                         index_params={"vector_dtype": "bits"})  # fmt: skip
    x = _data(3, 2000, d)
    db.upsert("b", list(range(2000)), x)
    db.optimize("b")
    q = x[:20] + 0.01
    before = db.search("b", q, k=1, params={"max_postings": 16}).ids[:, 0].tolist()
    assert before == list(range(20))
    db.close()
    files = sorted((tmp_path / "db").rglob("postings.*.bin"))
    assert files
    for f in files:  # what the earlier vecdb wrote: the previous format in the header
        with open(f, "r+b") as raw:
            raw.seek(8)
            raw.write(struct.pack("<I", VERSION - 1))
    db = Database(tmp_path / "db")
    db.optimize("b")  # the rebuild runs in the background; wait for it
    assert db.count("b") == 2000
    after = db.search("b", q, k=1, params={"max_postings": 16}).ids[:, 0].tolist()
    assert after == before
    stale = [
        f
        for f in (tmp_path / "db").rglob("postings.*.bin")
        if f.read_bytes()[8:12] != struct.pack("<I", VERSION)
    ]
    assert not stale  # the index now on disk is this format
    db.close()
