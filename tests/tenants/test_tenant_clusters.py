"""Clustered copies of large tenants (`engine.tenant_clusters`), through the public API on a
real SPANN collection in RocksDB: a tenant above `tenant_share` of the points is answered from
its own clustered copy, built by the maintenance worker (never on the query's thread: the
first query takes the walk and asks for it); recall against brute force over exactly the
tenant's granted vectors; the copy kept right through grants, revokes, deletes, upserts
(buffered ones too) and the rebuild past the drift threshold; read back from its file after
a reopen; nothing outside the caller's grants ever returned; and the kernel itself against
the exact scan. Files: `test_tenant_cluster_files.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database, tenant_clusters, tenant_search
from vecdb.engine.core import CollectionCore
from vecdb.engine.slot_set import LazyVisible
from vecdb.engine.tenant_cluster_build import build
from vecdb.index.base import Visible
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.tenant_scan import KINDS, search_blocks

DIM, K = 16, 10
A, B = 3000, 1000  # tenant a owns 3000 points (75%: above tenant_share), b 1000
ALL = {"max_postings": 4096, "tenant_copy": 0}  # every block of the copy: exact
SOME = {"max_postings": 16, "tenant_copy": 0}  # (a small copy would take the plain copy)


def _data(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(30, DIM))
    return (centres[rng.integers(0, 30, n)] + rng.normal(0, 1, (n, DIM))).astype(np.float32)


def _core(db: Database) -> CollectionCore:
    return db._get("m").core


def _open(path: Path) -> Database:
    return Database(path)


@pytest.fixture()
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    x = _data(1, A + B + 400)
    db = _open(tmp_path / "db")
    db.create_collection("m", DIM, "l2", index="spann", multi_tenant=True,
                         index_params={"vector_dtype": "float32"})  # fmt: skip
    db.create_tenant("m", "a")
    db.create_tenant("m", "b")
    pays = [{"year": i % 10} for i in range(A + B)]
    db.upsert("m", list(range(A)), x[:A], pays[:A], tenant="a")
    db.upsert("m", list(range(A, A + B)), x[A : A + B], pays[A:], tenant="b")
    db.create_payload_index("m", "year", "int")
    db.optimize("m")
    yield db, x, tmp_path / "db"
    db.close()


def _exact(x: np.ndarray, q: np.ndarray, ids: list[int]) -> list[list[int]]:
    ids_a = np.asarray(sorted(ids))
    d = ((x[ids_a][None, :, :] - q[:, None, :]) ** 2).sum(2)
    return [sorted(int(ids_a[j]) for j in np.argsort(row, kind="stable")[:K]) for row in d]


def _got(db: Database, q: np.ndarray, params: dict, **kw) -> list[list[int]]:  # type: ignore[no-untyped-def]
    res = db.search("m", q, k=K, tenant="a", params=params, **kw)
    return [sorted(int(i) for i in row if i >= 0) for row in res.ids]


def _copies(db: Database) -> tenant_clusters.ClusterCopies:
    core = _core(db)
    return tenant_clusters.copies_of(core, tenant_search.store_of(core))


def _ready(db: Database, q: np.ndarray, params: dict) -> None:  # type: ignore[type-arg]
    """Ask for a's copy with one query, and let the worker build it."""
    _got(db, q, params)
    db.optimize("m")
    assert ("c", _core(db).tenants.active("a").no) in _copies(db).ready


def _recall(got: list[list[int]], want: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def test_a_large_tenant_is_answered_from_its_clustered_copy(world) -> None:  # type: ignore[no-untyped-def]
    db, x, _ = world
    core = _core(db)
    cc = _copies(db)
    key = ("c", core.tenants.active("a").no)
    q = (x[:A:150] + 0.05).astype(np.float32)
    want = _exact(x, q, list(range(A)))
    # no copy yet: the query takes the global walk and asks the worker for one
    assert _got(db, q, ALL) == want
    assert "tenant_clusters" not in core.io.extra and core.io.extra["tenant_global"] == len(q)
    db.optimize("m")  # the worker builds it (by now, or before an optimize ends)
    assert cc.builds == 1 and key in cc.ready and not cc.wanted
    assert _got(db, q, ALL) == want  # every block: exact
    assert core.io.extra["tenant_clusters"] == len(q)
    assert "tenant_subtree" not in core.io.extra
    assert _recall(_got(db, q, SOME), want) >= 0.95
    assert cc.builds == 1  # built once, then read
    # off: the global walk with the bitmap, as before
    walked = core.io.extra["tenant_global"]
    _got(db, q, {**ALL, "tenant_cluster_size": 0})
    assert core.io.extra["tenant_global"] == walked + len(q)


def test_answers_are_identical_with_and_without_the_copy(world) -> None:  # type: ignore[no-untyped-def]
    db, x, _ = world
    q = (x[:A:97] + 0.03).astype(np.float32)
    _ready(db, q, ALL)
    db.grant("m", list(range(A, A + 40)), tenant="a")  # a delta beside the copy
    db.delete("m", list(range(0, 30, 2)), tenant="a")  # and removed rows
    on = db.search("m", q, k=K, tenant="a", params=ALL)
    off = db.search("m", q, k=K, tenant="a", params={**ALL, "tenant_cluster_size": 0})
    np.testing.assert_array_equal(on.ids, off.ids)
    np.testing.assert_allclose(on.distances, off.distances, rtol=1e-4, atol=1e-4)  # (float32)


def test_the_copy_follows_grants_revokes_deletes_and_upserts(world) -> None:  # type: ignore[no-untyped-def]
    db, x, _ = world
    core = _core(db)
    cc = _copies(db)
    q = np.concatenate([x[:A:300], x[A : A + B : 100]]).astype(np.float32) + 0.05
    mine = set(range(A))
    _ready(db, q, ALL)
    key = ("c", core.tenants.active("a").no)
    serial = cc.ready[key].serial
    assert _got(db, q, ALL) == _exact(x, q, sorted(mine))
    # a few changes: below the drift threshold (10% of the set), so no rebuild
    granted = list(range(A, A + 100))
    db.grant("m", granted, tenant="a")
    mine |= set(granted)
    revoked = granted[:20]
    db.revoke("m", revoked, tenant="a")
    mine -= set(revoked)
    deleted = list(range(0, 60, 3))
    db.delete("m", deleted, tenant="a")
    mine -= set(deleted)
    new = list(range(A + B, A + B + 50))  # upserted, not optimized: in the write buffer
    db.upsert("m", new, x[A + B : A + B + 50], tenant="a")
    mine |= set(new)
    qn = np.concatenate([q, x[A + B : A + B + 50 : 10] + 0.05]).astype(np.float32)
    got = _got(db, qn, ALL)
    assert got == _exact(x, qn, sorted(mine))
    assert cc.ready[key].serial == serial and core.io.extra["tenant_cluster_delta"] > 0
    assert key not in cc.wanted
    # the delta belongs to the build it was computed against: never served with another
    d = cc.deltas[key]
    same = LazyVisible(lambda: Visible.from_slots([]), None, d.version)
    assert cc.delta(key, same, d.serial) is d
    assert cc.delta(key, same, d.serial + 1) is None
    for row in _got(db, qn, SOME):
        assert set(row) <= mine  # nothing outside a's grants
    # b's view is untouched by a's copy
    res = db.search("m", qn, k=K, tenant="b", params=ALL)
    assert {int(i) for i in res.ids.ravel() if i >= 0} <= set(range(A, A + B))
    # many more changes: past the drift threshold the query asks for a new build and is
    # answered from the old copy and its delta meanwhile; the worker builds it again
    more = list(range(A + 100, A + B))
    db.grant("m", more, tenant="a")
    mine |= set(more)
    assert _got(db, qn, ALL) == _exact(x, qn, sorted(mine))
    db.optimize("m")
    assert cc.ready[key].serial != serial and key not in cc.wanted
    assert _got(db, qn, ALL) == _exact(x, qn, sorted(mine))
    assert len(cc.ready[key].members) == len(mine)
    assert _recall(_got(db, qn, SOME), _exact(x, qn, sorted(mine))) >= 0.9


def test_a_filtered_search_reads_the_copy_and_never_rewrites_it(world) -> None:  # type: ignore[no-untyped-def]
    db, x, _ = world
    cc = _copies(db)
    q = (x[:A:250] + 0.05).astype(np.float32)
    _ready(db, q, ALL)
    builds = cc.builds
    odd = [i for i in range(A) if i % 2]
    db.delete("m", odd[: A // 4], tenant="a")  # past the drift threshold for a filtered call
    flt = {"year": {"$gte": 3}}
    res = db.search("m", q, k=K, tenant="a", params=ALL, filter=flt)
    got = [sorted(int(i) for i in row if i >= 0) for row in res.ids]
    gone = set(odd[: A // 4])
    assert got == _exact(x, q, [i for i in range(A) if i % 10 >= 3 and i not in gone])
    assert not cc.wanted  # a filtered part never asks for the set's copy
    db.optimize("m")
    assert cc.builds == builds


def test_a_reopened_database_serves_the_copy_from_its_file(world) -> None:  # type: ignore[no-untyped-def]
    db, x, path = world
    q = (x[:A:200] + 0.05).astype(np.float32)
    _ready(db, q, ALL)
    before = _got(db, q, SOME)
    db.grant("m", list(range(A, A + 30)), tenant="a")
    db.close()
    db2 = _open(path)
    try:
        core = _core(db2)
        cc = _copies(db2)
        res = db2.search("m", q, k=K, tenant="a", params=ALL)
        got = [sorted(int(i) for i in row) for row in res.ids]
        assert got == _exact(x, q, list(range(A + 30)))
        assert core.io.extra["tenant_clusters"] == len(q)  # served by the copy at once
        assert cc.loads == 1 and cc.builds == 0
        db2.optimize("m")
        assert cc.builds == 0  # nothing rebuilt
        assert _recall(before, _exact(x, q, list(range(A)))) >= 0.95
    finally:
        db2.close()


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_all_blocks_of_the_kernel_equal_the_exact_scan(metric: str) -> None:
    x = _data(5, 2000)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = _data(6, 25)
    if metric == "cosine":
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    slots = np.arange(10, 4010, 2, dtype=np.int64)
    cl = build(slots, x, 32, 3, 2.0)
    assert len(cl.slots) > len(slots)  # replicas were placed
    np.testing.assert_array_equal(cl.members, slots)
    cn = (cl.centroids**2).sum(1).astype(np.float32)
    keep = np.ones(len(x), np.bool_)
    keep[::7] = False  # a bitmap leaving out every seventh member
    bits = np.packbits(np.isin(np.arange(4010), slots[keep]), bitorder="little")
    ids, dist = search_blocks(q, cl.centroids, cn, len(cl.centroids), cl.vectors, cl.slots,
                              cl.offsets, bits, KINDS[metric], K)  # fmt: skip
    rows, d = exact_topk(q, x[keep], metric, K)
    np.testing.assert_array_equal(ids, slots[keep][rows])
    np.testing.assert_allclose(dist, d, rtol=1e-4, atol=1e-4)
    for row in ids:
        assert len(set(row.tolist())) == K  # replicas never count twice
