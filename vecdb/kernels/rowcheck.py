"""The component checks and the cosine normalisation of incoming rows, one pass each.

Owns `scan_rows` (what `engine.validate` asks of every upserted vector and query: no NaN or
inf, no component above a limit, no squared norm past a limit, no zero row where cosine
needs a direction) and `normalize_rows` (rows to unit length, in float64 for accuracy).
Squared norms are summed in numpy's order (`unitrow._pairwise`), so every value is the one
numpy's float64 passes gave (bit for bit: a stored row and the same row as a query, which
`unitrow.unit_row` normalises, stay equal).
numpy did each as several whole-matrix passes over a float64 copy (isfinite, abs, compare,
square, sum, divide, cast): in a MiniLM-384 load through the SDK (a build running beside
it) over half of the upsert thread's samples were in those passes (py-spy); a 43,690 x 384
batch 0.165 -> 0.049 s here. Pure functions on arrays, no I/O; imports only other kernels.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.unitrow import _pairwise

OK = 0
NOT_FINITE = 1  # (row, col): the first NaN or inf, row-major
TOO_LARGE = 2  # (row, col): the first |component| above max_abs, row-major
HUGE_NORM = 3  # (row, -1): the first row whose squared norm is above max_sq
ZERO_ROW = 4  # (row, -1): the first all-zero row (asked for with need_nonzero)


@nb.njit(cache=True, nogil=True)
def scan_rows(x, max_abs, max_sq, need_nonzero):  # type: ignore[no-untyped-def]
    """(status, row, col) of the checks on rows x (n, d) (float32 or float64, values taken
    as float64), in the order of precedence NOT_FINITE (anywhere), TOO_LARGE, HUGE_NORM,
    ZERO_ROW (when need_nonzero), each naming its first offender; (OK, -1, -1) if none.
    A row's squared norm and largest magnitude are summed in one pass; only a row that
    fails one of them is read again, element by element, to name the offender."""
    n, d = x.shape
    w = np.empty(d, np.float64)
    big_r, big_c, huge, zero = -1, -1, -1, -1
    for i in range(n):
        m = 0.0
        for j in range(d):
            v = np.float64(x[i, j])
            w[j] = v * v
            a = abs(v)
            if a > m:
                m = a
        s = _pairwise(w, d)
        if s <= max_sq and m <= max_abs and (s > 0.0 or not need_nonzero):
            continue
        for j in range(d):  # (NaN fails `s <= max_sq`: every non-finite row comes here)
            v = np.float64(x[i, j])
            if not np.isfinite(v):
                return NOT_FINITE, i, j
            if big_r < 0 and abs(v) > max_abs:
                big_r, big_c = i, j
        if huge < 0 and s > max_sq:
            huge = i
        if zero < 0 and need_nonzero and s == 0.0:
            zero = i
    if big_r >= 0:
        return TOO_LARGE, big_r, big_c
    if huge >= 0:
        return HUGE_NORM, huge, -1
    if zero >= 0:
        return ZERO_ROW, zero, -1
    return OK, -1, -1


@nb.njit(cache=True, nogil=True)
def _row_sq(x, i, w):  # type: ignore[no-untyped-def]
    """Row i's squared norm in float64, summed in numpy's order; w: scratch of x's width."""
    d = x.shape[1]
    for j in range(d):
        v = np.float64(x[i, j])
        w[j] = v * v
    return _pairwise(w, d)


NORMALIZE_PARALLEL = 1 << 18  # components from which `normalize_rows` uses every core
NORMALIZE_BLOCK = 64  # rows a thread normalises with one scratch row


def normalize_rows(x: npt.NDArray[Any], out: npt.NDArray[np.float32]) -> None:
    """out (n, d) float32 = each row of x divided by its L2 norm, summed (numpy's order)
    and divided in float64; an all-zero row stays zero. From NORMALIZE_PARALLEL components
    on every core (blocks of rows; each row's arithmetic the same, so the same bits): a
    rebuild's read-back of 98,000 x 1,536 stored vectors spent 1.6 s here on one core
    (py-spy), and took 3.2 s in all before, 2.0 s after."""
    if x.size >= NORMALIZE_PARALLEL:
        _normalize_parallel(x, out)
    else:
        _normalize_block(x, out, 0, x.shape[0])


@nb.njit(cache=True, nogil=True)
def _normalize_block(x, out, lo, hi):  # type: ignore[no-untyped-def]
    """Rows lo..hi of `normalize_rows`."""
    d = x.shape[1]
    w = np.empty(d, np.float64)
    for i in range(lo, hi):
        s = _row_sq(x, i, w)
        norm = np.sqrt(s) if s > 0.0 else 1.0
        for j in range(d):
            out[i, j] = np.float32(np.float64(x[i, j]) / norm)


@nb.njit(cache=True, nogil=True, parallel=True)
def _normalize_parallel(x, out):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    for b in nb.prange((n + NORMALIZE_BLOCK - 1) // NORMALIZE_BLOCK):
        lo = b * NORMALIZE_BLOCK
        _normalize_block(x, out, lo, min(n, lo + NORMALIZE_BLOCK))


@nb.njit(cache=True, nogil=True)
def plain_query_rows(x, max_sq, cosine, out):  # type: ignore[no-untyped-def]
    """True with out (n, d) float32 = the float32 rows x as `engine.validate.queries_as_stored`
    takes a plain batch: every row's squared norm (numpy's order) at most max_sq and above
    zero for cosine (at least zero otherwise; NaN fails both), cosine rows divided by their
    norm in float64, the others copied. False, out partly written, at the first row that
    fails: the caller's full path then judges the batch. One pass over x instead of five
    numpy passes over a float64 copy (a 1,000 x 384 batch: ~4 ms of a 67 ms search, on the
    calling thread while the scan threads waited)."""
    n, d = x.shape
    w = np.empty(d, np.float64)
    for i in range(n):
        s = _row_sq(x, i, w)
        if not s <= max_sq:
            return False
        if cosine:
            if not s > 0.0:
                return False
            norm = np.sqrt(s)
            for j in range(d):
                out[i, j] = np.float32(np.float64(x[i, j]) / norm)
        else:
            if not s >= 0.0:
                return False
            for j in range(d):
                out[i, j] = x[i, j]
    return True


@nb.njit(cache=True, nogil=True)
def first_above(x, limit):  # type: ignore[no-untyped-def]
    """(row, col) of the first |component| of x above limit, row-major; (-1, -1) if none."""
    n, d = x.shape
    for i in range(n):
        for j in range(d):
            if abs(x[i, j]) > limit:
                return i, j
    return -1, -1
