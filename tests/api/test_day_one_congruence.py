"""The day-one calls other than search give the same answers embedded, remote and async remote.

Each test runs one scenario (scroll, count / delete by filter, set / overwrite payload,
payload indexes, get without vectors, exist_ok, snapshots) in the three modes over identically
seeded collections of the default SPANN index (built by `optimize()`) and of the flat index,
and compares the answers value for value (ids, vector bytes, payloads as JSON text, error
class, message, field and reason); where an exact answer is known (sorted ids, the
brute-force filter oracle) the local answer is checked against it too. Search:
test_search_congruence.py.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import oracles
from api_modes import Trio, outcome
from day_one_data import (
    DIM,
    FILTERS,
    NAMES,
    N,
    int_ids,
    js,
    make,
    page,
    payload_of,
    rec,
    res,
    same,
    scroll_all,
    str_ids,
    vectors,
)

import vecdb

# -- scroll ---------------------------------------------------------------------------------


def test_scroll_pages_and_next_offset_agree(trio: Trio, index: str) -> None:
    """Pages, their order and next_offset are the same in every mode, and walk every id once
    in ascending order, with or without vectors and payloads."""

    def scenario(c: Any) -> Any:
        name = make(c, index)
        return (
            scroll_all(c, name, 17),
            scroll_all(c, name, 100, with_vectors=True, with_payload=False),
            page(c.scroll(name, limit=5, offset=int_ids()[3] + 0)),
            page(c.scroll(name, limit=10_000)),
        )

    small, with_vectors, mid, whole = same(trio, scenario)
    want = sorted(int_ids())
    assert [r[0] for p in small for r in p[0]] == want
    assert [len(p[0]) for p in small[:-1]] == [17] * (len(small) - 1)
    assert [p[1] for p in small[:-1]] == [p[0][0][0] for p in small[1:]]
    assert all(r[1] is None for p in small for r in p[0])
    assert [r[0] for p in with_vectors for r in p[0]] == want
    data = vectors()
    by_id = dict(zip(int_ids(), range(N), strict=True))
    for p in with_vectors:
        for rid, vec, pay in p[0]:
            assert vec == data[by_id[rid]].tobytes() and pay == js(None)
    start = want.index(int_ids()[3])
    assert [r[0] for r in mid[0]] == want[start : start + 5]
    assert [r[0] for r in whole[0]] == want and whole[1] is None


def test_scroll_str_ids_go_by_utf8_bytes(trio: Trio, index: str) -> None:
    """String ids page in UTF-8 byte order in every mode; an offset between ids starts at the
    next one."""

    def scenario(c: Any) -> Any:
        name = make(c, index, id_type="str")
        return scroll_all(c, name, 9), page(c.scroll(name, limit=3, offset="b"))

    pages, after_b = same(trio, scenario)
    want = sorted(str_ids(), key=lambda s: s.encode("utf-8"))
    assert [r[0] for p in pages for r in p[0]] == want
    assert [r[0] for r in after_b[0]] == [s for s in want if s.encode() >= b"b"][:3]


def test_filtered_scroll_agrees_and_matches_the_oracle(trio: Trio, index: str) -> None:
    """A filtered scroll pages through exactly the matching points, with or without an index
    on the field."""
    flt = {"$or": [{"year": {"$gte": 2010}}, {"meta.y.z": "日本"}], "flag": True}

    def scenario(c: Any) -> Any:
        name = make(c, index)
        plain = scroll_all(c, name, 6, filter=flt)
        c.create_payload_index(name, "year", "int")
        return plain, scroll_all(c, name, 6, filter=flt)

    plain, indexed = same(trio, scenario)
    want = sorted(i for n, i in enumerate(int_ids()) if oracles.matches(payload_of(n), flt))
    assert want and [r[0] for p in plain for r in p[0]] == want
    assert indexed == plain


# -- count, delete, payloads ----------------------------------------------------------------


def test_count_and_delete_by_filter_agree(trio: Trio, index: str) -> None:
    """count(filter) for every operator family, then delete(filter) and what is left."""

    def scenario(c: Any) -> Any:
        name = make(c, index)
        counts = [c.count(name, f) for f in FILTERS]
        deleted = c.delete(name, filter={"year": {"$gte": 2010}})
        again = c.delete(name, filter={"year": {"$gte": 2010}})
        left = [r[0] for r in page(c.scroll(name, limit=10_000))[0]]
        return counts, deleted, again, c.count(name), left

    counts, deleted, again, total, left = same(trio, scenario)
    pays = [payload_of(i) for i in range(N)]
    assert counts == [sum(oracles.matches(p, f) for p in pays) for f in FILTERS]
    gone = {
        i for n, i in enumerate(int_ids()) if oracles.matches(pays[n], {"year": {"$gte": 2010}})
    }
    assert deleted == len(gone) > 0 and again == 0 and total == N - len(gone)
    assert left == sorted(set(int_ids()) - gone)


def test_set_and_overwrite_payload_then_get_agree(trio: Trio, index: str) -> None:
    """set_payload merges top-level keys, overwrite_payload replaces, missing ids are skipped
    and not counted; the vectors stay; get with and without vectors."""
    ids = int_ids()

    def scenario(c: Any) -> Any:
        name = make(c, index)
        a = c.set_payload(
            name, [ids[0], ids[1], 123_456], {"tag": "new", "n": 1, "x": {"y": [1.0]}}
        )
        b = c.overwrite_payload(name, [ids[2], ids[11]], {"only": True})
        d = c.set_payload(name, [ids[11]], {"more": None})
        got = [rec(r) for r in c.get(name, [ids[0], ids[1], ids[2], ids[11], 123_456])]
        bare = [rec(r) for r in c.get(name, ids[:3], with_vectors=False)]
        return a, b, d, got, bare, c.count(name, {"tag": "new"})

    a, b, d, got, bare, n_new = same(trio, scenario)
    assert (a, b, d, n_new) == (2, 2, 1, 2)
    assert [g[0] for g in got] == [ids[0], ids[1], ids[2], ids[11]]
    assert json.loads(got[0][2]) == {
        **(payload_of(0) or {}),
        "tag": "new",
        "n": 1,
        "x": {"y": [1.0]},
    }
    assert json.loads(got[1][2]) == {
        **(payload_of(1) or {}),
        "tag": "new",
        "n": 1,
        "x": {"y": [1.0]},
    }
    assert got[2][2] == js({"only": True}) and got[3][2] == js({"only": True, "more": None})
    assert got[0][1] == vectors()[0].tobytes()
    assert [g[1] for g in bare] == [None, None, None]
    assert [g[2] for g in bare] == [g[2] for g in got[:3]]


# -- payload indexes ------------------------------------------------------------------------


def test_payload_index_lifecycle_agrees(trio: Trio, index: str) -> None:
    """Create (idempotent), another type (AlreadyExists), CollectionInfo.payload_indexes,
    drop, drop again (NotFound): the same in every mode."""

    def scenario(c: Any) -> Any:
        name = make(c, index)
        steps: list[Any] = [c.get_collection(name).payload_indexes]
        c.create_payload_index(name, "year", "int")
        c.create_payload_index(name, "year", "int")
        c.create_payload_index(name, "meta.y.z", "str")
        c.create_payload_index(name, "flag", "bool")
        c.create_payload_index(name, "score", "float")
        steps.append(c.get_collection(name).payload_indexes)
        steps.append(outcome(c, lambda c: c.create_payload_index(name, "year", "str")))
        steps.append([i.payload_indexes for i in c.list_collections() if i.name == name])
        c.drop_payload_index(name, "year")
        steps.append(c.get_collection(name).payload_indexes)
        steps.append(outcome(c, lambda c: c.drop_payload_index(name, "year")))
        return steps

    steps = same(trio, scenario)
    full = {"year": "int", "meta.y.z": "str", "flag": "bool", "score": "float"}
    assert steps[0] == {} and steps[1] == full and steps[3] == [full]
    assert steps[2][0] is vecdb.AlreadyExists
    assert steps[4] == {k: t for k, t in full.items() if k != "year"}
    assert steps[5][0] is vecdb.NotFound


def test_get_without_vectors_leaves_vector_none(trio: Trio, index: str) -> None:
    """get(with_vectors=False): records in request order, vector None, payloads kept; str
    ids too."""

    def scenario(c: Any) -> Any:
        name = make(c, index, id_type="str")
        want = ["日本", "missing", "a", "k000"]
        return [rec(r) for r in c.get(name, want, with_vectors=False)], [
            rec(r) for r in c.get(name, want)
        ]

    bare, full = same(trio, scenario)
    assert [r[0] for r in bare] == ["日本", "a", "k000"] == [r[0] for r in full]
    assert all(r[1] is None for r in bare) and all(r[1] is not None for r in full)
    assert [r[2] for r in bare] == [r[2] for r in full]


# -- collections ----------------------------------------------------------------------------


def test_exist_ok_and_collection_exists_agree(trio: Trio, index: str) -> None:
    """exist_ok with the same settings answers the collection; different settings are
    AlreadyExists naming the setting; collection_exists before and after."""

    def scenario(c: Any) -> Any:
        name = f"e{next(NAMES) // 3}"
        kind = None if index == "spann" else "flat"
        steps: list[Any] = [c.collection_exists(name)]
        first = c.create_collection(name, DIM, "l2", index=kind)
        again = c.create_collection(name, DIM, "l2", index=kind, exist_ok=True)
        steps.append((first.name, first.dim, first.metric, first.index, again == first))
        steps.append(c.collection_exists(name))
        for kw in ({"dim": DIM + 1}, {"metric": "ip"}, {"id_type": "str"},
                   {"index": "flat" if kind is None else "spann"},
                   {"index_params": {"max_postings": 3}}):  # fmt: skip
            args = {"dim": DIM, "metric": "l2", "index": kind, **kw}
            steps.append(
                outcome(c, lambda c, a=args: c.create_collection(name, exist_ok=True, **a))
            )
        steps.append(outcome(c, lambda c: c.create_collection(name, DIM, "l2", index=kind)))
        c.drop_collection(name)
        steps.append(c.collection_exists(name))
        return steps

    steps = same(trio, scenario)
    assert steps[0] is False and steps[2] is True and steps[-1] is False
    assert steps[1][4] is True
    for err, setting in zip(steps[3:8], ("dim", "metric", "id_type", "index", "index_params"),
                            strict=True):  # fmt: skip
        assert err[0] is vecdb.AlreadyExists and f"with {setting}=" in err[1], err
    assert steps[8][0] is vecdb.AlreadyExists


# -- snapshots ------------------------------------------------------------------------------


def test_snapshots_create_list_restore_delete_agree(trio: Trio, index: str) -> None:
    """create / list / restore / delete in every mode: restore brings back exactly the points
    (vectors and payloads) and the payload indexes of the snapshot."""

    def scenario(c: Any) -> Any:
        name = make(c, index)
        c.create_payload_index(name, "year", "int")
        before = scroll_all(c, name, 10_000, with_vectors=True)
        snap = c.create_snapshot(name)
        listed = c.list_snapshots(name)
        c.delete(name, filter={"tag": "a"})
        c.set_payload(name, int_ids()[:5], {"changed": 1})
        c.upsert(name, [777_777], np.ones((1, DIM), np.float32))
        c.drop_payload_index(name, "year")
        changed = scroll_all(c, name, 10_000, with_vectors=True)
        c.restore_snapshot(name, snap.name)
        after = scroll_all(c, name, 10_000, with_vectors=True)
        info = c.get_collection(name)
        found = res(c.search(name, vectors()[:2], 3, filter={"year": {"$gte": 2000}}))
        c.delete_snapshot(name, snap.name)
        unknown = outcome(c, lambda c: c.restore_snapshot(name, snap.name))
        return {
            "snap": (type(snap), snap.collection, snap.bytes > 0, snap.seq > 0, snap.created > 0),
            "listed": [(type(s), s.name == snap.name, s.seq == snap.seq) for s in listed],
            "restored": after == before != changed,
            "after": after,
            "count": info.count,
            "search": found,
            "left": c.list_snapshots(name),
            "unknown": (unknown[0], unknown[2], unknown[3]),
        }

    got = same(trio, scenario)
    assert got["snap"] == (vecdb.SnapshotInfo, got["snap"][1], True, True, True)
    assert got["listed"] == [(vecdb.SnapshotInfo, True, True)]
    assert got["restored"] is True and got["count"] == N and got["left"] == []
    assert got["unknown"][0] is vecdb.NotFound


def test_restore_brings_back_the_payload_indexes(trio: Trio) -> None:
    """A restored collection has the payload indexes it had when the snapshot was taken."""

    def scenario(c: Any) -> Any:
        name = make(c, "flat")
        c.create_payload_index(name, "year", "int")
        snap = c.create_snapshot(name)
        c.restore_snapshot(name, snap.name)
        return c.get_collection(name).payload_indexes

    assert same(trio, scenario) == {"year": "int"}
