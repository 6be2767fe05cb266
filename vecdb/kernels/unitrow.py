"""One query row checked and made unit-length in one call, bit for bit numpy's arithmetic.

Pure functions on arrays (no I/O, no globals). `engine.validate.queries_as_stored` checks a
float32 query from its squared norm (finite, non-zero for cosine, below a bound) and
normalises it in float64: five numpy calls, about a tenth of a single warm query's time
(GloVe-50, py-spy of a loop of single queries: 9% of the call). `unit_row` does the same
in one call with the same values: the squared norm is summed in numpy's own order
(`_pairwise`: the pairwise summation of numpy's float64 add-reduce, eight accumulators over
blocks of at most 128 values, halves above that; no reassociation flags), the square root
and division are IEEE in both, and the float32 rounding is the same.
"""

from __future__ import annotations

import numba as nb
import numpy as np

PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE: longer runs are summed as two halves
UNROLL = 8  # numpy's accumulators per block


@nb.njit(cache=True, nogil=True)
def _block(a, lo, n):  # type: ignore[no-untyped-def]
    """sum(a[lo:lo + n]) for n <= PAIRWISE_BLOCK in numpy's order: sequential below UNROLL
    values, else eight accumulators, combined as a tree, then the remainder in order."""
    if n < UNROLL:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = UNROLL
    end = n - n % UNROLL
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += UNROLL
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@nb.njit(cache=True, nogil=True)
def _pairwise(a, n):  # type: ignore[no-untyped-def]
    """sum(a[:n]) in the order of numpy's float64 `pairwise_sum`: a run longer than
    PAIRWISE_BLOCK is the sum of its halves (the first a multiple of UNROLL long). numpy
    recurses; numba cannot cache a recursive function, so the same tree is walked with an
    explicit stack (post-order: left half, right half, then their sum)."""
    if n <= PAIRWISE_BLOCK:
        return _block(a, 0, n)
    depth = 3 * 64  # pending entries: at most three per level of halving, < 64 levels
    task_lo = np.empty(depth, np.int64)
    task_n = np.empty(depth, np.int64)  # -1: add the two values on top of `vals`
    vals = np.empty(depth, np.float64)
    nt = 1
    nv = 0
    task_lo[0] = 0
    task_n[0] = n
    while nt > 0:
        nt -= 1
        lo = task_lo[nt]
        m = task_n[nt]
        if m < 0:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        elif m <= PAIRWISE_BLOCK:
            vals[nv] = _block(a, lo, m)
            nv += 1
        else:
            half = m // 2
            half -= half % UNROLL
            task_n[nt] = -1  # last: the sum of the two halves
            task_lo[nt + 1], task_n[nt + 1] = lo + half, m - half  # then the right half
            task_lo[nt + 2], task_n[nt + 2] = lo, half  # first the left half
            nt += 3
    return vals[0]


@nb.njit(cache=True, nogil=True)
def unit_row(x, cosine, max_sq, out):  # type: ignore[no-untyped-def]
    """out[0] = x (float32, (d,)) as stored: x / |x| for cosine (float64 arithmetic), else x.
    Returns whether x passed the checks (squared norm > 0 for cosine, >= 0 otherwise, and
    <= max_sq; NaN fails): when False, `out` is unspecified."""
    d = x.shape[0]
    w = np.empty(d, np.float64)
    for j in range(d):
        v = np.float64(x[j])
        w[j] = v * v
    sq = _pairwise(w, d)
    if not ((sq > 0.0 if cosine else sq >= 0.0) and sq <= max_sq):
        return False
    if not cosine:
        for j in range(d):
            out[0, j] = x[j]
        return True
    norm = np.sqrt(sq)
    for j in range(d):
        out[0, j] = np.float32(np.float64(x[j]) / norm)
    return True
