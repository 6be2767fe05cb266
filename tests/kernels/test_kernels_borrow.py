"""`kernels.borrow`: a borrowed array reads and writes the same memory as its owner, takes no
reference of it, and a kernel's own scratch kept with `keep` stays alive through its loop."""

from __future__ import annotations

import sys

import numba as nb
import numpy as np

from vecdb.kernels.borrow import borrow, keep


@nb.njit(cache=True)
def _rows_sum_into(a, out):  # type: ignore[no-untyped-def]
    b = borrow(a)
    o = borrow(out)
    for i in range(b.shape[0]):
        row = b[i]
        o[i] = row.sum()
        row[0] = -1.0  # a write through the borrowed view lands in the owner


@nb.njit(cache=True)
def _scratch_after_loop(n, rounds):  # type: ignore[no-untyped-def]
    own = np.zeros(n, np.float64)
    s = borrow(own)
    for r in range(rounds):
        junk = np.ones(n, np.float64)  # allocations that would reuse a freed block
        for i in range(n):
            s[i] += junk[i] * (r + 1)
    total = s.sum()
    keep(own)
    return total


def test_a_borrowed_array_is_its_owner_memory_without_a_reference() -> None:
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = np.zeros(4)
    before = sys.getrefcount(a)
    _rows_sum_into(a, out)
    np.testing.assert_array_equal(out, [3.0, 12.0, 21.0, 30.0])
    np.testing.assert_array_equal(a[:, 0], [-1.0, -1.0, -1.0, -1.0])
    assert sys.getrefcount(a) == before


def test_kept_scratch_holds_its_values_through_the_loop() -> None:
    n, rounds = 1000, 20
    assert _scratch_after_loop(n, rounds) == n * rounds * (rounds + 1) / 2
