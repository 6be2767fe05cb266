"""The free extents of a posting file's space map, in numpy arrays.

Owns `FreeList`: a set of disjoint extents `(a, ln)` (start and length in allocation units),
kept twice in sorted int64 arrays with spare capacity: by start (to coalesce neighbours) and by
(length, start) (for best fit). An insert or removal shifts the arrays' tails in place.

Why arrays and not sorted lists of Python ints: the map changes on every allocation and
release of the maintenance thread, thousands of times in the middle of the build's and
maintenance's temporaries. Each Python int key allocated there and still live at the end pinned
a 1 MiB CPython arena that the process could never give back (the after-build memory of
issue 8). Here the map's memory is four arrays, 32 bytes per extent, allocated a few times.

Thread safety: none; the space map's owner (the maintenance thread) is the only user.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
MIN_CAPACITY = 64  # extents; the arrays never shrink below this


class FreeList:
    """Disjoint free extents, by start and by (length, start)."""

    n: int  # number of extents; rows [0, n) of each array are valid
    off_a: I64  # starts, ascending
    off_l: I64  # lengths, in the order of off_a
    sz_l: I64  # lengths, ascending; ties by start
    sz_a: I64  # starts, in the order of sz_l

    def __init__(self) -> None:
        self.n = 0
        self._alloc(MIN_CAPACITY)

    def _alloc(self, cap: int) -> None:
        n = self.n
        old = (self.off_a, self.off_l, self.sz_l, self.sz_a) if n else None
        new = tuple(np.zeros(cap, dtype=np.int64) for _ in range(4))
        if old is not None:
            for dst, src in zip(new, old, strict=True):
                dst[:n] = src[:n]
        self.off_a, self.off_l, self.sz_l, self.sz_a = new

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return 4 * self.off_a.nbytes

    # --- queries -----------------------------------------------------------------------------

    def index_of_start(self, a: int) -> int:
        """Position (by start) of the first extent starting at or after `a`."""
        return int(self.off_a[: self.n].searchsorted(a))

    def by_start(self, i: int) -> tuple[int, int]:
        """The i-th extent by start: (start, length)."""
        return int(self.off_a[i]), int(self.off_l[i])

    def lowest(self, count: int) -> tuple[I64, I64]:
        """Starts and lengths of the `count` lowest extents (views)."""
        m = min(count, self.n)
        return self.off_a[:m], self.off_l[:m]

    def fitting(self, s: int, count: int) -> tuple[I64, I64]:
        """Starts and lengths of the `count` smallest extents of at least s units, in
        (length, start) order (views)."""
        i = int(self.sz_l[: self.n].searchsorted(s))
        j = min(self.n, i + count)
        return self.sz_a[i:j], self.sz_l[i:j]

    def largest(self) -> int:
        """Length of the largest extent (0 if none)."""
        return int(self.sz_l[self.n - 1]) if self.n else 0

    def starts(self) -> I64:
        return self.off_a[: self.n]

    def lengths(self) -> I64:
        return self.off_l[: self.n]

    # --- changes -----------------------------------------------------------------------------

    def _size_pos(self, a: int, ln: int) -> int:
        """Position of (ln, a) in the (length, start) order."""
        sl = self.sz_l[: self.n]
        lo = int(sl.searchsorted(ln, side="left"))
        hi = int(sl.searchsorted(ln, side="right"))
        return lo + int(self.sz_a[lo:hi].searchsorted(a))

    def add(self, a: int, ln: int) -> None:
        """Insert an extent (it must not overlap or touch-merge: the caller coalesces)."""
        n = self.n
        if n == len(self.off_a):
            self._alloc(2 * n)
        i = int(self.off_a[:n].searchsorted(a))
        j = self._size_pos(a, ln)
        _insert(self.off_a, n, i, a)
        _insert(self.off_l, n, i, ln)
        _insert(self.sz_l, n, j, ln)
        _insert(self.sz_a, n, j, a)
        self.n = n + 1

    def remove(self, a: int, ln: int) -> None:
        """Remove the extent (a, ln), which must be present."""
        n = self.n
        i = int(self.off_a[:n].searchsorted(a))
        j = self._size_pos(a, ln)
        if i >= n or self.off_a[i] != a or self.off_l[i] != ln or self.sz_a[j] != a:
            raise KeyError(f"no free extent ({a}, {ln})")
        _delete(self.off_a, n, i)
        _delete(self.off_l, n, i)
        _delete(self.sz_l, n, j)
        _delete(self.sz_a, n, j)
        self.n = n - 1
        cap = len(self.off_a)
        if cap > MIN_CAPACITY and self.n < cap // 4:
            self._alloc(max(MIN_CAPACITY, cap // 2))

    def assign(self, starts: I64, lengths: I64) -> None:
        """Replace every extent by these (disjoint, sorted by start)."""
        n = len(starts)
        self.n = 0
        cap = MIN_CAPACITY
        while cap < n:
            cap *= 2
        self._alloc(cap)
        order = np.lexsort((starts, lengths))
        self.off_a[:n], self.off_l[:n] = starts, lengths
        self.sz_l[:n], self.sz_a[:n] = lengths[order], starts[order]
        self.n = n


def _insert(arr: I64, n: int, i: int, v: int) -> None:
    if i < n:
        arr[i + 1 : n + 1] = arr[i:n]
    arr[i] = v


def _delete(arr: I64, n: int, i: int) -> None:
    if i < n - 1:
        arr[i : n - 1] = arr[i + 1 : n]
