"""Exact rerank of a short candidate list: distances from high-fidelity rows, then top-k.

Pure functions on arrays (no I/O). `rerank_topk` takes, per query, candidate slots and the
row (in a row matrix) that holds each one's vector, float16 bits (widened like the posting
scan: `postscan._half`) or float32; it computes the metric's "smaller is better"
distance in float32 (squared L2, -dot for "ip", 1 - dot for "cosine" on prepared vectors,
the scan's definitions; each row's sum reassociated, so it vectorises: 100 random float16
rows of 384-d from a 390,000-row matrix, one query, 57 -> 23 us; 50 rows 28 -> 8 us; 16
rows of 50-d 3.7 -> 3.3 us, old and new alternated, medians of 3,000) and keeps the k
smallest, ties broken by slot. Candidates of -1 are
padding and skipped; rows are padded with -1 / +inf. A candidate's row is asked for AHEAD
candidates before it is scored, so the rows' cache misses overlap (helper W's form for the
~100 rows a "bits" query re-ranks; against hinting all of a query's rows at once, alternated
on random rows of a 390,000-row float16 matrix, one query: 384-d 100 rows 22.3 -> 16.7 us,
50 rows 11.2 -> 9.4 us; 50-d 16 rows 3.5 -> 2.6 us).
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.borrow import borrow
from vecdb.kernels.groupscan import _fold
from vecdb.kernels.posting import METRIC_IP, METRIC_L2
from vecdb.kernels.postscan import _half
from vecdb.kernels.prefetch import _prefetch

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
AHEAD = 8  # candidate rows asked for before the one scored
# Reassociation and contraction let a row's sum vectorise (as the scan kernels'); no flag
# that assumes finite values.
FAST = {"reassoc", "contract", "nsz"}


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_row(rows, r, d, per_line):  # type: ignore[no-untyped-def]
    """Hint the cache lines of row r of a C-contiguous (n, d) matrix (`per_line` elements to
    a 64-byte line); no effect on results."""
    first = r * d
    for e in range(first, first + d, per_line):
        _prefetch(rows, e)  # type: ignore[call-arg]
    _prefetch(rows, first + d - 1)  # type: ignore[call-arg]


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_cand(cand, at, i, j, half, rows16, rows32, nrows, d):  # type: ignore[no-untyped-def]
    """Hint the row of query i's candidate j (none for padding)."""
    r = at[i, j]
    if cand[i, j] >= 0 and 0 <= r < nrows:
        if half:
            _prefetch_row(rows16, r, d, 32)
        else:
            _prefetch_row(rows32, r, d, 16)


@nb.njit(cache=True, nogil=True, fastmath=FAST)  # not numba-inlined: that drops its flags
def _row_dist(q, half, rows16, rows32, r, metric):  # type: ignore[no-untyped-def]
    """The metric's distance of q to row r, in float32 registers: float16 bits widened one
    by one (`_half`: F16C where the CPU has it), the sum reassociated so it vectorises."""
    a = np.float32(0.0)
    d = q.shape[0]
    if metric == METRIC_L2:
        if half:
            for t in range(d):
                diff = q[t] - _half(rows16[r, t])
                a += diff * diff
        else:
            for t in range(d):
                diff = q[t] - rows32[r, t]
                a += diff * diff
        return a
    if half:
        for t in range(d):
            a += q[t] * _half(rows16[r, t])
    else:
        for t in range(d):
            a += q[t] * rows32[r, t]
    return -a if metric == METRIC_IP else np.float32(1.0) - a


@nb.njit(cache=True, nogil=True)
def rerank_topk(queries, cand, at, half, rows16, rows32, metric, keys, stop, out_ids, out_d):  # type: ignore[no-untyped-def]
    """queries (nq, d); cand / at (nq, c): slot and row index of each candidate (-1, or a
    row past the matrix: none); rows16 (r, d) uint16 float16 bits when `half`, else rows32
    (r, d) float32; writes the k nearest (k = out_ids.shape[1]) into out_ids / out_d and
    returns the number of rows scored. With `stop`, keys (nq, c) are lower bounds of the
    candidates' distances, ascending along each row (a "bits" scan's with eps > 0): a
    query's rerank ends at the first candidate whose bound exceeds its k-th exact distance
    so far (none after it can enter)."""
    # per candidate the helpers take these arrays: borrowed, no atomic reference each time
    queries, cand, at, keys = borrow(queries), borrow(cand), borrow(at), borrow(keys)
    rows16, rows32, out_ids, out_d = borrow(rows16), borrow(rows32), borrow(out_ids), borrow(out_d)
    nq, c = cand.shape
    d = queries.shape[1]
    nrows = rows16.shape[0] if half else rows32.shape[0]
    scored = 0
    for i in range(nq):
        ids = out_ids[i]
        ds = out_d[i]
        ids[:] = -1
        ds[:] = np.inf
        q = queries[i]
        # rows are random reads: AHEAD of them asked for before the one scored, so their
        # cache misses overlap (all of a query's at once overflowed the CPU's miss queue)
        for j in range(min(c, AHEAD)):
            _prefetch_cand(cand, at, i, j, half, rows16, rows32, nrows, d)
        for j in range(c):
            if j + AHEAD < c:
                _prefetch_cand(cand, at, i, j + AHEAD, half, rows16, rows32, nrows, d)
            if stop and keys[i, j] > ds[ds.shape[0] - 1]:
                break
            s = cand[i, j]
            r = at[i, j]
            if s < 0 or r < 0 or r >= nrows:
                continue
            scored += 1
            _fold(ids, ds, s, _row_dist(q, half, rows16, rows32, r, metric))  # (distance, slot)
    return scored


@nb.njit(cache=True, nogil=True)
def rows_at(cand, row_of):  # type: ignore[no-untyped-def]
    """The store row of each candidate slot of cand (nq, c): cand itself when row_of is
    empty (rows in slot order; a store in head order has an empty map only while it has no
    slot, so no candidate), else row_of[slot] (-1 for -1 and for a slot past the map)."""
    if row_of.shape[0] == 0:
        return cand
    out = np.empty_like(cand)
    for i in range(cand.shape[0]):
        for j in range(cand.shape[1]):
            s = cand[i, j]
            out[i, j] = row_of[s] if 0 <= s < row_of.shape[0] else -1
    return out


_NO_KEYS = np.zeros((0, 0), np.float32)  # (`rerank_topk` without `stop` never reads keys)


@functools.lru_cache(maxsize=64)
def _empty(dim: int) -> tuple[npt.NDArray[np.uint16], F32]:
    """The unused row matrix of the other format (never written)."""
    return np.zeros((0, dim), np.uint16), np.zeros((0, dim), np.float32)


def exact_topk(
    queries: F32,
    cand: I64,
    at: I64,
    rows: npt.NDArray[np.uint16] | F32,
    metric: int,
    k: int,
    keys: F32 | None = None,
) -> tuple[I64, F32, int]:
    """numpy-facing `rerank_topk`: (ids, distances) of shape (nq, k), rows scored; with
    `keys` (lower bounds, ascending), each query stops at the first bound past its k-th."""
    nq = len(queries)
    ids = np.empty((nq, k), np.int64)  # (the kernel pads every row with -1 / +inf)
    out_d = np.empty((nq, k), np.float32)
    half = rows.dtype == np.uint16
    empty16, empty32 = _empty(queries.shape[1])
    r16 = rows if half else empty16
    r32 = empty32 if half else rows
    stop = keys is not None
    kk = keys if keys is not None else _NO_KEYS
    scored = rerank_topk(queries, cand, at, half, r16, r32, metric, kk, stop, ids, out_d)
    return ids, out_d, int(scored)
