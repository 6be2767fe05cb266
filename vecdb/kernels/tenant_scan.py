"""Kernels of a tenant's clustered copy: nearest clusters, then an exact scan of their blocks.

A clustered copy (`engine.tenant_clusters`) keeps a tenant's vectors grouped by cluster in
contiguous row blocks (`offsets[c]:offsets[c + 1]`), a vector appearing in up to a few
clusters (replicas). `search_blocks` answers queries in one call: per query the `probes`
nearest centroids (squared L2 to the centroid; largest dot product for "ip"), then every row
of those blocks whose slot is in the bitmap `bits` (empty: no filter) is scored and kept in a
sorted top-k that ignores a slot already held (replicas score the same). Distances as
`distance.pairwise`: "l2" squared, "ip" negative dot, "cosine" 1 - dot (rows and queries
prepared, i.e. unit length). `nearest_centroids` gives the few nearest centroids of many rows
for the copy's build. `copy_topk` answers a small tenant's contiguous copy (`engine.tenant_store`)
in one call: the exact scan of `kernels.scan.exact_topk`'s direct path (the same compiled
distance loop and heaps, so the same answers), the heaps sorted and rows mapped to slots in the
same call (a query of a few hundred rows was mostly per-call overhead). Pure functions, no I/O;
the float32 dot product is `kernels.replicas`'.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.distance import MIN_WORK_PER_THREAD
from vecdb.kernels.groupscan import _fold
from vecdb.kernels.replicas import _dot
from vecdb.kernels.scan import _MIN_BLAS_QUERIES
from vecdb.kernels.topk import _EMPTY, _heap_to_sorted, _insert_sorted, _select_direct

KIND_L2, KIND_NEG_DOT, KIND_ONE_MINUS_DOT = 0, 1, 2
KINDS = {"l2": KIND_L2, "ip": KIND_NEG_DOT, "cosine": KIND_ONE_MINUS_DOT}
CHUNK_ROWS = 4096  # rows per distance block in `nearest_centroids`
# `copy_topk` answers what `exact_topk` scans in one direct pass on the calling thread: fewer
# queries than its BLAS cut (`scan._MIN_BLAS_QUERIES`) and less work than one thread's share.
FUSED_MAX_QUERIES = _MIN_BLAS_QUERIES - 1
FUSED_MAX_WORK = MIN_WORK_PER_THREAD  # multiply-adds (queries x rows x dim)

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@nb.njit(cache=True, fastmath=True, nogil=True)
def _search(q, cents, cnorms, probes, vecs, slots, offsets, bits, kind, ids, dist):  # type: ignore[no-untyped-def]
    nq = q.shape[0]
    nc = cents.shape[0]
    m = min(probes, nc)
    k = ids.shape[1]
    nbits = bits.shape[0] * 8
    best = np.empty(m, np.int64)
    bscore = np.empty(m, np.float32)
    for i in range(nq):
        x = q[i]
        # the m nearest centroids (insertion into a sorted list: m is small)
        filled = 0
        for c in range(nc):
            dq = _dot(x, cents[c])
            s = -dq if kind == KIND_NEG_DOT else cnorms[c] - np.float32(2.0) * dq
            if filled == m and s >= bscore[m - 1]:
                continue
            j = filled if filled < m else m - 1
            if filled < m:
                filled += 1
            _insert_sorted(bscore, best, j, s, c)
        qn = _dot(x, x)
        for j in range(filled):
            c = best[j]
            for r in range(offsets[c], offsets[c + 1]):
                slot = slots[r]
                if nbits > 0 and (slot >= nbits or (bits[slot >> 3] >> (slot & 7)) & 1 == 0):
                    continue
                dq = _dot(x, vecs[r])
                if kind == KIND_L2:
                    dd = max(qn + _dot(vecs[r], vecs[r]) - np.float32(2.0) * dq, np.float32(0.0))
                elif kind == KIND_NEG_DOT:
                    dd = -dq
                else:
                    dd = np.float32(1.0) - dq
                if dd <= dist[i, k - 1]:
                    _fold(ids[i], dist[i], slot, dd)


def search_blocks(
    q: F32,
    cents: F32,
    cnorms: F32,
    probes: int,
    vecs: F32,
    slots: I64,
    offsets: I64,
    bits: npt.NDArray[np.uint8],
    kind: int,
    k: int,
) -> tuple[I64, F32]:
    """Top-k slots (nq, k) and distances of each query over the rows of its `probes`
    nearest clusters, rows filtered by `bits` (length 0: none); padded with -1 / +inf."""
    nq = q.shape[0]
    ids = np.full((nq, k), -1, np.int64)
    dist = np.full((nq, k), np.inf, np.float32)
    if nq and len(cents) and probes > 0:
        _search(q, cents, cnorms, probes, vecs, slots, offsets, bits, kind, ids, dist)
    return ids, dist


def nearest_centroids(x: F32, cents: F32, m: int) -> tuple[I64, F32]:
    """Per row of x, the m nearest centroids (ascending squared L2) and those distances."""
    n = len(x)
    m = min(m, len(cents))
    out = np.empty((n, m), np.int64)
    out_d = np.empty((n, m), np.float32)
    cn = (cents * cents).sum(1)
    for lo in range(0, n, CHUNK_ROWS):
        xs = x[lo : lo + CHUNK_ROWS]
        d = cn[None, :] - 2.0 * (xs @ cents.T) + (xs * xs).sum(1)[:, None]
        part = np.argpartition(d, m - 1, axis=1)[:, :m] if m < d.shape[1] else np.argsort(d, 1)
        pd = np.take_along_axis(d, part, 1)
        order = np.argsort(pd, axis=1, kind="stable")
        out[lo : lo + len(xs)] = np.take_along_axis(part, order, 1)
        out_d[lo : lo + len(xs)] = np.maximum(np.take_along_axis(pd, order, 1), 0.0)
    return out, out_d


@nb.njit(cache=True, nogil=True)
def _copy_topk(q, x, kind, found, k):  # type: ignore[no-untyped-def]
    nq = q.shape[0]
    hd = np.full((nq, k), np.inf, np.float32)
    hi = np.full((nq, k), _EMPTY, np.int64)
    if x.shape[0] > 0:
        _select_direct(q, x, kind, np.ones(1, np.bool_), False, 0, hd, hi)
    out = np.empty((nq, k), np.int64)
    for i in range(nq):
        _heap_to_sorted(hd[i], hi[i], _EMPTY)
        for j in range(k):
            r = hi[i, j]
            out[i, j] = found[r] if r >= 0 else -1
    return out, hd


def fused_fits(nq: int, n: int, dim: int) -> bool:
    """Whether `copy_topk` answers `nq` queries over `n` rows (else `exact_topk`, planned)."""
    return nq <= FUSED_MAX_QUERIES and nq * n * dim < FUSED_MAX_WORK


def copy_topk(q: F32, base: F32, kind: int, found: I64, k: int) -> tuple[I64, F32]:
    """Exact top-k of the queries `q` over the rows of `base` (prepared, float32, C order)
    as `found[row]` (the rows' slots) and distances, both (nq, k), ascending by (distance,
    row), padded with -1 / +inf: `exact_topk(q, base, metric, k)` with its rows mapped
    through `found`, for sizes where `fused_fits`. `kind` is `KINDS[metric]`."""
    return _copy_topk(q, base, kind, found, k)  # type: ignore[no-any-return]
