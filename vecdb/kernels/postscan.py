"""Helpers of the SPANN scan (`vecdb.kernels.groupscan`): float16 widening and the thread count.

Pure functions on arrays (no I/O, no globals). `_half_bits` widens float16 bit patterns with
shifts and masks (numba has no float16 type), `half_to_float` is its numpy-facing form for
tests and tools, and `search_threads` says how many threads a batch gets.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

HALF_SCALE = np.float32(2.0**112)  # float16 bits moved into a float32 are 2^-112 too small


@nb.njit(cache=True, nogil=True)
def _half_bits(h, bits):  # type: ignore[no-untyped-def]
    """float16 bit patterns -> float32 patterns of the same value times 2^-112: sign in
    place, exponent and mantissa shifted (exact for normal halves and zero; the writer
    stores no subnormal, inf or NaN). Callers multiply by HALF_SCALE (exact). Shifts and masks only, so it vectorises."""
    for j in range(h.shape[0]):
        x = np.uint32(h[j])
        bits[j] = ((x & 0x8000) << 16) | ((x & 0x7FFF) << 13)


def half_to_float(h: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Widen float16 bit patterns as the scan kernel does (for tests and tools)."""
    bits = np.empty(len(h), dtype=np.uint32)
    _half_bits(h, bits)
    out: npt.NDArray[np.float32] = bits.view(np.float32) * HALF_SCALE
    return out


PARALLEL_MIN_QUERIES = 16  # smaller batches run on the calling thread


def search_threads(nq: int) -> int:
    """Threads a search of `nq` queries uses: numba's count for the calling thread
    (`numba.set_num_threads`, the process's thread setting) once the batch repays handing
    chunks to other threads, else 1."""
    return nb.get_num_threads() if nq >= PARALLEL_MIN_QUERIES else 1
