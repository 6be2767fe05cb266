"""Exact (brute-force) top-k search over a dense float32 matrix.

This module owns ``exact_topk``, the exact baseline and recall oracle of the database. It
walks the base matrix in tiles: one single-threaded BLAS product per tile gives all
query-row dot products, and the GIL-free numba heaps of ``topk.select_block`` keep a running
top-k per query, so memory stays at one (nq, tile) buffer per worker. Fewer than ten queries
skip BLAS for one fused numba pass. Either way ``distance.parallel_ranges`` gives each of up
to ``numba.get_num_threads()`` threads a disjoint range of base rows, and their lists are
merged. For "l2" the BLAS path recomputes the final k distances directly, so no result
carries cancellation error. It only computes; it owns no data, does no I/O and imports
nothing from vecdb outside ``vecdb.kernels``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from vecdb.kernels.distance import MIN_WORK_PER_THREAD, check_metric, parallel_ranges, sq_norms
from vecdb.kernels.topk import (
    DIRECT_L2,
    DIRECT_NEG_DOT,
    DIRECT_ONE_MINUS_DOT,
    finish_heaps,
    merge_topk,
    new_heaps,
    select_block,
    select_direct,
)

DEFAULT_BLOCK_ROWS = 65536
MIN_BLOCK_ROWS = 1

# Target size of one (nq, tile) dot-product buffer. BLAS writes it and the selection reads it
# straight back, so a buffer near the L2 cache beats one huge block.
_TILE_BYTES = 1 << 21
_MIN_TILE = 256
# The fused numba loop beats BLAS plus a separate selection below this many queries or
# multiply-adds. Measured single-threaded at d = 50 and 128: direct/BLAS time is 0.4 at
# nq = 4, 0.8 at nq = 8, 1.2 at nq = 12-16, 2.2 at nq = 32.
_MIN_BLAS_QUERIES = 10
_MIN_BLAS_WORK = 1 << 20
_DIRECT_KIND = {"l2": DIRECT_L2, "ip": DIRECT_NEG_DOT, "cosine": DIRECT_ONE_MINUS_DOT}


def _tile_rows(nq: int, block_rows: int) -> int:
    tile = max(_MIN_TILE, _TILE_BYTES // (4 * max(nq, 1)))
    return max(MIN_BLOCK_ROWS, min(block_rows, tile))


def exact_topk(
    queries: npt.NDArray[np.float32],
    base: npt.NDArray[np.float32],
    metric: str,
    k: int,
    valid: npt.NDArray[np.bool_] | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact top-k rows of ``base`` for each query: (idx int64 (nq, k), d float32 (nq, k)).

    Distances follow ``distance.pairwise`` ("l2" squared, "ip" negative dot, "cosine"
    1 - dot). Rows whose ``valid`` entry is False are skipped. Rows are ascending by
    (distance, index); missing results are padded with -1/+inf. Each worker holds at most
    ``block_rows`` base rows' worth of (nq, rows) scores; workers number
    ``numba.get_num_threads()`` and BLAS is held to one thread while the scan runs.
    """
    check_metric(metric)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_rows < MIN_BLOCK_ROWS:
        raise ValueError(f"block_rows must be >= {MIN_BLOCK_ROWS}, got {block_rows}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = np.ascontiguousarray(base, dtype=np.float32)
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise ValueError(f"expected queries (nq, d) and base (n, d), got {q.shape} and {x.shape}")
    nq, d = q.shape
    n = x.shape[0]
    if valid is not None:
        valid = np.ascontiguousarray(valid, dtype=np.bool_)
        if valid.shape != (n,):
            raise ValueError(f"valid must have shape ({n},), got {valid.shape}")
    if nq == 0 or n == 0:
        return finish_heaps(*new_heaps(nq, k))

    # Few queries: BLAS would be a memory-bound gemv plus a separate selection pass, so one
    # fused numba pass (exact distances, no score buffer) is faster.
    direct = nq < _MIN_BLAS_QUERIES or nq * n * d < _MIN_BLAS_WORK
    if direct and nq * n * d < MIN_WORK_PER_THREAD:  # one slice on this thread, unplanned
        return _scan_range(q, x, metric, k, valid, 0, n, 0, True)
    tile = _tile_rows(nq, block_rows)

    def run(lo: int, hi: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        return _scan_range(q, x, metric, k, valid, lo, hi, tile, direct)

    parts = parallel_ranges(n, nq * n * d, run, blas=not direct)
    ids, dist = parts[0]
    for more_ids, more_dist in parts[1:]:
        ids, dist = merge_topk(ids, dist, more_ids, more_dist, k)
    if direct:
        return ids, dist
    if metric == "l2":
        _rescore_l2(q, x, ids, dist)
    elif metric == "cosine":
        dist += np.float32(1.0)
    return ids, dist


def _scan_range(
    q: npt.NDArray[np.float32],
    x: npt.NDArray[np.float32],
    metric: str,
    k: int,
    valid: npt.NDArray[np.bool_] | None,
    lo: int,
    hi: int,
    tile: int,
    direct: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Sorted top-k over base rows [lo, hi), on the calling thread.

    Direct scans give final distances. BLAS scans give the key ``bias[j] - scale * q.x``:
    for "l2" ``||x||^2 - 2 q.x`` (``||q||^2`` is constant per query and comes back with the
    rescoring), otherwise ``-q.x`` ("cosine" adds 1 afterwards).
    """
    nq = q.shape[0]
    hd, hi_ = new_heaps(nq, k)
    if direct:
        vr = None if valid is None else valid[lo:hi]
        select_direct(q, x[lo:hi], _DIRECT_KIND[metric], vr, lo, hd, hi_)
        return finish_heaps(hd, hi_)
    scale = 2.0 if metric == "l2" else 1.0
    width = min(tile, hi - lo)
    buf = np.empty(nq * width, dtype=np.float32)
    zeros = np.zeros(width, dtype=np.float32)
    for start in range(lo, hi, tile):
        stop = min(start + tile, hi)
        rows = stop - start
        vb = None if valid is None else valid[start:stop]
        if vb is not None and not vb.any():
            continue
        xb = x[start:stop]
        dots = buf[: nq * rows].reshape(nq, rows)
        np.matmul(q, xb.T, out=dots)
        bias = sq_norms(xb) if metric == "l2" else zeros[:rows]
        select_block(dots, bias, scale, vb, start, hd, hi_)
    return finish_heaps(hd, hi_)


@njit(cache=True, nogil=True)
def _rescore_l2(q: np.ndarray, x: np.ndarray, ids: np.ndarray, dist: np.ndarray) -> None:
    """Replace selected l2 keys by directly computed distances and re-sort each row.

    Rows come in nearly sorted (keys differ from exact distances only by rounding), so an
    insertion sort by (distance, id) is linear in practice.
    """
    nq, k = ids.shape
    d = q.shape[1]
    for i in range(nq):
        qi = q[i]
        ri = ids[i]
        rd = dist[i]
        live = 0
        while live < k and ri[live] >= 0:
            xj = x[ri[live]]
            s = np.float32(0.0)
            for t in range(d):
                diff = qi[t] - xj[t]
                s += diff * diff
            rd[live] = s
            live += 1
        for a in range(1, live):
            cd = rd[a]
            ci = ri[a]
            b = a - 1
            while b >= 0 and (rd[b] > cd or (rd[b] == cd and ri[b] > ci)):
                rd[b + 1] = rd[b]
                ri[b + 1] = ri[b]
                b -= 1
            rd[b + 1] = cd
            ri[b + 1] = ci
