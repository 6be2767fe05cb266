"""Search with filters and with vectors gives the same answers embedded, remote and async
remote, on the default SPANN index (built) and on flat; every operator family, with and
without payload indexes, and the SPANN visible-set path; flat equals the brute-force oracle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import oracles
import pytest
from api_modes import Trio
from day_one_data import (
    DIM,
    FILTERS,
    NAMES,
    N,
    int_ids,
    js,
    make,
    payload_of,
    res,
    same,
    vectors,
)

# -- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize("indexed", [False, True], ids=["scan", "pindex"])
def test_filtered_search_agrees_for_every_operator_family(
    trio: Trio, index: str, indexed: bool
) -> None:
    """Filtered search with every operator family, with and without payload indexes on the
    fields: equal in every mode; the flat index equals the brute-force oracle."""
    queries = np.random.default_rng(3).standard_normal((3, DIM)).astype(np.float32)

    def scenario(c: Any) -> Any:
        name = make(c, index)
        if indexed:
            for key, kind in (("year", "int"), ("tag", "str"), ("meta.x", "int"),
                              ("flag", "bool"), ("score", "float")):  # fmt: skip
                c.create_payload_index(name, key, kind)
        return [res(c.search(name, queries, 7, filter=f, with_payload=True)) for f in FILTERS]

    answers = same(trio, scenario)
    data, ids, pays = vectors(), np.array(int_ids()), [payload_of(i) for i in range(N)]
    for f, (got_ids, got_dist, got_pays, _) in zip(FILTERS, answers, strict=True):
        keep = np.array([oracles.matches(p, f) for p in pays])
        for row in range(len(queries)):
            hits = [i for i in got_ids[row] if i >= 0]
            assert len(hits) == min(7, int(keep.sum())), f
            assert all(oracles.matches(pays[int_ids().index(i)], f) for i in hits), f
            assert got_pays[row][: len(hits)] == [js(pays[int_ids().index(i)]) for i in hits]
        if index == "flat":
            want = oracles.distances(data[keep], queries, "l2")
            dist = np.frombuffer(got_dist, np.float32).reshape(len(queries), 7)
            for row in range(len(queries)):
                oracles.assert_topk(got_ids[row], dist[row], ids[keep].tolist(), want[row], 7)


def test_search_with_vectors_returns_stored_vectors_padded_like_payloads(
    trio: Trio, index: str
) -> None:
    """with_vectors gives each hit's stored vector and None where a row is padded, aligned
    with the payloads; the same in every mode."""
    queries = np.random.default_rng(5).standard_normal((2, DIM)).astype(np.float32)
    flt = {"year": 1995}  # 8 points: k=12 pads every row

    def scenario(c: Any) -> Any:
        name = make(c, index)
        both = c.search(name, queries, 12, filter=flt, with_payload=True, with_vectors=True)
        plain = c.search(name, queries, 12, filter=flt)
        return res(both), res(plain)

    both, plain = same(trio, scenario)
    ids, _, pays, vecs = both
    assert plain[2] is None and plain[3] is None and plain[0] == ids
    data = vectors()
    for row in range(2):
        for col in range(12):
            if ids[row][col] < 0:
                assert vecs[row][col] is None and pays[row][col] == js(None)
            else:
                n = int_ids().index(ids[row][col])
                assert vecs[row][col] == data[n].tobytes()
                assert pays[row][col] == js(payload_of(n))
    assert any(i < 0 for i in ids[0])


def test_filtered_search_through_the_spann_visible_set_agrees(trio: Trio) -> None:
    """A payload-indexed filter selecting more points than an exact scan takes (5,000 of
    10,000 at 128 dims) walks the default SPANN index with a visible set: the same answer
    in every mode, every hit matching, recall@10 against the filtered oracle >= 0.9."""
    n, dim = 10_000, 128
    rng = np.random.default_rng(9)
    data = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((5, dim)).astype(np.float32)
    pays = [{"half": i % 2, "tenth": i % 10} for i in range(n)]
    filters_ = [{"half": 1}, {"$and": [{"half": 0}, {"tenth": {"$in": [0, 2, 4]}}]}]

    def scenario(c: Any) -> Any:
        name = f"v{next(NAMES) // 3}"
        c.create_collection(name, dim, "l2")
        for lo in range(0, n, 2500):
            c.upsert(name, list(range(lo, lo + 2500)), data[lo : lo + 2500], pays[lo : lo + 2500])
        c.optimize(name)
        c.create_payload_index(name, "half", "int")
        c.create_payload_index(name, "tenth", "int")
        out = [res(c.search(name, queries, 10, filter=f)) for f in filters_]
        return out, c.stats(name)["index"]["postings_read"] > 0  # the index was walked

    answers, walked = same(trio, scenario)
    assert walked
    for f, (ids, _, _, _) in zip(filters_, answers, strict=True):
        keep = np.flatnonzero([oracles.matches(p, f) for p in pays])
        want, _ = oracles.exact_topk(data[keep], queries, "l2", 10)
        hits = 0
        for row in range(len(queries)):
            assert all(oracles.matches(pays[i], f) for i in ids[row] if i >= 0)
            hits += len(set(ids[row]) & set(keep[want[row]].tolist()))
        assert hits / (10 * len(queries)) >= 0.9, f
