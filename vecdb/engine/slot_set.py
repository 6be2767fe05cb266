"""`SlotSet`: a set of slots that takes many small changes and is read as a sorted array.

Owns only the data structure (a sorted array plus pending additions and removals, merged on
the next read), used for each tenant's visible points (`vecdb.engine.tenants`), and its
compact storage: uint32 while every slot fits (4 bytes per member, half of int64), int64
beyond; and `LazyVisible`, a set's bitmap built only when a search needs it. `SlotSet` is
not thread-safe: its owner locks around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Visible

I64 = npt.NDArray[np.int64]
Slots = npt.NDArray[np.uint32] | I64
_U32_TOP = 1 << 32


def compact(slots: npt.NDArray[np.integer[Any]]) -> Slots:
    """`slots` (non-negative) as uint32 when they all fit, else int64 (no copy when they
    already are)."""
    if len(slots) == 0 or int(slots.max()) < _U32_TOP:
        return np.ascontiguousarray(slots, np.uint32)
    return np.ascontiguousarray(slots, np.int64)


class SlotSet:
    """A set of slots as a sorted compact array plus pending additions and removals, merged
    on the next read (writes cost O(changed), a read after writes O(size) once)."""

    __slots__ = ("_added", "_base", "_removed")

    def __init__(self, base: npt.NDArray[np.integer[Any]] | None = None) -> None:
        self._base: Slots = compact(np.zeros(0, np.int64) if base is None else base)
        # Pending changes (sets made on the first change: ~430 bytes saved per idle tenant)
        self._added: set[int] | None = None  # not in _base
        self._removed: set[int] | None = None  # in _base

    def add(self, slot: int) -> bool:
        """Add a slot; whether it was new."""
        if self._removed and slot in self._removed:
            self._removed.discard(slot)
            return True
        if (self._added and slot in self._added) or self._in_base(slot):
            return False
        if self._added is None:
            self._added = set()
        self._added.add(slot)
        return True

    def discard(self, slot: int) -> bool:
        """Remove a slot; whether it was there."""
        if self._added and slot in self._added:
            self._added.discard(slot)
            return True
        if (self._removed and slot in self._removed) or not self._in_base(slot):
            return False
        if self._removed is None:
            self._removed = set()
        self._removed.add(slot)
        return True

    def _in_base(self, slot: int) -> bool:
        i = int(np.searchsorted(self._base, slot))
        return i < len(self._base) and int(self._base[i]) == slot

    def __contains__(self, slot: int) -> bool:
        if self._added and slot in self._added:
            return True
        return not (self._removed and slot in self._removed) and self._in_base(slot)

    def __len__(self) -> int:
        return len(self._base) + len(self._added or ()) - len(self._removed or ())

    @property
    def nbytes(self) -> int:
        """Bytes of the stored array (pending changes not counted)."""
        return int(self._base.nbytes)

    def array(self) -> I64:
        """The slots, sorted, as a new int64 array (merges pending changes first)."""
        if self._added or self._removed:
            base: npt.NDArray[np.integer[Any]] = self._base
            if self._removed:
                base = base[~np.isin(base, np.fromiter(self._removed, np.int64))]
            if self._added:
                base = np.union1d(base.astype(np.int64), np.fromiter(self._added, np.int64))
            self._base = compact(base)
            self._added = self._removed = None
        return self._base.astype(np.int64)


_BITS = Visible.__dict__["bits"]  # the slot holding a built bitmap


class LazyVisible(Visible):
    """A `Visible` whose bitmap (one bit per slot of the collection: 49 KB at 390,000
    points) is built on first use. A tenant answered from its copy never needs one, so
    most tenant reads build none; built ones are kept only by the caller's small cache."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], Visible]) -> None:  # pylint: disable=super-init-not-called
        self._make: Callable[[], Visible] | None = make
        self._count = None

    @property
    def bits(self) -> npt.NDArray[np.uint8]:
        try:
            return _BITS.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            make = self._make
            assert make is not None
            built = make().bits
            _BITS.__set__(self, built)
            self._make = None  # frees what the builder held (the slots)
            return built

    @bits.setter
    def bits(self, value: npt.NDArray[np.uint8]) -> None:
        _BITS.__set__(self, value)

    @property
    def built(self) -> bool:
        """Whether the bitmap exists yet."""
        return self._make is None
