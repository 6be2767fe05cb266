"""`kernels.borrow`: a borrowed array reads and writes the same memory as its owner but has no
owner itself (so its views take no reference), and a kernel's own scratch kept with `keep`
stays alive through its loop (without `keep` numba frees it after the borrow)."""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vecdb.kernels.borrow import borrow, keep


@intrinsic
def _has_owner(typingctx: Any, arr: Any) -> Any:
    """Whether `arr` carries a reference-counted owner (a non-null meminfo)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return cgutils.is_not_null(builder, a.meminfo)

    return types.boolean(arr), codegen


has_owner: Any = _has_owner


@nb.njit(cache=True)
def _rows_sum_into(a, out):  # type: ignore[no-untyped-def]
    b = borrow(a)
    o = borrow(out)
    for i in range(b.shape[0]):
        row = b[i]
        o[i] = row.sum()
        row[0] = -1.0  # a write through the borrowed view lands in the owner
    return has_owner(a), has_owner(b), has_owner(b[1:])


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


def test_a_borrowed_array_is_its_owner_memory_without_an_owner() -> None:
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = np.zeros(4)
    owners = _rows_sum_into(a, out)
    np.testing.assert_array_equal(out, [3.0, 12.0, 21.0, 30.0])
    np.testing.assert_array_equal(a[:, 0], [-1.0, -1.0, -1.0, -1.0])
    assert owners == (True, False, False)  # the argument has one; the borrow and its views not


def test_kept_scratch_holds_its_values_through_the_loop() -> None:
    n, rounds = 1000, 20
    assert _scratch_after_loop(n, rounds) == n * rounds * (rounds + 1) / 2
