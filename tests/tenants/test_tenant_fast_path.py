"""The small tenant's per-call fast path, through the public API on a real SPANN collection
(RocksDB in tmp_path): a copy found exact at the set's version answers the next search of
that set without reading the set back (`tenant_search.exact_copy`), and every change of the
set (grant, revoke, upsert, delete, a drop of the granting owner) moves the version, so the
next search follows it: answers stay the brute force over the tenant's current points. A
copy holding rows the set lost is never taken as the set. Also
the copy store's kept views and tags (`TenantStore.read`, `tag`, `tagged`) and
`CollectionCore.use()` (a plain context manager now)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database, tenant_search
from vecdb.engine.core import CollectionCore
from vecdb.engine.tenant_store import TenantStore
from vecdb.errors import Unavailable

DIM, K = 16, 10
A, B = 300, 200  # tenant a owns ids 0..299, b ids 300..499


def _core(db: Database) -> CollectionCore:
    return db._get("m").core


@pytest.fixture()
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((A + B + 50, DIM)).astype(np.float32)
    db = Database(tmp_path / "db")
    db.create_collection("m", DIM, "l2", index="spann", multi_tenant=True,
                         index_params={"vector_dtype": "float32"})  # fmt: skip
    db.create_tenant("m", "a")
    db.create_tenant("m", "b")
    db.upsert("m", list(range(A)), x[:A], tenant="a")
    db.upsert("m", list(range(A, A + B)), x[A : A + B], tenant="b")
    db.optimize("m")
    yield db, x
    db.close()


def _exact(x: np.ndarray, q: np.ndarray, ids: set[int]) -> list[int]:
    members = sorted(ids)
    d = ((x[members] - q) ** 2).sum(1)
    return [members[j] for j in np.argsort(d, kind="stable")[:K]]


def _ids(db: Database, q: np.ndarray, **scope: object) -> list[int]:
    res = db.search("m", q, k=K, **scope)  # type: ignore[arg-type]
    return [int(i) for i in res.ids[0] if int(i) >= 0]


def _version(core: CollectionCore, *names: str) -> tuple[tuple[int, int], ...]:
    ts = core.tenants
    assert ts is not None
    nos = sorted(ts.active(n).no for n in names)  # type: ignore[union-attr]
    return tuple((n, ts.by_no[n].version) for n in nos)


def _tagged(core: CollectionCore, *names: str) -> bool:
    version = _version(core, *names)
    return tenant_search.exact_copy(core, tuple(n for n, _ in version), version) is not None


def test_the_set_is_taken_from_its_copy_until_it_changes(world) -> None:  # type: ignore[no-untyped-def]
    db, x = world
    core = _core(db)
    mine = set(range(A))
    q = x[A + B] + 0.0  # a fresh vector (id A + B + ... are not stored yet)
    assert _ids(db, q, tenant="a") == _exact(x, q, mine)  # makes the copy
    assert not _tagged(core, "a")
    assert _ids(db, q, tenant="a") == _exact(x, q, mine)  # finds it equal: tagged
    assert _tagged(core, "a")
    copies = tenant_search.store_of(core).copies
    for _ in range(3):
        assert _ids(db, q, tenant="a") == _exact(x, q, mine)
    assert tenant_search.store_of(core).copies == copies  # nothing made or patched

    steps = [
        ("grant", lambda: db.grant("m", [A + 3, A + 4], tenant="a", owner="b"), {A + 3, A + 4}, set()),
        ("revoke", lambda: db.revoke("m", [A + 3], tenant="a", owner="b"), set(), {A + 3}),
        ("upsert", lambda: db.upsert("m", [A + B], x[A + B : A + B + 1], tenant="a"), {A + B}, set()),
        ("delete", lambda: db.delete("m", [5, A + B], tenant="a"), set(), {5, A + B}),
    ]  # fmt: skip
    for name, change, added, removed in steps:
        # the query sits on a point the change adds or removes, so a stale set shows
        q = x[min(added or removed)] + np.float32(1e-3)
        before = _version(core, "a")
        change()
        assert _version(core, "a") != before, name
        assert not _tagged(core, "a"), name
        mine = (mine | added) - removed
        assert _ids(db, q, tenant="a") == _exact(x, q, mine), name
        assert _ids(db, q, tenant="a") == _exact(x, q, mine), name
        # a copy that lost rows serves the smaller set as a subset (rewritten only when
        # much larger than it, `tenant_search.SHRINK`): never tagged then; one that gained
        # rows is rewritten (patched) and tagged again
        assert _tagged(core, "a") == (not removed), name


def test_a_union_of_tenants_is_tagged_as_one_set(world) -> None:  # type: ignore[no-untyped-def]
    db, x = world
    core = _core(db)
    both = set(range(A + B))
    q = x[A + 7] + np.float32(1e-3)
    for _ in range(2):
        assert _ids(db, q, tenants=["b", "a"]) == _exact(x, q, both)
    assert _tagged(core, "a", "b") and not _tagged(core, "a")
    db.revoke("m", [A + 9], tenant="a", owner="b")  # never granted: no change, the tag stands
    assert _tagged(core, "a", "b")
    db.delete("m", [A + 7], tenant="b")
    assert not _tagged(core, "a", "b")
    assert _ids(db, q, tenants=["a", "b"]) == _exact(x, q, both - {A + 7})


def test_dropping_the_owner_of_granted_points_takes_them_out(world) -> None:  # type: ignore[no-untyped-def]
    db, x = world
    core = _core(db)
    db.grant("m", [A + 1, A + 2], tenant="a", owner="b")
    q = x[A + 1] + np.float32(1e-3)
    mine = set(range(A)) | {A + 1, A + 2}
    for _ in range(2):
        assert _ids(db, q, tenant="a") == _exact(x, q, mine)
    assert _tagged(core, "a")
    db.drop_tenant("m", "b")  # b's points are hidden at once
    assert _ids(db, q, tenant="a") == _exact(x, q, set(range(A)))
    db.optimize("m")
    assert _ids(db, q, tenant="a") == _exact(x, q, set(range(A)))


def test_the_store_keeps_views_and_tags_per_extent(tmp_path: Path) -> None:
    store = TenantStore(tmp_path, 4)
    s1 = np.arange(0, 20, 2, dtype=np.int64)
    store.write("a", s1, np.ones((10, 4), np.float32))
    hit = store.read("a")
    assert hit is not None and store.read("a") is hit  # the same arrays, not new views
    np.testing.assert_array_equal(hit[0], s1)
    assert store.tagged("a", 1) is None
    store.tag("a", 1, np.array(s1))  # not the arrays read: no tag
    assert store.tagged("a", 1) is None
    store.tag("a", 1, hit[0])
    assert store.tagged("a", 1) is hit and store.tagged("a", 2) is None
    store.write("b", s1[:3], np.zeros((3, 4), np.float32))  # appends ...
    assert store.read("b") is not None  # ... and reading it maps the file anew
    again = store.tagged("a", 1)  # the tag is the extent's: it stands
    assert again is not None and again is not hit
    np.testing.assert_array_equal(again[0], s1)
    np.testing.assert_array_equal(again[1], 1.0)
    store.write("a", s1[:5], np.full((5, 4), 2.0, np.float32))  # rewritten: untagged
    assert store.tagged("a", 1) is None
    new = store.read("a")
    assert new is not None and len(new[0]) == 5 and (new[1] == 2.0).all()
    np.testing.assert_array_equal(hit[1], 1.0)  # old views stay valid while held
    store.close()


def test_use_counts_calls_and_refuses_them_once_shut(world) -> None:  # type: ignore[no-untyped-def]
    db, _ = world
    core = _core(db)
    inside, release, shut = threading.Event(), threading.Event(), threading.Event()

    def call() -> None:
        with core.use():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=call)
    t.start()
    assert inside.wait(10)
    closer = threading.Thread(target=lambda: (core.shut(), shut.set()))
    closer.start()
    assert not shut.wait(0.2)  # waits for the call inside
    release.set()
    t.join(10)
    assert shut.wait(10)
    closer.join(10)
    with pytest.raises(Unavailable, match="closed"):
        with core.use():
            pass
    with pytest.raises(ValueError):  # an error inside still leaves (shut does not hang)
        core.closing = False
        with core.use():
            raise ValueError("x")
    core.shut()
