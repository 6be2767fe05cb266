"""Filters in the engine against brute force: count, search and scroll with generated filters
of the whole language agree with `oracles` on the flat index and on SPANN (points in the
write buffer, and built), with and without payload indexes, and with indexed filters taking
both of their paths (few matches: exact scan; many: the index's visible set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import strategies as gen
from filter_data import INDEXES, rich_payload
from hypothesis import HealthCheck, given, settings
from oracles import ALL_POSTINGS, SPANN_EXACT, Model, matches

from vecdb.engine import Database, reader
from vecdb.engine.filters import parse

N, DIM, K = 400, 6, 7
CASES = {  # collection -> (index kind, index params, search params, build, payload indexes)
    "flat": ("flat", None, None, False, False),
    "flat_idx": ("flat", None, None, False, True),
    "buffer": ("spann", SPANN_EXACT, ALL_POSTINGS, False, False),
    "buffer_idx": ("spann", SPANN_EXACT, ALL_POSTINGS, False, True),
    "built": ("spann", SPANN_EXACT, ALL_POSTINGS, True, False),
    "built_idx": ("spann", SPANN_EXACT, ALL_POSTINGS, True, True),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, Model]]:
    """One database holding the same points in every case's collection, and their model."""
    rng = np.random.default_rng(99)
    xb = rng.integers(-3, 4, size=(N, DIM)).astype(np.float32)
    ids = [int(i) * 3 for i in rng.permutation(N)]  # not in slot order
    pays = [rich_payload(rng) for _ in range(N)]
    model = Model("l2")
    model.upsert(ids, xb, pays)
    db = Database(Path(tmp_path_factory.mktemp("filters")) / "db")
    for name, (kind, ip, _, build, indexed) in CASES.items():
        db.create_collection(name, DIM, "l2", index=kind, index_params=ip)
        if indexed:
            for key, typ in list(INDEXES.items())[:2]:  # some before the points ...
                db.create_payload_index(name, key, typ)
        db.upsert(name, ids, xb, pays)
        if indexed:
            for key, typ in list(INDEXES.items())[2:]:  # ... some built over them
                db.create_payload_index(name, key, typ)
        if build:
            db.optimize(name)
    yield db, model
    db.close()


@pytest.fixture(params=["few", "visible"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Indexed filters answered by an exact scan of the matches, or as a visible set."""
    if request.param == "visible":
        monkeypatch.setattr(reader, "FEW_MATCHES", 0)
        monkeypatch.setattr(reader, "FEW_MATCHES_PER_K", 0)
        monkeypatch.setattr(reader, "FEW_MATCHES_FLOATS", 0)
    return str(request.param)


@pytest.mark.parametrize("name", list(CASES))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flt=gen.rich_filters(), seed=gen.seeds())
def test_count_search_scroll_agree_with_brute_force(world, path, name, flt, seed) -> None:
    """count(filter), search(filter) and a filtered scroll equal the model's answers."""
    db, model = world
    want_ids, _ = model.live(flt)
    assert db.count(name, flt) == len(want_ids)
    q = gen.query_vectors(3, DIM, seed)
    res = db.search(name, q, K, filter=flt, params=CASES[name][2])
    model.assert_search(res, q, K, flt)
    recs, nxt = db.scroll(name, filter=flt, limit=N)
    assert [r.id for r in recs] == sorted(want_ids) and nxt is None


def test_indexed_collections_report_their_indexes(world) -> None:
    """get_collection lists the payload indexes with their types."""
    db, _ = world
    assert db.get_collection("flat_idx").payload_indexes == INDEXES
    assert db.get_collection("flat").payload_indexes == {}


ANSWERABLE = [
    {"year": {"$gte": 0}},
    {"year": {"$gt": 1, "$lte": 2**60}},
    {"tag": {"$gte": "a", "$lt": "b"}},
    {"tag": {"$nin": ["a", "1"]}},
    {"$not": {"flag": True}},
    {"score": {"$in": [1, 2.5, -3]}},
    {"$or": [{"meta.x": {"$ne": 2**60 + 1}}, {"tag": ""}]},
    {"$and": [{"year": 2**60}, {"meta.x": {"$lt": 2.5}}]},
    {"year": {"$in": []}},
]


@pytest.mark.parametrize("flt", ANSWERABLE, ids=[str(f) for f in ANSWERABLE])
def test_indexed_filters_take_the_index_path(world, path, flt) -> None:
    """Filters that the indexes answer are exact on both paths; with the threshold at zero
    the index is searched with a visible set (its stats count the query), else it is not."""
    db, model = world
    core = db.collections["built_idx"].core
    compiled = parse(flt)
    assert compiled is not None and core.pindex.answerable(compiled)
    q = gen.query_vectors(2, DIM, 5)
    before = db.stats("built_idx")["index"]["queries"]
    res = db.search("built_idx", q, K, filter=flt, params=ALL_POSTINGS)
    model.assert_search(res, q, K, flt)
    assert db.count("built_idx", flt) == len(model.live(flt)[0])
    searched = db.stats("built_idx")["index"]["queries"] > before
    many = len(model.live(flt)[0]) > 0
    assert searched is (path == "visible" and many)


def test_scroll_pages_cover_every_point_once_in_order(world) -> None:
    """Small pages under a filter: each matching id exactly once, ascending, offsets chain."""
    db, model = world
    flt = {"$or": [{"tag": {"$exists": True}}, {"meta.x": {"$lt": 2}}]}
    want = sorted(model.live(flt)[0])
    got: list[int] = []
    offset = None
    while True:
        recs, offset = db.scroll("built_idx", filter=flt, limit=7, offset=offset)
        assert all(r.vector is None and matches(r.payload, flt) for r in recs)
        got.extend(int(r.id) for r in recs)
        if offset is None:
            break
        assert offset > got[-1]
    assert got == want
