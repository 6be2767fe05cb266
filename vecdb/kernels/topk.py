"""Per-row top-k selection and merging of top-k lists.

This module owns the bounded max-heap that every exact and approximate search uses to keep
the k best candidates of a row: ``topk_rows`` selects from a dense distance matrix,
``merge_topk`` combines two sorted top lists, and, for ``scan``, ``select_block`` feeds one
block of BLAS dot products into running per-query heaps while ``select_direct`` computes the
distances of few-query scans itself. Order is always (distance, index) ascending, so equal
distances resolve to the smaller index; NaN distances never enter a heap. Results are padded
with index -1 and distance +inf. It does no I/O and holds no state. It must not import other
vecdb modules. (njit callers in other files pick up edits here: `jitcache` stamps every
kernel's cache with the whole package.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

# Index held by an empty heap slot. It sorts after every real row number, so a real
# candidate at +inf still displaces it; it becomes -1 on output.
_EMPTY = np.iinfo(np.int64).max
# Candidates screened per vectorised pre-check in the selection loops.
_CHUNK = 64
# Base rows per cache-resident chunk in the direct scan (256 x 128 floats = 128 KiB).
_DIRECT_ROWS = 256
# topk_rows goes parallel from this many distances.
_PARALLEL_MIN_ENTRIES = 1 << 20


@njit(cache=True, nogil=True, inline="always")
def _insert_sorted(ld, li, n, d, i):  # type: ignore[no-untyped-def]
    """Insert (d, i) into the ascending list ld / li of n entries, after every entry <= d;
    returns its position. No `break`: a loop with a second exit duplicates the inlined
    body's array reference releases on both paths, numba's reference-count pruning then
    keeps an atomic incref / decref pair per array per call (~35 ns a call on a 2026 Xeon
    VM, and contended between threads that share the arrays)."""
    p = n
    while p > 0 and ld[p - 1] > d:
        ld[p] = ld[p - 1]
        li[p] = li[p - 1]
        p -= 1
    ld[p] = d
    li[p] = i
    return p


@njit(cache=True, inline="always")
def _worse(da: float | np.float32, ia: int, db: float | np.float32, ib: int) -> bool:
    """True if candidate a ranks strictly after candidate b."""
    return bool(da > db or (da == db and ia > ib))


@njit(cache=True, inline="always")
def _replace_root(hd: np.ndarray, hi: np.ndarray, size: int, d: float | np.float32, i: int) -> None:
    """Put (d, i) at the root of the max-heap hd/hi[:size] and sift it down. One exit
    (`_insert_sorted` says why)."""
    pos = 0
    c = 1
    while c < size:
        r = c + 1
        if r < size and _worse(hd[r], hi[r], hd[c], hi[c]):
            c = r
        if _worse(hd[c], hi[c], d, i):
            hd[pos] = hd[c]
            hi[pos] = hi[c]
            pos = c
            c = 2 * pos + 1
        else:
            c = size  # (d, i) belongs at pos
    hd[pos] = d
    hi[pos] = i


@njit(cache=True, inline="always")
def _heap_to_sorted(hd: np.ndarray, hi: np.ndarray, empty: int) -> None:
    """Heap-sort a full max-heap in place into ascending order; empty slots become -1."""
    k = hd.shape[0]
    for end in range(k - 1, 0, -1):
        d = hd[end]
        i = hi[end]
        hd[end] = hd[0]
        hi[end] = hi[0]
        _replace_root(hd, hi, end, d, i)
    for t in range(k):
        if hi[t] == empty:
            hi[t] = -1


@njit(cache=True, inline="always")
def _topk_row(row: np.ndarray, rd: np.ndarray, ri: np.ndarray, empty: int) -> None:
    k = rd.shape[0]
    for c0 in range(0, row.shape[0], _CHUNK):
        # Vectorised pre-check over a slice view, as in _select_block.
        rc = row[c0 : c0 + _CHUNK]
        worst = rd[0]
        hits = np.int32(0)
        for j in range(rc.shape[0]):
            hits += np.int32(rc[j] <= worst)
        if hits == 0:
            continue
        for j in range(rc.shape[0]):
            d = rc[j]
            if d < rd[0] or (d == rd[0] and c0 + j < ri[0]):
                _replace_root(rd, ri, k, d, c0 + j)
    _heap_to_sorted(rd, ri, empty)


# Serial for small inputs: waking numba's thread pool costs ~150 us on a busy host.
@njit(cache=True, nogil=True)
def _topk_rows_serial(dist: np.ndarray, hd: np.ndarray, hi: np.ndarray, empty: int) -> None:
    for q in range(dist.shape[0]):
        _topk_row(dist[q], hd[q], hi[q], empty)


@njit(cache=True, parallel=True)
def _topk_rows_parallel(dist: np.ndarray, hd: np.ndarray, hi: np.ndarray, empty: int) -> None:
    for q in prange(dist.shape[0]):
        _topk_row(dist[q], hd[q], hi[q], empty)


# Serial and GIL-free: ``scan`` runs one call per worker thread over disjoint base ranges.
@njit(cache=True, nogil=True)
def _select_block(
    dots: np.ndarray,
    bias: np.ndarray,
    scale: float,
    valid: np.ndarray,
    use_valid: bool,
    offset: int,
    hd: np.ndarray,
    hi: np.ndarray,
) -> None:
    nq, b = dots.shape
    k = hd.shape[1]
    s = np.float32(scale)
    for q in range(nq):
        row = dots[q]
        rd = hd[q]
        ri = hi[q]
        for c0 in range(0, b, _CHUNK):
            # Almost every chunk holds nothing that beats the k-th best. Counting candidates
            # at or under it is a branch-free loop LLVM vectorises (8x faster than the plain
            # loop, measured), but only over slice views: computed indices keep numba's
            # wraparound checks and block it. Only chunks with hits go to the heap.
            rc = row[c0 : c0 + _CHUNK]
            bc = bias[c0 : c0 + _CHUNK]
            worst = rd[0]
            hits = np.int32(0)
            for j in range(rc.shape[0]):
                hits += np.int32(bc[j] - s * rc[j] <= worst)
            if hits == 0:
                continue
            for j in range(rc.shape[0]):
                if use_valid and not valid[c0 + j]:
                    continue
                d = bc[j] - s * rc[j]
                if d < rd[0] or (d == rd[0] and offset + c0 + j < ri[0]):
                    _replace_root(rd, ri, k, d, offset + c0 + j)


# Vectorising the distance loops needs reassociation; comparisons are unaffected (no nnan).
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _select_direct(
    q: np.ndarray,
    x: np.ndarray,
    kind: int,
    valid: np.ndarray,
    use_valid: bool,
    offset: int,
    hd: np.ndarray,
    hi: np.ndarray,
) -> None:
    nq = q.shape[0]
    n, d = x.shape
    k = hd.shape[1]
    # Chunks of rows outer, queries inner: a few-query scan is bound by memory bandwidth, so
    # each chunk is read from memory once and served from cache to the other queries.
    for c0 in range(0, n, _DIRECT_ROWS):
        xc = x[c0 : c0 + _DIRECT_ROWS]
        vc = valid[c0 : c0 + _DIRECT_ROWS] if use_valid else valid
        base = offset + c0
        for i in range(nq):
            qi = q[i]
            rd = hd[i]
            ri = hi[i]
            for j in range(xc.shape[0]):
                if use_valid and not vc[j]:
                    continue
                xj = xc[j]
                s = np.float32(0.0)
                if kind == 0:
                    for t in range(d):
                        diff = qi[t] - xj[t]
                        s += diff * diff
                else:
                    for t in range(d):
                        s += qi[t] * xj[t]
                    s = -s if kind == 1 else np.float32(1.0) - s
                if s < rd[0] or (s == rd[0] and base + j < ri[0]):
                    _replace_root(rd, ri, k, s, base + j)


@njit(cache=True, nogil=True)
def _finish(hd: np.ndarray, hi: np.ndarray, empty: int) -> None:
    for q in range(hd.shape[0]):
        _heap_to_sorted(hd[q], hi[q], empty)


# Serial and GIL-free: linear work that is small next to what produced the lists, and
# searches call it per request, where a thread-pool wake-up would dominate.
@njit(cache=True, nogil=True)
def _merge(
    ia: np.ndarray,
    da: np.ndarray,
    ib: np.ndarray,
    db: np.ndarray,
    oi: np.ndarray,
    od: np.ndarray,
) -> None:
    nq, ka = ia.shape
    kb = ib.shape[1]
    k = oi.shape[1]
    # Ids already output go into a per-row open-addressing set (linear probing, load <= 1/2),
    # so the duplicate check is O(1) and merging stays linear even for k in the thousands.
    bits = 1
    while (1 << bits) < 2 * min(k, ka + kb):
        bits += 1
    shift = np.uint64(64 - bits)
    mask = (1 << bits) - 1
    golden = np.uint64(0x9E3779B97F4A7C15)
    seen = np.empty(1 << bits, dtype=np.int64)
    for q in range(nq):
        seen[:] = -1
        ra_i = ia[q]
        ra_d = da[q]
        rb_i = ib[q]
        rb_d = db[q]
        out_i = oi[q]
        out_d = od[q]
        a = 0
        b = 0
        m = 0
        while m < k:
            # Padding (id < 0) ends a list.
            a_live = a < ka and ra_i[a] >= 0
            b_live = b < kb and rb_i[b] >= 0
            if not a_live and not b_live:
                break
            if a_live and (not b_live or not _worse(ra_d[a], ra_i[a], rb_d[b], rb_i[b])):
                cid = ra_i[a]
                cd = ra_d[a]
                a += 1
            else:
                cid = rb_i[b]
                cd = rb_d[b]
                b += 1
            # Taken in ascending order, so the first copy of an id has its smaller distance.
            slot = np.int64((np.uint64(cid) * golden) >> shift)
            while seen[slot] >= 0 and seen[slot] != cid:
                slot = (slot + 1) & mask
            if seen[slot] == cid:
                continue
            seen[slot] = cid
            out_i[m] = cid
            out_d[m] = cd
            m += 1
        for t in range(m, k):
            out_i[t] = -1
            out_d[t] = np.inf


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def new_heaps(nq: int, k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Empty running top-k state for ``select_block``: (nq, k) distances and indices."""
    _check_k(k)
    hd = np.full((nq, k), np.inf, dtype=np.float32)
    hi = np.full((nq, k), _EMPTY, dtype=np.int64)
    return hd, hi


def select_block(
    dots: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    scale: float,
    valid: npt.NDArray[np.bool_] | None,
    offset: int,
    hd: npt.NDArray[np.float32],
    hi: npt.NDArray[np.int64],
) -> None:
    """Offer candidates ``bias[j] - scale * dots[q, j]`` (index ``offset + j``) to the heaps.

    ``dots`` is (nq, b), ``bias`` and ``valid`` are (b,); entries with ``valid[j]`` False are
    skipped. Indices must grow across calls for the smaller-index tie rule to hold.
    """
    if valid is None:
        _select_block(dots, bias, scale, np.ones(1, dtype=np.bool_), False, offset, hd, hi)
    else:
        _select_block(dots, bias, scale, valid, True, offset, hd, hi)


DIRECT_L2 = 0
DIRECT_NEG_DOT = 1
DIRECT_ONE_MINUS_DOT = 2


def select_direct(
    q: npt.NDArray[np.float32],
    x: npt.NDArray[np.float32],
    kind: int,
    valid: npt.NDArray[np.bool_] | None,
    offset: int,
    hd: npt.NDArray[np.float32],
    hi: npt.NDArray[np.int64],
) -> None:
    """Offer row j of ``x`` (index ``offset + j``) to the heaps, computing distances directly.

    ``kind`` is ``DIRECT_L2`` (squared L2), ``DIRECT_NEG_DOT`` or ``DIRECT_ONE_MINUS_DOT``.
    For few queries this beats a BLAS call plus ``select_block``: one pass over the rows,
    no score buffer, and l2 without cancellation. Releases the GIL.
    """
    if valid is None:
        _select_direct(q, x, kind, np.ones(1, dtype=np.bool_), False, offset, hd, hi)
    else:
        _select_direct(q, x, kind, valid, True, offset, hd, hi)


def finish_heaps(
    hd: npt.NDArray[np.float32], hi: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Sort running heaps in place into ascending rows padded with -1/+inf; return (ids, d)."""
    _finish(hd, hi, _EMPTY)
    return hi, hd


def topk_rows(
    dist: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Per row of ``dist`` (nq, n) the k smallest as (idx int64, d float32), both (nq, k).

    Ascending, ties by smaller index, NaN never selected, padded with -1/+inf when n < k.
    """
    _check_k(k)
    dist = np.ascontiguousarray(dist, dtype=np.float32)
    if dist.ndim != 2:
        raise ValueError(f"dist must be 2-D, got shape {dist.shape}")
    hd, hi = new_heaps(dist.shape[0], k)
    if dist.shape[0] > 1 and dist.size >= _PARALLEL_MIN_ENTRIES:
        _topk_rows_parallel(dist, hd, hi, _EMPTY)
    else:
        _topk_rows_serial(dist, hd, hi, _EMPTY)
    return hi, hd


def merge_topk(
    ids_a: npt.NDArray[np.int64],
    d_a: npt.NDArray[np.float32],
    ids_b: npt.NDArray[np.int64],
    d_b: npt.NDArray[np.float32],
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Merge two per-row ascending top lists (nq, ka) and (nq, kb) into (nq, k) (ids, d).

    Ids below 0 are padding. An id present in both lists is kept once, at its smaller
    distance. Output is ascending by (distance, id) and padded with -1/+inf. Cost is linear,
    O(nq * (ka + kb)).
    """
    _check_k(k)
    ia = np.ascontiguousarray(ids_a, dtype=np.int64)
    ib = np.ascontiguousarray(ids_b, dtype=np.int64)
    da = np.ascontiguousarray(d_a, dtype=np.float32)
    db = np.ascontiguousarray(d_b, dtype=np.float32)
    if ia.ndim != 2 or ia.shape != da.shape or ib.ndim != 2 or ib.shape != db.shape:
        raise ValueError(
            f"ids/distances shapes must match and be 2-D: a {ia.shape}/{da.shape}, "
            f"b {ib.shape}/{db.shape}"
        )
    if ia.shape[0] != ib.shape[0]:
        raise ValueError(f"row counts differ: {ia.shape[0]} vs {ib.shape[0]}")
    nq = ia.shape[0]
    oi = np.empty((nq, k), dtype=np.int64)
    od = np.empty((nq, k), dtype=np.float32)
    _merge(ia, da, ib, db, oi, od)
    return oi, od
