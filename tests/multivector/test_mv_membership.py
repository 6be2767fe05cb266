"""A tenant's bitmap restricts a document search through `MembershipCache`: the same answer
as the uncached lookup, kept per (bitmap, view), recomputed for a new view (documents added),
and deletes (which change `alive` in place) still honoured. A small tenant's own cell lists
(`cell_lists`): the shared CSR restricted to its documents, kept per (bitmap, CSR), probed
instead of the shared lists, with documents added since the CSR was built still found."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import clustered_documents, clustered_queries

from vecdb.index.base import Visible
from vecdb.index.multivector import MultiVectorIndex
from vecdb.index.multivector.view import (
    CELL_LISTS_MAX_SHARE,
    MembershipCache,
    cell_lists,
    visible_mask,
)

# (the restricted pipeline's walks, on sets whose tokens the default would score exactly)
pytestmark = pytest.mark.usefixtures("pipeline_on_few_tokens")
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


def test_a_small_tenants_cell_lists_are_the_shared_lists_restricted_to_it() -> None:
    idx, _ = _trained(3000)
    v = idx._v
    cache = MembershipCache()
    vis = Visible.from_slots(np.arange(0, 3000, 7))  # 429 documents: 14 %
    assert cache.lists(vis, v) is None  # the first search of the pair: the shared lists
    lists = cache.lists(vis, v)  # the second makes them
    assert lists is not None and cache.lists(vis, v) is lists  # kept per (bitmap, CSR)
    member = vis.contains(v.slots)
    for c in range(len(v.indptr) - 1):
        shared = v.cell_docs[v.indptr[c] : v.indptr[c + 1]]
        np.testing.assert_array_equal(
            lists.cell_docs[lists.indptr[c] : lists.indptr[c + 1]], shared[member[shared]]
        )
        assert lists.used[c] == bool(member[shared].any())
    np.testing.assert_array_equal(cell_lists(v, member).indptr, lists.indptr)
    wide = Visible.from_slots(np.arange(0, 3000, 2))  # half the documents: shared lists
    assert CELL_LISTS_MAX_SHARE < 0.5 and cache.lists(wide, v) is cache.lists(wide, v) is None
    assert MembershipCache().lists(vis, MultiVectorIndex(DIM)._v) is None  # untrained


def test_a_tenant_search_walks_its_own_lists_and_finds_documents_added_since(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """A 4 % tenant's searches (its lists made on the second) read far fewer posting entries
    through its own lists than through the shared ones (nothing but its documents in them),
    answer within the set as well as the shared lists do, and a document added after the CSR was built (in the view's delta,
    in cells the tenant's lists may lack) is found."""
    import vecdb.index.multivector.view as view

    idx, docs = _trained(12_000)
    allowed = np.arange(0, 12_000, 25)  # 480 documents
    vis = Visible.from_slots(allowed)
    queries = clustered_queries(docs, 8, m=4, seed=46)
    got: dict[str, list[tuple[set[int], float]]] = {"own": [], "shared": []}
    for mode in got:
        with monkeypatch.context() as patch:
            if mode == "shared":
                patch.setattr(view.MembershipCache, "lists", lambda self, vis, v: None)
            for q in queries:
                slots, _, stats = idx.search(q, 10, visible=vis)
                assert set(slots[slots >= 0].tolist()) <= set(allowed.tolist())
                got[mode].append((set(slots[0].tolist()), stats["bytes_read"]))
    want = [set(idx.exact(q, 10, visible=allowed)[0][0].tolist()) for q in queries]
    recall = {m: np.mean([len(g & w) / 10 for (g, _), w in zip(r, want, strict=True)])
              for m, r in got.items()}  # fmt: skip
    assert recall["own"] >= recall["shared"] - 0.05 and recall["own"] >= 0.8, recall
    assert np.mean([b for _, b in got["own"]]) < 0.8 * np.mean([b for _, b in got["shared"]])
    new = docs[3] + 0.0  # a copy of a document, added for the tenant under a new slot
    idx.add(np.array([20_000], np.int64), new, np.array([0, len(new)], np.int64))
    assert len(idx._v.delta_docs)  # in the delta, not the CSR
    vis2 = Visible.from_slots(np.append(allowed, 20_000))
    for _ in range(2):  # the shared lists, then the tenant's own (made on the second search)
        slots, _, _ = idx.search(new, 10, visible=vis2)
        assert 20_000 in slots[0].tolist()
    assert idx._members.lists(vis2, idx._v) is not None


def test_many_small_tenants_keep_their_lists_and_a_whole_taken_set_makes_none() -> None:
    """Ten 3 % tenants searched in turn all keep their lists (the cache is bounded by the
    CSR's size, not a count), and a set no larger than the centroid interaction keeps,
    taken whole without a probe, never makes any."""
    idx, docs = _trained(12_000)
    q = clustered_queries(docs, 1, m=4, seed=47)[0]
    tenants = [Visible.from_slots(np.arange(t, 12_000, 33)) for t in range(10)]  # 364 each
    few = Visible.from_slots(np.arange(0, 12_000, 40))  # 300: taken whole
    for _ in range(3):
        idx.search(q, 10, visible=few)
    assert len(idx._members._lists) == 0
    for _ in range(2):
        for vis in tenants:
            idx.search(q, 10, visible=vis, params={"ndocs": 256})  # 364 > 256: probed
    kept = [idx._members._lists.get((id(t), id(idx._v.cell_docs))) for t in tenants]
    assert all(k is not None and k[2] is not None for k in kept)
