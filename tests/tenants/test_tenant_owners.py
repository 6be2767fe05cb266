"""Owners are no longer kept in memory per slot: a tenant's delete or payload update checks
the owner in the `acl:` rows, a delete by filter keeps only the tenant's own points, and a
drop hides the points the dropped tenant owned (found from its `tv:` rows) from every
grantee at once, before and after a reopen. Real RocksDB directory, public API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.errors import PermissionDenied

DIM = 8


def _db(path: Path) -> Database:
    return Database(path)


@pytest.fixture()
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    x = np.random.default_rng(4).standard_normal((60, DIM)).astype(np.float32)
    db = _db(tmp_path / "db")
    db.create_collection("m", DIM, "l2", multi_tenant=True)
    for name in ("a", "b", "c"):
        db.create_tenant("m", name)
    pays = [{"n": i} for i in range(60)]
    db.upsert("m", list(range(20)), x[:20], pays[:20], tenant="a")
    db.upsert("m", list(range(20, 40)), x[20:40], pays[20:40], tenant="b")
    db.upsert("m", list(range(40, 60)), x[40:], pays[40:], tenant="c")
    db.grant("m", list(range(0, 20, 2)), tenant="b")  # b sees a's even points
    db.grant("m", list(range(40, 50)), tenant="b")  # and c's first ten
    yield db, x, tmp_path / "db"
    db.close()


def _seen(db: Database, tenant: str) -> set[int]:
    records, _ = db.scroll("m", tenant=tenant, limit=1000)
    return {int(r.id) for r in records}


def test_a_grantee_may_not_delete_but_the_owner_may(world) -> None:  # type: ignore[no-untyped-def]
    db, _, _ = world
    with pytest.raises(PermissionDenied) as err:
        db.delete("m", [2], tenant="b")
    assert err.value.reason == "NOT_OWNER" and err.value.field == "ids[0]"
    assert 2 in _seen(db, "b") and 2 in _seen(db, "a")  # nothing changed
    assert db.delete("m", [2], tenant="a") == 1
    assert 2 not in _seen(db, "b") and 2 not in _seen(db, "a")


def test_a_tenant_delete_by_filter_takes_only_its_own_points(world) -> None:  # type: ignore[no-untyped-def]
    db, _, _ = world
    everything = {"n": {"$gte": 0}}
    assert db.delete("m", filter=everything, tenant="b") == 20  # b's own 20, no granted one
    assert _seen(db, "b") == set(range(0, 20, 2)) | set(range(40, 50))
    assert _seen(db, "a") == set(range(20)) and _seen(db, "c") == set(range(40, 60))


def test_a_drop_hides_the_owners_points_from_grantees_before_and_after_reopen(world) -> None:  # type: ignore[no-untyped-def]
    db, _, path = world
    db.drop_tenant("m", "c")
    assert _seen(db, "b") == set(range(0, 20, 2)) | set(range(20, 40))  # c's ten are gone
    assert db.get("m", [45], tenant="b") == []
    db.close()
    db2 = _db(path)
    try:
        assert _seen(db2, "b") == set(range(0, 20, 2)) | set(range(20, 40))
        assert _seen(db2, "a") == set(range(20))
    finally:
        db2.close()
