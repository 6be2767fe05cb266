"""What tenant searches keep between calls, through the public API on a real SPANN
collection: a filtered tenant search reads the tenant's copy and sub-tree directory but never
rewrites them (the next unfiltered search finds them as they were), and a global read while a
tenant's drop waits for its cleanup makes its O(points) alive bitmap only when a search or
count needs it, once while nothing changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database, tenant_reads, tenant_search
from vecdb.engine.core import CollectionCore

DIM, K = 256, 10
A, B = 3000, 1000  # tenant a owns 3000 points, b 1000
# 70% of a's points: above the exact-scan cut (2,048 at d=256) and below the copy's shrink
# threshold (1.25 x + 64 of 3000), so the filtered call takes the tenant walk over a subset
FLT = {"year": {"$gte": 3}}


def _core(db: Database) -> CollectionCore:
    return db._get("m").core


@pytest.fixture()
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((A + B, DIM)).astype(np.float32)
    db = Database(tmp_path / "db")
    db.create_collection("m", DIM, "l2", index="spann", multi_tenant=True,
                         index_params={"vector_dtype": "float32"})  # fmt: skip
    db.create_tenant("m", "a")
    db.create_tenant("m", "b")
    pays = [{"year": i % 10} for i in range(A + B)]
    db.upsert("m", list(range(A)), x[:A], pays[:A], tenant="a")
    db.upsert("m", list(range(A, A + B)), x[A:], pays[A:], tenant="b")
    db.create_payload_index("m", "year", "int")
    db.optimize("m")
    yield db, x
    db.close()


def _exact(x: np.ndarray, q: np.ndarray, ids: list[int]) -> list[int]:
    d = ((x[ids] - q) ** 2).sum(1)
    return sorted(ids[j] for j in np.argsort(d, kind="stable")[:K])


def test_a_filtered_search_leaves_the_tenant_copy_as_it_was(world) -> None:  # type: ignore[no-untyped-def]
    db, x = world
    core = _core(db)
    no = core.tenants.active("a").no
    params = {"tenant_copy": 1 << 30}  # a's 3000 x 256 floats: answered from its copy
    q = x[7] + 0.01
    db.search("m", q, k=K, tenant="a", params=params)
    store = tenant_search.store_of(core)
    have, _ = store.read((no,))
    assert len(have) == A and store.copies == 1
    matches = [i for i in range(A) if i % 10 >= 3]
    res = db.search("m", q, k=K, tenant="a", filter=FLT, params=params)
    assert sorted(int(i) for i in res.ids[0]) == _exact(x, q, matches)
    again, _ = store.read((no,))
    np.testing.assert_array_equal(again, have)  # not shrunk to the filtered part
    assert store.copies == 1 and "tenant_copies_shrunk" not in core.io.extra
    res = db.search("m", q, k=K, tenant="a", params=params)
    assert sorted(int(i) for i in res.ids[0]) == _exact(x, q, list(range(A)))
    assert store.copies == 1


def test_a_filtered_search_leaves_the_tenant_directory_cached(world) -> None:  # type: ignore[no-untyped-def]
    db, x = world
    cache = _core(db).index.state.subtrees  # type: ignore[attr-defined]
    # the sub-tree walk (not the global one: a holds 75% of the points), every leaf
    params = {"tenant_copy": 0, "tenant_share": 1.0, "tenant_postings": 4096}
    q = x[11] + 0.01
    db.search("m", q, k=K, tenant="a", params=params)
    derived = cache.derived
    db.search("m", q, k=K, tenant="a", params=params)
    assert cache.derived == derived  # cached
    matches = [i for i in range(A) if i % 10 >= 3]
    res = db.search("m", q, k=K, tenant="a", filter=FLT, params=params)
    assert sorted(int(i) for i in res.ids[0]) == _exact(x, q, matches)
    assert cache.derived == derived + 1  # the subset's directory: derived, not kept
    res = db.search("m", q, k=K, tenant="a", params=params)
    assert cache.derived == derived + 1  # the tenant's entry is still there
    assert sorted(int(i) for i in res.ids[0]) == _exact(x, q, list(range(A)))


def test_a_global_read_during_a_drop_makes_its_bitmap_only_for_a_search(world) -> None:  # type: ignore[no-untyped-def]
    db, x = world
    core = _core(db)
    db.worker.job_lock.acquire()  # the drop's cleanup waits: b's points stay hidden
    try:
        db.drop_tenant("m", "b")
        recs = db.get("m", [0, 1, A, A + 1])
        assert [r.id for r in recs] == [0, 1]
        page, _ = db.scroll("m", limit=5000)
        assert [r.id for r in page] == list(range(A))
        scope = tenant_reads._global(core)
        assert scope is not None and not scope.made  # a get and a scroll needed no bitmap
        assert tenant_reads._global(core) is scope  # kept while nothing changes
        res = db.search("m", x[A + 5], k=K)
        assert all(int(i) < A for i in res.ids[0])
        assert db.count("m") == A
        assert scope.made and tenant_reads._global(core) is scope
        db.upsert("m", [A + B], x[:1], tenant="a")
        fresh = tenant_reads._global(core)
        assert fresh is not scope and not fresh.made
        assert db.count("m") == A + 1
    finally:
        db.worker.job_lock.release()
    db.optimize("m")
    assert tenant_reads._global(core) is None  # the cleanup is done: nothing hidden
