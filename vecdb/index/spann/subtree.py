"""Search of a SPANN index restricted to a slot set (a tenant's): the walk of its sub-tree.

Owns the restricted search path: the set's directory (`index.tenancy`: its leaves, i.e. the
postings holding its members' primary copies, with their radii) is taken from the cache under
the read lock (derived again if the tree changed), then each query ranks the set's leaves
best first by their centroids as the head graph holds them (squared centroid distance, minus
`tenant_boost` x the squared radius: Curator's variance boost; negative inner product for
"ip") and reads them in rounds of `tenant_round` postings through the same batched read and
numba scan as the global search, with the set as the scan's `visible` bitmap (replicas
deduped by the scan). A query stops
when it has its k results and (a) `tenant_patience` rounds in a row changed nothing in its
top-k (Curator v2's rule, per round), or (b) the next leaf is farther than `tenant_prune` x
the nearest leaf, or (c) no unread leaf can hold anything nearer than its k-th result (the
leaf's radius bounds its members: exact), or when (d) it read `tenant_postings` postings or
every leaf of the set. Every member is reachable through its primary leaf, so a set with
few leaves is answered exactly. A set holding more than `tenant_share` of the indexed points,
or spread thinly (fewer than `tenant_density` members per leaf) over more leaves than
`tenant_postings`, takes the global walk with the bitmap (`search.search`): there the walk
reads about as much for a worse recall (measured on GloVe-50, PARAMS.md). With a rerank
store (`rerank` != "none", `rerank_k` > 0) either walk gathers max(k, rerank_k) candidates
and `rerank` re-scores them exactly, as the unrestricted search does. Nothing here writes;
the write buffer is the engine's to merge.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import numpy.typing as npt

from vecdb.index.base import IndexResult, SearchStats, Visible
from vecdb.index.params import SearchParams
from vecdb.index.spann import rerank
from vecdb.index.spann import search as global_search
from vecdb.index.spann.state import SpannState
from vecdb.index.tenancy import SubTree, TenantParams
from vecdb.kernels.distance import pairwise

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def search_subset(
    st: SpannState,
    queries: F32,
    k: int,
    sp: SearchParams,
    tp: TenantParams,
    slots: I64,
    visible: Visible,
    key: Hashable | None,
) -> IndexResult:
    """Top-k of each query among `slots` (live ones; `visible` is the same set as a bitmap;
    `key` names the set for the directory cache, `visible` identifies its version; None:
    the directory is derived for this call and not cached). Parameters come parsed."""
    if st.store is not None and rerank.wanted(st, sp):  # the walk's candidates, re-ranked

        def inner(
            s: SpannState, q: F32, kk: int, p: SearchParams, v: Visible | None
        ) -> IndexResult:
            return search_subset(s, q, kk, p, tp, slots, visible, key)

        return rerank.search(st, queries, k, sp, visible, inner)
    nq = len(queries)
    share = len(slots) / max(1, st.n_live)
    if share > tp.tenant_share:
        return _global(st, queries, k, sp, visible)
    ids = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    stats = SearchStats(queries=nq)
    with st.lock.read():
        if nq == 0 or st.graph is None or st.live_heads == 0:
            return IndexResult(ids, out_d, stats)
        # Pass 1: the set's directory (cached; derived again after any tree change)
        sub = st.subtrees.get(key, visible, st.tree, slots)
        spread = sub.members < tp.tenant_density * len(sub.postings)
        if not (spread and len(sub.postings) > tp.tenant_postings):
            stats.extra["tenant_subtree"] = float(nq)
            stats.extra["tenant_leaves"] = float(nq * len(sub.postings))
            stats.extra["tenant_nodes"] = float(nq * sub.n_nodes)
            if len(sub.postings):
                # Pass 2: rank the set's leaves per query
                # the leaves' centroids as the graph holds them: the values their radii
                # bound distances to, so stop rule (c) stays exact
                cents = st.head_vectors(sub.postings)
                order, score, bound = rank_leaves(
                    st.metric, queries, cents, sub.radius, tp.tenant_boost, tp.tenant_postings
                )
                # Pass 3: read and scan them in rounds until each query's stop rule holds
                walk(st, queries, sub, order, score, bound, tp, visible, ids, out_d, stats)
            return IndexResult(ids, out_d, stats)
    # a set spread thinly over more leaves than the walk may read: the global walk
    return _global(st, queries, k, sp, visible)


def _global(
    st: SpannState, queries: F32, k: int, sp: SearchParams, visible: Visible
) -> IndexResult:
    res = global_search.search(st, queries, k, sp, visible)
    res.stats.extra["tenant_global"] = float(len(queries))
    return res


def rank_leaves(
    metric: str, queries: F32, c: F32, radius: F32, boost: float, m: int
) -> tuple[I64, F32, F32]:
    """Per query: the m best leaves (centroids `c`, radii `radius`) best first (a partial
    sort: the walk never reads more), their squared centroid distances (scores for "ip")
    in that order, and, in that order, a lower bound of the distance (in the metric's
    units) to any member of that leaf or of any leaf ranked after it, read or not (-inf
    where no bound is known: "ip")."""
    if metric == "ip":
        score = pairwise("ip", queries, c)
        order = _best(score, m)
        ranked = np.take_along_axis(score, order, 1).astype(np.float32)
        return order, ranked, np.full(ranked.shape, -np.inf, np.float32)
    d2 = pairwise("l2", queries, c)  # centroids are not unit vectors, even for "cosine"
    r = radius[None, :]
    score = d2 - boost * r * r if boost > 0 else d2
    order = _best(score, m)
    lower = np.maximum(np.sqrt(d2) - r, 0.0) ** 2  # squared L2 to the nearest possible member
    if metric == "cosine":  # unit vectors: 1 - cos = |q - x|^2 / 2
        lower = lower / 2.0
    head = np.take_along_axis(lower, order, 1)
    bound = np.minimum.accumulate(head[:, ::-1], axis=1)[:, ::-1]
    if order.shape[1] < lower.shape[1]:  # the unranked rest bounds every position too
        np.put_along_axis(lower, order, np.inf, 1)
        bound = np.minimum(bound, lower.min(axis=1, keepdims=True))
    ranked = np.take_along_axis(d2, order, 1)
    return order, ranked.astype(np.float32), bound.astype(np.float32)


def _best(score: F32, m: int) -> I64:
    """Column indexes of the m smallest scores of each row, ascending (ties inside the m by
    index; a tie across the cut may keep either)."""
    if m >= score.shape[1]:
        out: I64 = np.argsort(score, axis=1, kind="stable").astype(np.int64)
        return out
    part = np.argpartition(score, m - 1, axis=1)[:, :m]
    part.sort(axis=1)  # index order first, so the stable sort below breaks ties by index
    inner = np.argsort(np.take_along_axis(score, part, 1), axis=1, kind="stable")
    best: I64 = np.take_along_axis(part, inner, 1).astype(np.int64)
    return best


def walk(
    st: SpannState,
    queries: F32,
    sub: SubTree,
    order: I64,
    score: F32,
    bound: F32,
    tp: TenantParams,
    visible: Visible,
    ids: I64,
    out_d: F32,
    stats: SearchStats,
) -> None:
    """Pass 3: rounds of reads over the ranked leaves (see the module docstring for the
    stop rules); ids / out_d are filled in place."""
    n_leaves = order.shape[1]
    k = ids.shape[1]
    budget = min(n_leaves, tp.tenant_postings)
    want = min(k, sub.members)
    width = tp.tenant_round
    calm = np.zeros(len(queries), np.int64)  # rounds in a row without a change
    active = np.arange(len(queries))
    pos = 0
    rounds = 0
    ref = _prune_reference(st.metric, score)
    while len(active) and pos < n_leaves:
        step = min(width, n_leaves - pos) if pos else min(max(width, 2), n_leaves)
        take = order[active, pos : pos + step]
        sel = sub.postings[take].astype(np.int64)
        if pos + step > budget:  # the I/O budget cuts this round short
            sel[:, budget - pos :] = -1
        before = ids[active].copy()
        sub_ids, sub_d = ids[active], out_d[active]
        global_search.scan(st, queries[active], sel, visible.bits, True, sub_ids, sub_d, stats)
        ids[active], out_d[active] = sub_ids, sub_d
        rounds += len(active)
        pos += step
        if pos >= budget:
            break
        full = (sub_ids >= 0).sum(1) >= want
        moved = (sub_ids != before).any(1)
        calm[active] = np.where(moved, 0, calm[active] + 1)
        done = full & (calm[active] >= tp.tenant_patience)
        nxt = score[active, pos]
        if st.metric == "ip":
            far = (nxt - ref[active]) > (tp.tenant_prune - 1.0) * np.abs(ref[active])
        else:
            far = nxt > tp.tenant_prune * ref[active]
        proven = sub_d[:, -1] <= bound[active, pos]
        done |= full & (far | proven)
        active = active[~done]
    stats.extra["tenant_rounds"] = stats.extra.get("tenant_rounds", 0.0) + float(rounds)


def _prune_reference(metric: str, score: F32) -> F32:
    """Per query, the distance the prune ratio is measured from: the nearest leaf's (for a
    query sitting on a leaf centroid, the nearest at a positive distance)."""
    first = score[:, 0].astype(np.float32)
    if metric == "ip":
        out: F32 = first
        return out
    positive = np.where(score > 0, score, np.inf).min(axis=1)
    ref: F32 = np.where(first > 0, first, positive).astype(np.float32)
    return ref
