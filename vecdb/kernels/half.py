"""float32 -> float16 as vecdb stores it: one rule, one kernel.

Wherever vecdb keeps a vector as float16 (heads, float16 postings, the float16 rerank store,
"bits" codes of float16-stored rows) the value is numpy's `astype(np.float16)` (round to
nearest, ties to even, overflow to inf) and then any result below the smallest normal float16
in magnitude (2**-14, `np.finfo(np.float16).tiny`: the subnormals) is +0.0, also for negative
inputs and -0.0, since the scan kernels' portable widening is exact for normal halves and zero
only. This module owns that rule: `half_bits` gives the float16 bit patterns, `half_round` the
same values widened back to float32. numpy's float16 arithmetic is emulated, so the rule in
numpy cost seconds on a build's rows (200,000 x 1,536 float32 widened back: 2.6-4.4 s, 0.17 s
here); this is integer arithmetic on the float32 bits with no temporary. NaN becomes the quiet
float16 NaN 0x7E00 with its sign (numpy keeps the payload; vecdb rejects NaN components
anyway). Pure functions; elements run in parallel above `PARALLEL_MIN_ELEMENTS`.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

PARALLEL_MIN_ELEMENTS = 1 << 18  # below this, elements run on the calling thread
CHUNK = 1 << 14  # elements a parallel task converts (a plain loop the compiler vectorises)

# float32 bit patterns (of the magnitude, sign cleared)
_INF = 0x7F800000  # inf; above it NaN
_TINY = 0x38800000  # 2**-14, the smallest normal float16
_HALFWAY = 0x387FE000  # 2**-14 - 2**-25: ties to even up to 2**-14; below it, +0
_OVERFLOW = 0x47800000  # 2**16: a rounded magnitude this large is inf
_NAN32 = 0x7FC00000  # the float32 widening of float16's quiet NaN 0x7E00
_BIAS13 = 0x1C000  # (127 - 15) << 10: the exponent biases' difference, in float32 bits >> 13
# The loops below index from 0 over a whole slice: over range(lo, hi) numba kept a
# negative-index check that halved their speed. The choices are written as conditional
# expressions of int64 values, which the compiler turns into vector selects.


@nb.njit(cache=True, nogil=True, inline="always")
def _round32(w):  # type: ignore[no-untyped-def]
    """The float32 bits of float32 bits `w` (int64) rounded by the rule."""
    a = w & 0x7FFFFFFF
    # ties to even at 10 mantissa bits: add just under half an ulp, plus the ulp's low bit
    r = (a + 0xFFF + ((a >> 13) & 1)) & 0x7FFFE000
    r = _INF if r >= _OVERFLOW else r
    r = (_TINY if a >= _HALFWAY else 0) if a < _TINY else r
    r = (_NAN32 if a > _INF else _INF) if a >= _INF else r
    return ((w & 0x80000000) | r) if r != 0 else r


@nb.njit(cache=True, nogil=True, inline="always")
def _half16(w):  # type: ignore[no-untyped-def]
    """The float16 bits of float32 bits `w` (int64) by the rule (the rounding of `_round32`,
    counted in float16 units: 1.5x faster than deriving them from its result)."""
    a = w & 0x7FFFFFFF
    h = min(((a + 0xFFF + ((a >> 13) & 1)) >> 13) - _BIAS13, 0x7C00)  # inf when >= 2**16
    h = (0x400 if a >= _HALFWAY else 0) if a < _TINY else h
    h = 0x7E00 if a > _INF else h
    return np.uint16((((w >> 16) & 0x8000) | h) if h != 0 else h)


@nb.njit(cache=True, nogil=True)
def _bits_serial(src, out):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        out[i] = _half16(np.int64(src[i]))


@nb.njit(cache=True, nogil=True)
def _round_serial(src, out):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        out[i] = np.uint32(_round32(np.int64(src[i])))


@nb.njit(cache=True, nogil=True, parallel=True)
def _bits_parallel(src, out):  # type: ignore[no-untyped-def]
    n = src.shape[0]
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(n, (c + 1) * CHUNK)
        _bits_serial(src[lo:hi], out[lo:hi])


@nb.njit(cache=True, nogil=True, parallel=True)
def _round_parallel(src, out):  # type: ignore[no-untyped-def]
    n = src.shape[0]
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(n, (c + 1) * CHUNK)
        _round_serial(src[lo:hi], out[lo:hi])


def _flat_bits(x: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint32]]:
    """x as a C-contiguous float32 array and its bits, flat (`np.asarray(order="C")`, not
    `np.ascontiguousarray`, which makes a 0-d array 1-d)."""
    xc = np.asarray(x, np.float32, order="C")
    return xc, xc.reshape(-1).view(np.uint32)


def half_bits(x: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """The float16 bit patterns of x (any shape; float32, else converted to it first) by the
    rule of the module docstring, as a new array of x's shape."""
    xc, src = _flat_bits(x)
    out = np.empty(src.shape[0], np.uint16)
    if src.shape[0] >= PARALLEL_MIN_ELEMENTS:
        _bits_parallel(src, out)
    else:
        _bits_serial(src, out)
    return out.reshape(xc.shape)


def half_round(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """x rounded by the rule and widened back to float32 (exactly what
    `half_bits(x).view(np.float16).astype(np.float32)` gives), as a new array of x's shape."""
    xc, src = _flat_bits(x)
    out = np.empty(src.shape[0], np.uint32)
    if src.shape[0] >= PARALLEL_MIN_ELEMENTS:
        _round_parallel(src, out)
    else:
        _round_serial(src, out)
    return out.view(np.float32).reshape(xc.shape)
