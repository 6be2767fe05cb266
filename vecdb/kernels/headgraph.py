"""Kernels of the compact head graph (`vecdb.index.spann.headgraph`): HNSW search and insert.

Pure functions on arrays (no I/O, no globals). The graph is hnswlib's: a level-0 adjacency
(`links` (cap, M0), `nlinks` counts), upper levels as rows of `up_links` (node v at level
l >= 1 is row `up_off[v] + l - 1`, counts in `up_cnt`), an entry node and its level. Vectors
(`vecs`) are float16 bit patterns (uint16), widened in registers by `postscan._half`, or
float32, or int8 codes with a float32 scale per node, passed as the pair (codes (cap, dim),
scales (cap,)): node v's vector is scales[v] * codes[v] (`_matrix`, `_scale` and `_widen`
are specialised on the argument's type). Distances are
hnswlib's: squared L2 (`ip` false) or 1 - dot (`ip` true). The search is hnswlib's
`searchBaseLayerST` with deletions: deleted nodes route but are never returned. Insert is
hnswlib's `addPoint` at level 0 (the new node's neighbours chosen by the RNG heuristic from
an ef_construction beam, each neighbour's list re-pruned by the heuristic when full). All
kernels are nogil; `search_batch` runs queries [lo, hi), so callers spread chunks of a batch
over plain threads, each with its own scratch (the visit marks and the beam's list; no
numba OpenMP pool: a process using GNU OpenMP may not fork, and the build and drain
children are forked).
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from vecdb.kernels.postscan import _half
from vecdb.kernels.topk import _insert_sorted

# Reassociation lets a distance loop vectorise (hnswlib's distances are SIMD); no flag
# that assumes finite values: the beams compare against +inf.
FAST = {"reassoc", "contract", "nsz"}


def _widen(x: object) -> float:
    """A stored component as float32: float16 bits (uint16) widened, float32 as it is."""
    raise NotImplementedError("numba only")


@overload(_widen, inline="always")
def _widen_impl(x):  # type: ignore[no-untyped-def]
    if x == types.uint16:  # float16 bits
        return lambda x: _half(x)
    return lambda x: np.float32(x)


def _matrix(vecs: Any) -> Any:
    """The stored rows of `vecs`: the array itself, or an int8 pair's codes."""
    raise NotImplementedError("numba only")


@overload(_matrix, inline="always")
def _matrix_impl(vecs):  # type: ignore[no-untyped-def]
    if isinstance(vecs, types.BaseTuple):
        return lambda vecs: vecs[0]
    return lambda vecs: vecs


def _scale(vecs: Any, v: int) -> Any:
    """Node v's factor: an int8 pair's scale, 1 for float16 / float32 rows (folded away)."""
    raise NotImplementedError("numba only")


@overload(_scale, inline="always")
def _scale_impl(vecs, v):  # type: ignore[no-untyped-def]
    if isinstance(vecs, types.BaseTuple):
        return lambda vecs, v: vecs[1][v]
    return lambda vecs, v: np.float32(1.0)


@nb.njit(cache=True, nogil=True, inline="always", fastmath=FAST)
def _dist_q(vecs, v, q, ip):  # type: ignore[no-untyped-def]
    """hnswlib's distance of query q (float32) to node v."""
    rows = _matrix(vecs)
    f = _scale(vecs, v)
    s = np.float32(0.0)
    if ip:
        for j in range(q.shape[0]):
            s += _widen(rows[v, j]) * q[j]
        return np.float32(1.0) - f * s
    for j in range(q.shape[0]):
        t = f * _widen(rows[v, j]) - q[j]
        s += t * t
    return s


@nb.njit(cache=True, nogil=True, inline="always", fastmath=FAST)
def _dist_nodes(vecs, a, b, ip):  # type: ignore[no-untyped-def]
    rows = _matrix(vecs)
    fa, fb = _scale(vecs, a), _scale(vecs, b)
    s = np.float32(0.0)
    if ip:
        for j in range(rows.shape[1]):
            s += _widen(rows[a, j]) * _widen(rows[b, j])
        return np.float32(1.0) - fa * fb * s
    for j in range(rows.shape[1]):
        t = fa * _widen(rows[a, j]) - fb * _widen(rows[b, j])
        s += t * t
    return s


@nb.njit(cache=True, nogil=True, inline="always")
def _node(t):  # type: ignore[no-untyped-def]
    """The node of a beam list entry (an expanded one is stored as ~node)."""
    return t if t >= 0 else ~t


@nb.njit(cache=True, nogil=True, inline="always")
def _gone(t, deleted, skip_deleted):  # type: ignore[no-untyped-def]
    """Whether a beam list entry is not a result (a deleted node, when they are skipped)."""
    return skip_deleted and deleted[_node(t)]


@nb.njit(cache=True, nogil=True, fastmath=FAST)
def _descend(q, vecs, up_off, up_links, up_cnt, entry, maxlevel, ip):  # type: ignore[no-untyped-def]
    """Greedy descent from the entry through levels maxlevel..1: the level-0 start node."""
    cur = entry
    curd = _dist_q(vecs, cur, q, ip)
    for lev in range(maxlevel, 0, -1):
        changed = True
        while changed:
            changed = False
            row = up_off[cur] + lev - 1
            for j in range(up_cnt[row]):
                c = up_links[row, j]
                d = _dist_q(vecs, c, q, ip)
                if d < curd:
                    curd, cur, changed = d, c, True
    return cur, curd


@nb.njit(cache=True, nogil=True, fastmath=FAST)
def _beam(q, vecs, links, nlinks, deleted, start, startd, ef, ip, skip_deleted, seen, tag, ld, li):  # type: ignore[no-untyped-def]  # fmt: skip
    """Level-0 beam from `start`, hnswlib's `searchBaseLayerST`, kept as one list ascending
    by distance (ld / li, room for every node + 1): the ef nearest results found (nodes not
    deleted, if `skip_deleted`) and the deleted nodes nearer than the ef-th, which route
    but are no result. Returns the list's length; an expanded entry is stored as ~node.
    It expands the nearest entry not yet expanded until none is left: the nodes hnswlib's
    two heaps expand, in the same order (a candidate its min-heap holds past the ef-th
    result is farther than that result, so popping it ends hnswlib's search), for fewer
    and more predictable steps than two heaps' sifts (MiniLM-384's 4,389 heads, ef 64:
    41 -> 31 us a query; GloVe-50's 17,574: 33 -> 23 us). `seen[v] == tag` marks visited
    nodes."""
    seen[start] = tag
    ld[0] = startd
    li[0] = start
    nl = 1
    res = 0 if _gone(start, deleted, skip_deleted) else 1
    lower = startd if res == 1 else np.float32(np.inf)
    cur = 0
    while cur < nl:
        v = li[cur]
        li[cur] = ~v
        nxt = nl
        for j in range(nlinks[v]):
            c = links[v, j]
            if seen[c] == tag:
                continue
            seen[c] = tag
            d = _dist_q(vecs, c, q, ip)
            if res < ef or d < lower:
                at = _insert_sorted(ld, li, nl, d, c)
                nl += 1
                nxt = min(nxt, at)
                if not _gone(c, deleted, skip_deleted):
                    res += 1
                    if res > ef:  # the last result leaves, with the deleted entries after it
                        while _gone(li[nl - 1], deleted, skip_deleted):
                            nl -= 1
                        nl -= 1
                        res -= 1
                    if res == ef:  # the ef-th result bounds the list
                        e = nl - 1
                        while _gone(li[e], deleted, skip_deleted):
                            e -= 1
                        lower = ld[e]
                        nl = e + 1
        cur = min(cur, nxt)
        while cur < nl and li[cur] < 0:
            cur += 1
    return nl


@nb.njit(cache=True, nogil=True, inline="always")
def _next_tag(seen, mark):  # type: ignore[no-untyped-def]
    """A visit mark no node of `seen` holds: mark[0] + 1, or 1 after clearing `seen` when
    the uint16 marks run out (every 65,535 searches of one scratch)."""
    tag = mark[0] + 1
    if tag >= 65536:
        seen[:] = 0
        tag = 1
    mark[0] = tag
    return tag


@nb.njit(cache=True, nogil=True, fastmath=FAST)
def search_batch(queries, lo, hi, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, ef, k, ip, out_i, out_d, seen, mark, cd, ci):  # type: ignore[no-untyped-def]  # fmt: skip
    """Rows lo..hi-1 of out_i / out_d: each query's k nearest live nodes (internal ids,
    nearest first; -1 / inf where fewer are found) from a beam of max(ef, k). `seen`
    (uint16, >= n), `mark` (int64[1], the last visit mark used on `seen`) and the beam's
    list `cd` / `ci` (>= n + 1) are the caller's scratch, reused from call to call
    (`scratch`): made per call they cost one query ~0.4 ms at 450,000 heads (zeroing and
    faulting in ~3.6 MB), more than the search."""
    ef = max(ef, k)
    for r in range(lo, hi):
        tag = _next_tag(seen, mark)
        q = queries[r]
        start, startd = _descend(q, vecs, up_off, up_links, up_cnt, entry, maxlevel, ip)
        nl = _beam(q, vecs, links, nlinks, deleted, start, startd, ef, ip, True, seen, tag, cd, ci)
        j = 0
        e = 0
        while e < nl and j < k:  # the list's first k results
            t = _node(ci[e])
            if not deleted[t]:
                out_i[r, j] = t
                out_d[r, j] = cd[e]
                j += 1
            e += 1
        for jj in range(j, k):
            out_i[r, jj] = -1
            out_d[r, jj] = np.inf


@nb.njit(cache=True, nogil=True, fastmath=FAST)
def exact_rows(queries, rows, vecs, deleted, n, k, out_i, out_d, ip):  # type: ignore[no-untyped-def]
    """Rows `rows` of out_i / out_d: each query's k nearest live nodes over every node (the
    beam's distance, nearest first, ties by node id; -1 / inf past the live count). For the
    rows a beam left short: a live node the beam cannot reach from the entry point (the
    graph after splits and deletions) is still found."""
    dist = np.empty(n, np.float32)
    node = np.empty(n, np.int64)
    for r in rows:
        q = queries[r]
        c = 0
        for v in range(n):
            if not deleted[v]:
                dist[c] = _dist_q(vecs, v, q, ip)
                node[c] = v
                c += 1
        order = np.argsort(dist[:c], kind="mergesort")
        for j in range(k):
            if j < c:
                out_i[r, j] = node[order[j]]
                out_d[r, j] = dist[order[j]]
            else:
                out_i[r, j] = -1
                out_d[r, j] = np.inf


@nb.njit(cache=True, nogil=True, fastmath=FAST)
def _heuristic(vecs, cand_i, cand_d, nc, m, ip, out):  # type: ignore[no-untyped-def]
    """hnswlib's getNeighborsByHeuristic2: from candidates sorted nearest first (distances
    to the base point), keep one unless a kept one is nearer to it than the base point;
    at most m. Returns the count written to `out`."""
    kept = 0
    for a in range(nc):
        if kept >= m:
            break
        c = cand_i[a]
        good = True
        for b in range(kept):
            if _dist_nodes(vecs, out[b], c, ip) < cand_d[a]:
                good = False
                break
        if good:
            out[kept] = c
            kept += 1
    return kept


@nb.njit(cache=True, nogil=True, fastmath=FAST)
def insert(v, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, efc, m, ip, seen, mark, cd, ci):  # type: ignore[no-untyped-def]  # fmt: skip
    """Link node v (its vector stored, no links yet, v < n) into level 0 among nodes 0..n-1
    (deleted ones included, as hnswlib does while building); the scratch as `search_batch`'s."""
    m0 = links.shape[1]
    rows = _matrix(vecs)
    f = _scale(vecs, v)
    q = np.empty(rows.shape[1], np.float32)
    for j in range(rows.shape[1]):
        q[j] = f * _widen(rows[v, j])
    tag = _next_tag(seen, mark)
    seen[v] = tag
    start, startd = _descend(q, vecs, up_off, up_links, up_cnt, entry, maxlevel, ip)
    nr = _beam(q, vecs, links, nlinks, deleted, start, startd, efc, ip, False, seen, tag, cd, ci)
    sd = cd[:nr].copy()  # nearest first
    si = np.empty(nr, np.int64)
    for j in range(nr):
        si[j] = _node(ci[j])
    mine = np.empty(max(m, 1), np.int64)
    kept = _heuristic(vecs, si, sd, len(si), m, ip, mine)
    for j in range(kept):
        links[v, j] = mine[j]
    nlinks[v] = kept
    pool_i = np.empty(m0 + 1, np.int64)
    pool_d = np.empty(m0 + 1, np.float32)
    back = np.empty(m0, np.int64)
    for a in range(kept):
        u = mine[a]
        cnt = nlinks[u]
        if cnt < m0:
            links[u, cnt] = v
            nlinks[u] = cnt + 1
            continue
        for j in range(cnt):  # u's list is full: re-prune it with v among the candidates
            pool_i[j] = links[u, j]
            pool_d[j] = _dist_nodes(vecs, u, links[u, j], ip)
        pool_i[cnt] = v
        pool_d[cnt] = _dist_nodes(vecs, u, v, ip)
        order = np.argsort(pool_d[: cnt + 1])
        oi = pool_i[: cnt + 1][order]
        od = pool_d[: cnt + 1][order]
        got = _heuristic(vecs, oi, od, cnt + 1, m0, ip, back)
        for j in range(got):
            links[u, j] = back[j]
        nlinks[u] = got
