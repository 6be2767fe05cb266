"""`SlotSet`: a set of slots that takes many small changes and is read as a sorted array.

Owns only the data structure (a sorted int64 array plus pending additions and removals,
merged on the next read), used for each tenant's visible points (`vecdb.engine.tenants`).
Not thread-safe: its owner locks around it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


class SlotSet:
    """A set of slots as a sorted int64 array plus pending additions and removals, merged
    on the next read (writes cost O(changed), a read after writes O(size) once)."""

    __slots__ = ("_added", "_base", "_removed")

    def __init__(self, base: I64 | None = None) -> None:
        self._base: I64 = np.zeros(0, np.int64) if base is None else base  # sorted, unique
        self._added: set[int] = set()  # not in _base
        self._removed: set[int] = set()  # in _base

    def add(self, slot: int) -> bool:
        """Add a slot; whether it was new."""
        if slot in self._removed:
            self._removed.discard(slot)
            return True
        if slot in self._added or self._in_base(slot):
            return False
        self._added.add(slot)
        return True

    def discard(self, slot: int) -> bool:
        """Remove a slot; whether it was there."""
        if slot in self._added:
            self._added.discard(slot)
            return True
        if slot in self._removed or not self._in_base(slot):
            return False
        self._removed.add(slot)
        return True

    def _in_base(self, slot: int) -> bool:
        i = int(np.searchsorted(self._base, slot))
        return i < len(self._base) and int(self._base[i]) == slot

    def __contains__(self, slot: int) -> bool:
        return slot in self._added or (slot not in self._removed and self._in_base(slot))

    def __len__(self) -> int:
        return len(self._base) + len(self._added) - len(self._removed)

    def array(self) -> I64:
        """The slots, sorted (merges pending changes first; the array must not be changed)."""
        if self._added or self._removed:
            base = self._base
            if self._removed:
                base = base[~np.isin(base, np.fromiter(self._removed, np.int64))]
            if self._added:
                base = np.union1d(base, np.fromiter(self._added, np.int64))
            self._base = base.astype(np.int64, copy=False)
            self._added, self._removed = set(), set()
        return self._base
