"""The 8-lane uint64 vector type of `vecdb.kernels.simd64` against numpy."""

from __future__ import annotations

import numpy as np
from numba import njit

from vecdb.kernels.simd64 import WLANES, wadd, wand, wcount, wload, wshl, wsum, wzero


@njit(cache=False)
def _lanes(a, b, i, j):  # type: ignore[no-untyped-def]
    x = wload(a, i)
    y = wload(b, j)
    return (
        wsum(wand(x, y)),
        wsum(wadd(x, y)),
        wsum(wcount(x)),
        wsum(wshl(x, 3)),
        wsum(wadd(wzero(), wcount(wand(x, y)))),
    )


def _popcount(v: np.ndarray) -> np.ndarray:
    return np.unpackbits(v.view(np.uint8)).reshape(len(v), 64).sum(1).astype(np.uint64)


def test_lane_ops_equal_numpy_at_unaligned_offsets() -> None:
    """Loads at odd flat offsets of a 2-D array, and, add, popcount, constant shift and the
    lane sum (mod 2^64, as uint64 arithmetic), each against numpy's."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**63, size=(3, 7), dtype=np.int64).view(np.uint64)
    a[0, 3] = np.uint64(2**64 - 1)  # every bit set: popcount 64, shift drops the top bits
    b = rng.integers(0, 2**63, size=20, dtype=np.int64).view(np.uint64)
    got = _lanes(a, b, 3, 11)
    x, y = a.reshape(-1)[3 : 3 + WLANES], b[11 : 11 + WLANES]
    with np.errstate(over="ignore"):
        want = (
            np.bitwise_and(x, y).sum(dtype=np.uint64),
            (x + y).sum(dtype=np.uint64),
            _popcount(x).sum(dtype=np.uint64),
            (x << np.uint64(3)).sum(dtype=np.uint64),
            _popcount(x & y).sum(dtype=np.uint64),
        )
    assert [int(g) for g in got] == [int(w) for w in want]


def test_shift_needs_a_constant() -> None:
    """`wshl` takes a literal shift only (a runtime shift does not type)."""

    @njit(cache=False)
    def shifted(a, k):  # type: ignore[no-untyped-def]
        return wsum(wshl(wload(a, 0), k))

    a = np.arange(WLANES, dtype=np.uint64)
    try:
        shifted(a, 2)
    except Exception as exc:  # numba's TypingError
        assert "wshl" in str(exc)
    else:
        raise AssertionError("a runtime shift was accepted")
