"""Sign-bit codes and their Hamming distances.

This module owns the binary code layout used for coarse filtering: ``pack_signs`` sets bit j
of a row's code iff component j is strictly positive (NaN and -0.0 give 0), with bit j in
uint64 word ``j // 64`` at position ``j % 64``; unused high bits of the last word are 0.
``hamming`` counts differing bits with the SWAR popcount, which LLVM recognises and turns into
the hardware ``popcnt`` instruction when the CPU has one. Pure functions on C-contiguous
arrays; no I/O, no state, no imports from the rest of vecdb.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

WORD_BITS = 64


# Serial (GIL-free) below this many words of work; waking numba's thread pool for a single
# query's code costs more (~150 us on a busy host) than the work itself.
_PARALLEL_MIN_WORDS = 1 << 16


@njit(cache=True, inline="always")
def _pack_row(row: np.ndarray, code: np.ndarray) -> None:
    d = row.shape[0]
    one = np.uint64(1)
    for w in range(code.shape[0]):
        word = np.uint64(0)
        lo = w * 64
        for j in range(lo, min(lo + 64, d)):
            if row[j] > 0:
                word |= one << np.uint64(j - lo)
        code[w] = word


@njit(cache=True, nogil=True)
def _pack_signs_serial(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        _pack_row(x[i], out[i])


@njit(cache=True, parallel=True)
def _pack_signs_parallel(x: np.ndarray, out: np.ndarray) -> None:
    for i in prange(x.shape[0]):
        _pack_row(x[i], out[i])


@njit(cache=True, inline="always")
def _popcount(v: np.uint64) -> np.uint64:
    # Constants are typed uint64 so that numba never promotes the arithmetic to float64.
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (v * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, inline="always")
def _hamming_row(ra: np.ndarray, b: np.ndarray, o: np.ndarray) -> None:
    w = ra.shape[0]
    for j in range(b.shape[0]):
        rb = b[j]
        c = np.uint64(0)
        for t in range(w):
            c += _popcount(ra[t] ^ rb[t])
        o[j] = np.int32(c)


@njit(cache=True, nogil=True)
def _hamming_serial(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        _hamming_row(a[i], b, out[i])


@njit(cache=True, parallel=True)
def _hamming_parallel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in prange(a.shape[0]):
        _hamming_row(a[i], b, out[i])


def code_words(d: int) -> int:
    """Number of uint64 words in the code of a d-dimensional vector."""
    return (d + WORD_BITS - 1) // WORD_BITS


def pack_signs(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
    """Sign codes (n, ceil(d / 64)) uint64 of the rows of ``x`` (n, d) float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    out = np.zeros((x.shape[0], code_words(x.shape[1])), dtype=np.uint64)
    if x.shape[0] > 1 and x.size >= _PARALLEL_MIN_WORDS * WORD_BITS:
        _pack_signs_parallel(x, out)
    else:
        _pack_signs_serial(x, out)
    return out


def hamming(
    a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64], out: npt.NDArray[np.int32]
) -> None:
    """out[i, j] = number of differing bits between codes a[i] and b[j]."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (n, w) and (m, w) codes, got {a.shape} and {b.shape}")
    if out.shape != (a.shape[0], b.shape[0]) or out.dtype != np.int32:
        raise ValueError(
            f"out must be int32 {(a.shape[0], b.shape[0])}, got {out.dtype} {out.shape}"
        )
    for name, arr, dtype in (("a", a, np.uint64), ("b", b, np.uint64), ("out", out, np.int32)):
        if not arr.flags.c_contiguous or arr.dtype != dtype:
            raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype)}, got {arr.dtype}")
    if a.shape[0] > 1 and a.size * b.shape[0] >= _PARALLEL_MIN_WORDS:
        _hamming_parallel(a, b, out)
    else:
        _hamming_serial(a, b, out)
