"""The clustered copies' files and their background builds (`engine.tenant_cluster_file`,
`engine.tenant_cluster_jobs`), on a real SPANN collection in RocksDB: a stale, torn or corrupt
file is ignored (the query takes the walk, exact all the same) and built again by the worker;
the worker builds a large tenant's copy after an index build with no query asking; copies
without an index directory stay in the scratch file; a file whose
members the collection never handed out is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.engine import Database, tenant_clusters, tenant_search
from vecdb.engine import tenant_cluster_file as cfile
from vecdb.engine.tenant_cluster_build import build
from vecdb.engine.tenant_store import TenantStore

DIM, K = 16, 10
A, B = 3000, 1000
ALL = {"max_postings": 4096, "tenant_copy": 0}


def _data(seed: int, n: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(30, dim))
    return (centres[rng.integers(0, 30, n)] + rng.normal(0, 1, (n, dim))).astype(np.float32)


def _copies(db: Database, name: str = "m") -> tenant_clusters.ClusterCopies:
    core = db._get(name).core
    return tenant_clusters.copies_of(core, tenant_search.store_of(core))


def _fill(db: Database, x: np.ndarray, a: int, b: int) -> None:
    db.create_collection("m", x.shape[1], "l2", index="spann", multi_tenant=True,
                         index_params={"vector_dtype": "float32"})  # fmt: skip
    db.create_tenant("m", "a")
    db.create_tenant("m", "b")
    db.upsert("m", list(range(a)), x[:a], tenant="a")
    db.upsert("m", list(range(a, a + b)), x[a : a + b], tenant="b")
    db.optimize("m")


def _exact(x: np.ndarray, q: np.ndarray, ids: list[int]) -> list[list[int]]:
    ids_a = np.asarray(sorted(ids))
    d = ((x[ids_a][None, :, :] - q[:, None, :]) ** 2).sum(2)
    return [sorted(int(ids_a[j]) for j in np.argsort(row, kind="stable")[:K]) for row in d]


def _got(db: Database, q: np.ndarray, params: dict) -> list[list[int]]:  # type: ignore[type-arg]
    res = db.search("m", q, k=K, tenant="a", params=params)
    return [sorted(int(i) for i in row if i >= 0) for row in res.ids]


def _copy_of_a(db: Database, x: np.ndarray, q: np.ndarray) -> tuple[Any, Any, Path]:
    """Load x, query tenant "a" (whose copy the worker then builds), optimize: its
    clustered copies, the copy's key and its file (checked ready and on disk)."""
    _fill(db, x, A, B)
    _got(db, q, ALL)
    db.optimize("m")
    cc = _copies(db)
    key = ("c", db._get("m").core.tenants.active("a").no)
    path = cc.path(key)
    assert key in cc.ready and path.is_file()
    return cc, key, path


def _spoil(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "flip":
        raw[len(raw) // 2] ^= 0xFF  # a bit flipped in the vectors: the checksum catches it
    elif how == "format":
        raw[8:16] = (cfile.FORMAT + 1).to_bytes(8, "little")  # a newer (or older) layout
    elif how == "truncate":
        raw = raw[: len(raw) - 100]  # torn
    else:
        raw = bytearray(b"not a copy at all" * 10)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["flip", "format", "truncate", "garbage"])
def test_a_spoiled_file_is_ignored_and_built_again(tmp_path: Path, how: str) -> None:
    x = _data(1, A + B)
    q = (x[:A:150] + 0.05).astype(np.float32)
    want = _exact(x, q, list(range(A)))
    with Database(tmp_path / "db") as db:
        cc, key, path = _copy_of_a(db, x, q)
    _spoil(path, how)
    with Database(tmp_path / "db") as db:
        core = db._get("m").core
        assert _got(db, q, ALL) == want  # the walk: the file was refused
        assert "tenant_clusters" not in core.io.extra
        cc = _copies(db)
        assert cc.loads == 0
        db.optimize("m")
        assert cc.builds == 1 and key in cc.ready
        assert _got(db, q, ALL) == want
        assert core.io.extra["tenant_clusters"] == len(q)
        n_slot = core.points.next_slot
    good = cfile.load(path, key[1:], DIM, n_slot, 0)  # the file is whole again
    assert good is not None and len(good.members) == A


def test_the_worker_builds_a_large_tenants_copy_after_a_build(tmp_path: Path) -> None:
    # at default parameters a set takes the clustered path above `tenant_copy` bytes (2 MiB
    # of slot + vector: 2,033 rows at 256 dims) and `tenant_share` of the points
    dim, a, b = 256, 2300, 300
    x = _data(2, a + b, dim)
    with Database(tmp_path / "db") as db:
        _fill(db, x, a, b)  # no query at all
        cc = _copies(db)
        core = db._get("m").core
        key = ("c", core.tenants.active("a").no)
        assert cc.builds == 1 and key in cc.ready  # b is small: its plain copy serves it
        assert cc.path(key).is_file()
        q = (x[:a:100] + 0.05).astype(np.float32)
        res = db.search("m", q, k=K, tenant="a", params={"max_postings": 4096})
        assert core.io.extra["tenant_clusters"] == len(q)
        got = [sorted(int(i) for i in row) for row in res.ids]
        assert got == _exact(x, q, list(range(a)))


def test_without_an_index_directory_copies_stay_in_the_scratch_file() -> None:
    x = _data(3, 500)
    slots = np.arange(0, 1000, 2, dtype=np.int64)
    cl = build(slots, x, 32, 2, 1.4)
    store = TenantStore(None, DIM)
    try:
        cc = tenant_clusters.ClusterCopies(store, None, lambda: 1000)
        key = ("c", 3)
        assert cc.read(key, DIM) is None
        cc.write(key, cl, (32, 2, 1.4), DIM)
        got = cc.read(key, DIM)
        assert got is not None and cc.builds == 1 and len(store) == 1
        for have, want in ((got.offsets, cl.offsets), (got.slots, cl.slots),
                           (got.members, cl.members), (got.centroids, cl.centroids),
                           (got.vectors, cl.vectors)):  # fmt: skip
            np.testing.assert_array_equal(have, want)
        np.testing.assert_allclose(got.cnorms, (cl.centroids**2).sum(1), rtol=1e-6)
    finally:
        store.close()


def test_an_in_memory_database_builds_copies_too() -> None:
    x = _data(3, A + B)
    q = (x[:A:150] + 0.05).astype(np.float32)
    with Database() as db:
        _fill(db, x, A, B)
        _got(db, q, ALL)
        db.optimize("m")
        core = db._get("m").core
        assert _copies(db).builds == 1
        assert _got(db, q, ALL) == _exact(x, q, list(range(A)))
        assert core.io.extra["tenant_clusters"] == len(q)


def test_a_file_with_slots_never_handed_out_is_refused(tmp_path: Path) -> None:
    x = _data(4, 500)
    slots = np.arange(100, 600, dtype=np.int64)
    cl = build(slots, x, 32, 2, 1.4)
    parts = cfile.parts_of(cl.offsets, cl.slots, cl.members, cl.centroids, cl.vectors)
    path = cfile.path_for(tmp_path, (7,))
    cfile.save(path, (7,), parts, (32, 2, 1.4))
    got = cfile.load(path, (7,), DIM, 600, 5)
    assert got is not None and got.serial == 5
    np.testing.assert_array_equal(got.members, slots)
    np.testing.assert_array_equal(got.vectors, cl.vectors)
    assert not got.vectors.flags.writeable  # views of the read-only mapping
    assert cfile.load(path, (7,), DIM, 599, 5) is None  # slot 599 not handed out yet
    assert cfile.load(path, (8,), DIM, 600, 5) is None  # another set's name
    assert cfile.load(path, (7,), DIM + 1, 600, 5) is None  # another dimension
    assert cfile.load(tmp_path / "nothing.bin", (7,), DIM, 600, 5) is None


def test_a_dropped_tenants_copy_and_file_go_with_it(tmp_path: Path) -> None:
    x = _data(5, A + B)
    q = (x[:A:150] + 0.05).astype(np.float32)
    with Database(tmp_path / "db") as db:
        cc, key, path = _copy_of_a(db, x, q)
        db.drop_tenant("m", "a")
        db.optimize("m")  # the drop's cleanup runs before an optimize ends
        assert key not in cc.ready and not path.exists()
        db.create_tenant("m", "a")  # the name is free again; the new tenant has no copy
        assert ("c", db._get("m").core.tenants.active("a").no) not in cc.ready
