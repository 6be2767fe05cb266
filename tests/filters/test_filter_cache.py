"""The filtered-search cache of a collection stays within its byte budget (least recently
used answers go first, an answer larger than the budget is never kept), is emptied by a
write, reports itself in `stats()`, and never changes an answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracles import Model

from vecdb.engine import Database
from vecdb.engine.filters import parse
from vecdb.engine.selection import CACHE_BYTES

N, DIM, GROUPS, K = 4000, 128, 20, 10
BUDGET = 2**20  # bytes: a tenth of what GROUPS cached exact scans would hold


@pytest.fixture
def world(tmp_path: Path) -> tuple[Database, Model]:
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((N, DIM)).astype(np.float32)
    pays = [{"g": i % GROUPS, "h": i % GROUPS} for i in range(N)]  # "g" indexed, "h" not
    db = Database(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index="flat")
    db.create_payload_index("c", "g", "int")
    db.upsert("c", list(range(N)), xb, pays)
    model = Model("l2")
    model.upsert(range(N), xb, pays)
    return db, model


def cache(db: Database) -> dict[str, int]:
    return dict(db.stats("c")["filter_cache"])


def test_default_budget_is_64_mib(world: tuple[Database, Model]) -> None:
    """Each collection's cache may hold 64 MiB, and starts empty."""
    db, _ = world
    assert CACHE_BYTES == 64 * 2**20
    got = cache(db)
    assert got["max_bytes"] == CACHE_BYTES and got["bytes"] == 0 and got["entries"] == 0
    db.close()


def test_cache_stays_within_budget_least_recently_used_out(world: tuple[Database, Model]) -> None:
    """Exact scans of GROUPS filters (about 100 KiB of vectors each) under a 1 MiB budget:
    the cache never passes it, drops the oldest answers and keeps the newest; every answer
    is exact whether it came from the cache or not."""
    db, model = world
    db.collections["c"].core.selector.max_bytes = BUDGET
    q = np.random.default_rng(4).standard_normal((2, DIM)).astype(np.float32)
    for g in range(GROUPS):
        flt = {"g": g}
        model.assert_search(db.search("c", q, k=K, filter=flt), q, K, flt)
        assert 0 < cache(db)["bytes"] <= BUDGET
    full = cache(db)
    assert full["evictions"] > 0 and full["entries"] < GROUPS
    newest = {"g": GROUPS - 1}
    model.assert_search(db.search("c", q, k=K, filter=newest), q, K, newest)
    assert cache(db)["hits"] > full["hits"]  # the newest answer was kept
    oldest = {"g": 0}
    model.assert_search(db.search("c", q, k=K, filter=oldest), q, K, oldest)
    after = cache(db)
    assert after["misses"] > full["misses"] and after["bytes"] <= BUDGET  # it had been dropped
    db.close()


def test_answer_larger_than_budget_is_not_kept(world: tuple[Database, Model]) -> None:
    """An answer of more bytes than the budget (here: the vectors of an exact scan over
    half the points, 1 MiB + 32 KiB with their slots) is returned but not kept, and what
    was cached stays."""
    db, model = world
    selector = db.collections["c"].core.selector
    selector.max_bytes = BUDGET
    q = np.random.default_rng(5).standard_normal((1, DIM)).astype(np.float32)
    db.search("c", q, k=K, filter={"g": 1})
    kept = cache(db)
    assert 0 < kept["bytes"] <= BUDGET
    flt = {"h": {"$lt": GROUPS // 2}}
    big = (np.zeros(N, np.int64), np.zeros((N // 2, DIM), np.float32))
    compiled = parse(flt)
    assert compiled is not None
    slots, _ = selector.cached("vectors", compiled, lambda: big)
    assert slots is big[0]
    assert cache(db)["bytes"] == kept["bytes"] and cache(db)["entries"] == kept["entries"]
    model.assert_search(db.search("c", q, k=K, filter=flt), q, K, flt)
    assert cache(db)["bytes"] <= BUDGET
    db.close()


def test_write_empties_the_cache(world: tuple[Database, Model]) -> None:
    """A committed write gives the cache's memory back at once."""
    db, model = world
    q = np.random.default_rng(6).standard_normal((1, DIM)).astype(np.float32)
    for g in range(3):
        db.search("c", q, k=K, filter={"g": g})
    assert cache(db)["bytes"] > 0
    db.set_payload("c", [0], {"g": 1})
    assert cache(db)["bytes"] == 0 and cache(db)["entries"] == 0
    model.points[0] = (model.points[0][0], {"g": 1, "h": 0})
    model.assert_search(db.search("c", q, k=K, filter={"g": 1}), q, K, {"g": 1})
    db.close()
