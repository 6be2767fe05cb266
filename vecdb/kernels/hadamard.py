"""A structured random rotation: sign flips and Walsh-Hadamard transforms.

The "bits" codes rotate every residual and every query by one random orthogonal matrix
(`bitscan.rotation`). Stored densely that is a d x d product: at d = 1,536 about 2.4
million multiply-adds a vector (~150 us), which was ~40% of a query's time and most of
the time of coding rows. This module's rotation is orthogonal too but applied in
O(d log d): `rounds` times, flip the signs of the components (a random +-1 diagonal), then
apply the orthonormal Walsh-Hadamard transform H_m / sqrt(m) to one block of m = the
largest power of two <= d components, alternately the leading block [0, m) and the
trailing block [d - m, d) (they overlap unless d is a power of two, so every component
is mixed with the others). Each step is orthogonal, so the whole is; its parameters are
the signs, `signs` (rounds, d) int8, drawn from a seed and persisted like the dense matrix.
Random sign flips around fast transforms are the usual stand-in for a uniformly random
rotation in quantizers (the estimator's error is measured, bench/RESULTS.md).

`_structured(v, signs)` applies it to one vector in place; `is_structured(rot)` lets a
kernel that takes either form (`bitscan._rotate`, `_rotate_tile`: float32 (d, d) or its
float16 bits, v <- v @ rot; int8 (rounds, d), the signs) choose when it is compiled, by
`rot`'s dtype.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt
from numba import types
from numba.extending import overload

DEFAULT_ROUNDS = 4  # sign flips + transforms (two of each block)


def hadamard_signs(d: int, seed: int = 0, rounds: int = DEFAULT_ROUNDS) -> npt.NDArray[np.int8]:
    """The (rounds, d) +-1 signs of a structured rotation, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((rounds, d)) < 0.5, -1, 1).astype(np.int8)


@nb.njit(cache=True, nogil=True, inline="always")
def _fht(v, lo, m):  # type: ignore[no-untyped-def]
    """v[lo:lo + m] <- H_m v[lo:lo + m] / sqrt(m), in place (m a power of two). The first
    three passes (h = 1, 2, 4) go together over groups of 8, whose short inner loops did
    not vectorise (1,536-d, 4 rounds: 30 -> 16 us a row); the later ones are axpy-like."""
    h = 1
    if m >= 8:
        for i in range(lo, lo + m, 8):
            b0 = v[i] + v[i + 1]
            b1 = v[i] - v[i + 1]
            b2 = v[i + 2] + v[i + 3]
            b3 = v[i + 2] - v[i + 3]
            b4 = v[i + 4] + v[i + 5]
            b5 = v[i + 4] - v[i + 5]
            b6 = v[i + 6] + v[i + 7]
            b7 = v[i + 6] - v[i + 7]
            c0 = b0 + b2
            c2 = b0 - b2
            c1 = b1 + b3
            c3 = b1 - b3
            c4 = b4 + b6
            c6 = b4 - b6
            c5 = b5 + b7
            c7 = b5 - b7
            v[i] = c0 + c4
            v[i + 4] = c0 - c4
            v[i + 1] = c1 + c5
            v[i + 5] = c1 - c5
            v[i + 2] = c2 + c6
            v[i + 6] = c2 - c6
            v[i + 3] = c3 + c7
            v[i + 7] = c3 - c7
        h = 8
    while h < m:
        for i in range(lo, lo + m, 2 * h):
            for j in range(i, i + h):
                a = v[j]
                b = v[j + h]
                v[j] = a + b
                v[j + h] = a - b
        h *= 2
    s = np.float32(1.0 / np.sqrt(np.float64(m)))
    for j in range(lo, lo + m):
        v[j] *= s


@nb.njit(cache=True, nogil=True, inline="always")
def _structured(v, signs):  # type: ignore[no-untyped-def]
    """v <- the structured rotation of v (see the module docstring), in place."""
    d = v.shape[0]
    m = 1
    while m * 2 <= d:
        m *= 2
    for r in range(signs.shape[0]):
        for j in range(d):
            v[j] *= np.float32(signs[r, j])
        _fht(v, 0 if r % 2 == 0 else d - m, m)


def is_structured(rot: object) -> bool:
    """True (at compile time, in a kernel) when `rot` holds signs (int8), not a matrix."""
    raise NotImplementedError("numba only")


@overload(is_structured, inline="always")
def _is_structured_impl(rot):  # type: ignore[no-untyped-def]
    if isinstance(rot, types.Array) and rot.dtype == types.int8:
        return lambda rot: True
    return lambda rot: False


@nb.njit(cache=True, nogil=True)
def structured_rows(x, signs):  # type: ignore[no-untyped-def]
    """The structured rotation of each row of x (n, d) float32, as a new array."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i]
        _structured(out[i], signs)
    return out


def structured_matrix(signs: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    """The dense (d, d) matrix M of the rotation, rows rotated as v @ M (tests, checks)."""
    d = signs.shape[1]
    out: npt.NDArray[np.float32] = structured_rows(np.eye(d, dtype=np.float32), signs)
    return out
