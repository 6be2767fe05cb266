"""Kernels of the compact head graph (`vecdb.index.spann.headgraph`): HNSW search and insert.

Pure functions on arrays (no I/O, no globals). The graph is hnswlib's: a level-0 adjacency
(`links` (cap, M0), `nlinks` counts), upper levels as rows of `up_links` (node v at level
l >= 1 is row `up_off[v] + l - 1`, counts in `up_cnt`), an entry node and its level. Vectors
are float16 bit patterns (uint16), widened in registers by `postscan._half`, or float32
(`_widen` is specialised on the array's type). Distances are
hnswlib's: squared L2 (`ip` false) or 1 - dot (`ip` true). The search is hnswlib's
`searchBaseLayerST` with deletions: deleted nodes route but are never returned. Insert is
hnswlib's `addPoint` at level 0 (the new node's neighbours chosen by the RNG heuristic from
an ef_construction beam, each neighbour's list re-pruned by the heuristic when full). All
kernels are nogil; `search_batch` runs queries [lo, hi), so callers spread chunks of a batch
over plain threads, each with its own scratch (the visit marks and the candidate heap; no
numba OpenMP pool: a process using GNU OpenMP may not fork, and the build and drain
children are forked).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from vecdb.kernels.postscan import _half

# Reassociation lets a distance loop vectorise (hnswlib's distances are SIMD); no flag
# that assumes finite values: the beams compare against +inf.
FAST = {"reassoc", "contract", "nsz"}


def _widen(x: object) -> float:
    """A stored component as float32: float16 bits (uint16) widened, float32 as it is."""
    raise NotImplementedError("numba only")


@overload(_widen, inline="always")
def _widen_impl(x):  # type: ignore[no-untyped-def]
    if isinstance(x, types.Integer):
        return lambda x: _half(x)
    return lambda x: np.float32(x)


@nb.njit(cache=True, nogil=True, inline="always", fastmath=FAST)
def _dist_q(vecs, v, q, ip):  # type: ignore[no-untyped-def]
    """hnswlib's distance of query q (float32) to node v."""
    s = np.float32(0.0)
    if ip:
        for j in range(q.shape[0]):
            s += _widen(vecs[v, j]) * q[j]
        return np.float32(1.0) - s
    for j in range(q.shape[0]):
        t = _widen(vecs[v, j]) - q[j]
        s += t * t
    return s


@nb.njit(cache=True, nogil=True, inline="always", fastmath=FAST)
def _dist_nodes(vecs, a, b, ip):  # type: ignore[no-untyped-def]
    s = np.float32(0.0)
    if ip:
        for j in range(vecs.shape[1]):
            s += _widen(vecs[a, j]) * _widen(vecs[b, j])
        return np.float32(1.0) - s
    for j in range(vecs.shape[1]):
        t = _widen(vecs[a, j]) - _widen(vecs[b, j])
        s += t * t
    return s


@nb.njit(cache=True, nogil=True, inline="always")
def _push(hd, hi, n, d, i, sign):  # type: ignore[no-untyped-def]
    """Push (d, i) on a binary heap of n items (max-heap of sign * d); returns n + 1.
    No `break` (nor in `_pop`): a loop with a second exit duplicates the inlined body's
    array reference releases on both paths, numba's reference-count pruning then keeps an
    atomic incref / decref pair per array per call (~35 ns a call on a 2026 Xeon VM, and
    contended between threads that share the arrays)."""
    k = n
    hd[k] = d
    hi[k] = i
    go = k > 0
    while go:
        p = (k - 1) >> 1
        if sign * hd[p] >= sign * hd[k]:
            go = False
        else:
            hd[p], hd[k] = hd[k], hd[p]
            hi[p], hi[k] = hi[k], hi[p]
            k = p
            go = k > 0
    return n + 1


@nb.njit(cache=True, nogil=True, inline="always")
def _pop(hd, hi, n, sign):  # type: ignore[no-untyped-def]
    """Drop the top of a heap of n items; returns n - 1."""
    n -= 1
    hd[0] = hd[n]
    hi[0] = hi[n]
    k = 0
    c = 1
    while c < n:
        if c + 1 < n and sign * hd[c + 1] > sign * hd[c]:
            c += 1
        if sign * hd[k] >= sign * hd[c]:
            c = n  # in place: stop
        else:
            hd[c], hd[k] = hd[k], hd[c]
            hi[c], hi[k] = hi[k], hi[c]
            k = c
            c = 2 * k + 1
    return n


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
def _beam(q, vecs, links, nlinks, deleted, start, startd, ef, ip, skip_deleted, seen, tag, rd, ri, cd, ci):  # type: ignore[no-untyped-def]  # fmt: skip
    """Level-0 beam from `start`: the ef nearest (non-deleted if `skip_deleted`) in the
    max-heap rd / ri; returns its size. `seen[v] == tag` marks visited nodes."""
    big = np.float32(np.inf)
    nr = 0
    nc = 0
    seen[start] = tag
    lower = big
    if not (skip_deleted and deleted[start]):
        nr = _push(rd, ri, nr, startd, start, 1.0)
        lower = startd
    nc = _push(cd, ci, nc, startd, start, -1.0)
    while nc > 0:
        d0 = cd[0]
        v = ci[0]
        if d0 > lower and nr == ef:
            break
        nc = _pop(cd, ci, nc, -1.0)
        for j in range(nlinks[v]):
            c = links[v, j]
            if seen[c] == tag:
                continue
            seen[c] = tag
            d = _dist_q(vecs, c, q, ip)
            if nr < ef or d < lower:
                nc = _push(cd, ci, nc, d, c, -1.0)
                if not (skip_deleted and deleted[c]):
                    nr = _push(rd, ri, nr, d, c, 1.0)
                    if nr > ef:
                        nr = _pop(rd, ri, nr, 1.0)
                    lower = rd[0]
    return nr


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
    (uint16, >= n), `mark` (int64[1], the last visit mark used on `seen`) and the candidate
    heap `cd` / `ci` (>= n + 1) are the caller's scratch, reused from call to call
    (`scratch`): made per call they cost one query ~0.4 ms at 450,000 heads (zeroing and
    faulting in ~3.6 MB), more than the search."""
    ef = max(ef, k)
    rd = np.empty(ef + 1, np.float32)
    ri = np.empty(ef + 1, np.int32)
    for r in range(lo, hi):
        tag = _next_tag(seen, mark)
        q = queries[r]
        start, startd = _descend(q, vecs, up_off, up_links, up_cnt, entry, maxlevel, ip)
        nr = _beam(
            q, vecs, links, nlinks, deleted, start, startd, ef, ip, True, seen, tag, rd, ri, cd, ci
        )
        while nr > k:
            nr = _pop(rd, ri, nr, 1.0)
        for j in range(k - 1, -1, -1):
            if j >= nr:
                out_i[r, j] = -1
                out_d[r, j] = np.inf
            else:
                out_i[r, j] = ri[0]
                out_d[r, j] = rd[0]
                nr = _pop(rd, ri, nr, 1.0)
        # (entries were popped farthest first into the highest free column)


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
    q = np.empty(vecs.shape[1], np.float32)
    for j in range(vecs.shape[1]):
        q[j] = _widen(vecs[v, j])
    tag = _next_tag(seen, mark)
    seen[v] = tag
    rd = np.empty(efc + 1, np.float32)
    ri = np.empty(efc + 1, np.int64)
    start, startd = _descend(q, vecs, up_off, up_links, up_cnt, entry, maxlevel, ip)
    nr = _beam(
        q, vecs, links, nlinks, deleted, start, startd, efc, ip, False, seen, tag, rd, ri, cd, ci
    )
    sd = np.empty(nr, np.float32)
    si = np.empty(nr, np.int64)
    for j in range(nr - 1, -1, -1):  # nearest first
        sd[j] = rd[0]
        si[j] = ri[0]
        nr = _pop(rd, ri, nr, 1.0)
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
