"""A tenant's bitmap restricts a document search through `MembershipCache`: the same answer
as the uncached lookup, kept per (bitmap, view), recomputed for a new view (documents added),
and deletes (which change `alive` in place) still honoured."""

from __future__ import annotations

import numpy as np
from oracles import clustered_documents, clustered_queries

from vecdb.index.base import Visible
from vecdb.index.multivector import MultiVectorIndex
from vecdb.index.multivector.view import MembershipCache, visible_mask

DIM = 16
DOCS = clustered_documents(120, DIM, seed=41, tokens=(3, 9))
QUERIES = clustered_queries(DOCS, 4, m=4, seed=42)


def _add(idx: MultiVectorIndex, lo: int, hi: int) -> None:
    docs = DOCS[lo:hi]
    offs = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    idx.add(np.arange(lo, hi, dtype=np.int64) * 10, np.concatenate(docs), offs)  # slots 0, 10..


def test_the_cache_answers_as_the_lookup_and_follows_views_and_deletes() -> None:
    idx = MultiVectorIndex(DIM, params={"K": 16})
    _add(idx, 0, 80)
    vis = Visible.from_slots(np.arange(0, 1200, 30))  # every third document's slot
    cache = MembershipCache()
    v = idx._v
    first = cache.member(vis, v.slots)
    np.testing.assert_array_equal(first, vis.contains(v.slots))
    assert cache.member(vis, v.slots) is first  # kept for the pair
    other = Visible.from_slots(np.arange(0, 1200, 20))
    assert cache.member(other, v.slots) is not first  # another bitmap: its own lookup
    _add(idx, 80, 120)  # a new view, with more documents
    mask = cache.member(vis, idx._v.slots)
    assert len(mask) == 120 and mask.sum() == 40
    idx.remove([30, 60])  # in place on the view's alive
    live = visible_mask(idx._v, vis, cache)
    np.testing.assert_array_equal(live, visible_mask(idx._v, np.arange(0, 1200, 30)))
    assert live.sum() == 38


def test_a_mask_over_slots_restricts_as_the_slots_it_holds() -> None:
    """A filter's matches come as a boolean mask over slots: the same documents as the list
    of those slots, and a slot past the mask's end (written after the filter ran) is out."""
    idx = MultiVectorIndex(DIM, params={"K": 16})
    _add(idx, 0, 120)  # slots 0, 10, ..., 1190
    mask = np.zeros(600, np.bool_)  # covers slots below 600 only
    mask[[0, 30, 590, 599]] = True
    got = visible_mask(idx._v, mask)
    np.testing.assert_array_equal(got, visible_mask(idx._v, np.flatnonzero(mask)))
    assert idx._v.slots[got].tolist() == [0, 30, 590]


def test_a_restricted_search_reads_the_cache_and_answers_within_the_set() -> None:
    idx = MultiVectorIndex(DIM, params={"K": 16})
    _add(idx, 0, 120)
    vis = Visible.from_slots(np.arange(0, 1200, 20))  # 60 documents
    for _ in range(2):  # the second search's membership comes from the cache
        slots, _, stats = idx.search(QUERIES, 10, visible=vis)
        assert set(slots[slots >= 0].tolist()) <= set(range(0, 1200, 20))
        want, _ = idx.exact(QUERIES, 10, visible=np.arange(0, 1200, 20))
        np.testing.assert_array_equal(np.sort(slots, axis=1), np.sort(want, axis=1))
    assert len(idx._members._hits) == 1


def _trained(n: int) -> tuple[MultiVectorIndex, list[np.ndarray]]:
    docs = clustered_documents(n, DIM, seed=43, tokens=(3, 9))
    idx = MultiVectorIndex(DIM, params={"K": 256})
    offs = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    idx.build(np.arange(n, dtype=np.int64), np.concatenate(docs), offs)
    return idx, docs


def _counting(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The nprobe of every probe pass from now on."""
    import vecdb.index.multivector.search as search

    passes: list[int] = []
    real = search.probe_token_cells

    def counted(*args):  # type: ignore[no-untyped-def]
        passes.append(args[2])
        return real(*args)

    monkeypatch.setattr(search, "probe_token_cells", counted)
    return passes


def test_a_narrow_restriction_widens_the_probe_until_enough_candidates(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A trained index searched within a few percent of its documents (more than the
    centroid interaction keeps): each widening of the probe at least doubles the cells
    (more, where the candidates found say so), it stops once enough candidates are found,
    and the answer stays within the set."""
    idx, docs = _trained(12_000)
    allowed = np.arange(0, 12_000, 25)  # 480 documents: 4 %
    passes = _counting(monkeypatch)
    for q in clustered_queries(docs, 6, m=4, seed=44):
        passes.clear()
        slots, _, stats = idx.search(q, 10, visible=allowed)
        assert stats["exact"] == 0.0 and set(slots[slots >= 0].tolist()) <= set(allowed.tolist())
        assert passes and all(b >= 2 * a for a, b in zip(passes, passes[1:], strict=False))
        assert stats["nprobe"] == passes[-1] and stats["candidates"] >= 96, (passes, stats)


def test_a_set_no_larger_than_the_interaction_keeps_is_not_probed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A restricted set of at most ndocs documents (384 for k <= 10) is taken whole as the
    candidates: no probe pass, every one scored by the centroid interaction, the answer
    within the set and at least as good as with a probe."""
    idx, docs = _trained(3000)
    allowed = np.arange(0, 3000, 10)  # 300 documents
    passes = _counting(monkeypatch)
    for q in clustered_queries(docs, 6, m=4, seed=45):
        slots, _, stats = idx.search(q, 10, visible=allowed)
        assert passes == [] and stats["nprobe"] == 0.0 and stats["candidates"] == 300
        assert stats["exact"] == 0.0 and set(slots[slots >= 0].tolist()) <= set(allowed.tolist())
        want, _ = idx.exact(q, 10, visible=allowed)
        assert len(set(slots[0].tolist()) & set(want[0].tolist())) >= 8
