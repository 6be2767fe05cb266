"""`SlotSet`: a set of slots that takes many small changes and is read as a sorted array.

Owns only the data structure (a sorted array plus pending additions and removals, merged on
the next read), used for each tenant's visible points (`vecdb.engine.tenants`), and its
compact storage (`Packed`): runs of consecutive slots where they are long, else 16-bit gaps
between slots where they fit, else a flat array, uint32 while every slot fits (int64
beyond); and `LazyVisible`, a set's bitmap built only when a search needs it. `SlotSet` is
not thread-safe: its owner locks around it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Visible

I64 = npt.NDArray[np.int64]
Slots = npt.NDArray[np.uint32] | I64
_U32_TOP = 1 << 32
# Runs are kept when they average at least this many slots: reading the set back costs
# O(runs) numpy work on top of O(slots), so short runs (say 4) made a 41,000-slot tenant's
# read 15x slower than the flat array's; long ones cost 8 / RUN_MIN bytes per slot or less.
RUN_MIN = 16
# Gaps: 2 bytes per slot instead of 4, for sets of at least GAPS_MIN slots (a smaller one
# saves little and pays the decoding on every read); one anchor per BLOCK slots bounds a
# membership test to decoding BLOCK gaps.
GAPS_MIN = 64
BLOCK = 256
_U16_TOP = 1 << 16


def compact(slots: npt.NDArray[np.integer[Any]]) -> Slots:
    """`slots` (non-negative) as uint32 when they all fit, else int64 (no copy when they
    already are)."""
    if len(slots) == 0 or int(slots.max()) < _U32_TOP:
        return np.ascontiguousarray(slots, np.uint32)
    return np.ascontiguousarray(slots, np.int64)


class Packed:
    """An immutable sorted set of slots in the smallest of three encodings: runs of
    consecutive slots (start, length: 8 bytes per run) when runs average `RUN_MIN` slots or
    more (points upserted together take consecutive slots, so a tenant loaded in batches is
    mostly runs); gaps (2 bytes per slot: the uint16 difference to the previous slot, with
    every `BLOCK`-th slot kept whole as an anchor so a membership test decodes one block)
    when every gap fits 16 bits and the set has `GAPS_MIN` slots or more; else the flat
    compact array (4 bytes per slot)."""

    __slots__ = ("_flat", "_gaps", "_lens", "_n", "_starts")

    def __init__(self, slots: npt.NDArray[np.integer[Any]]) -> None:
        s = np.asarray(slots)
        self._n = len(s)
        self._starts: Slots | None = None  # runs' first slots, or the gap blocks' anchors
        self._lens: npt.NDArray[np.uint32] | None = None  # runs' lengths
        self._gaps: npt.NDArray[np.uint16] | None = None  # slot - previous slot (0 first)
        self._flat: Slots = _EMPTY
        if len(s) < 2:
            self._flat = compact(s.copy())
            return
        step = np.diff(s.astype(np.int64))
        breaks = np.flatnonzero(step != 1) + 1
        if RUN_MIN * (len(breaks) + 1) <= len(s):
            first = np.concatenate([[0], breaks]).astype(np.int64)
            self._starts = compact(s[first])
            self._lens = np.diff(np.concatenate([first, [len(s)]])).astype(np.uint32)
        elif len(s) >= GAPS_MIN and int(step.max()) < _U16_TOP:
            self._starts = compact(s[::BLOCK].copy())
            self._gaps = np.concatenate([[0], step]).astype(np.uint16)
        else:
            flat = compact(s)  # (a copy when a view: it must not pin a larger array)
            self._flat = flat.copy() if flat.base is not None else flat

    def __len__(self) -> int:
        return self._n

    def __contains__(self, slot: int) -> bool:
        if self._starts is None:
            i = int(np.searchsorted(self._flat, slot))
            return i < len(self._flat) and int(self._flat[i]) == slot
        i = int(np.searchsorted(self._starts, slot, side="right")) - 1
        if i < 0:
            return False
        if self._gaps is not None:  # decode the anchor's block
            lo = i * BLOCK
            block = self._gaps[lo + 1 : lo + BLOCK].astype(np.int64)
            np.cumsum(block, out=block)
            rest = slot - int(self._starts[i])
            j = int(np.searchsorted(block, rest))
            return rest == 0 or (j < len(block) and int(block[j]) == rest)
        assert self._lens is not None
        return slot < int(self._starts[i]) + int(self._lens[i])

    def expand(self) -> I64:
        """The slots, ascending, as a new int64 array."""
        if self._starts is None:
            return self._flat.astype(np.int64)
        first = int(self._starts[0])
        if self._gaps is not None:
            out: I64 = self._gaps.astype(np.int64)  # (then in place: a casting cumsum is
            out[0] = first  # 15x slower)
            np.cumsum(out, out=out)
            return out
        assert self._lens is not None
        if len(self._starts) == 1:  # one run (a tenant loaded in one go): the fast path
            return np.arange(first, first + self._n, dtype=np.int64)
        starts, lens = self._starts.astype(np.int64), self._lens.astype(np.int64)
        at = np.cumsum(lens) - lens  # where each run starts in the output
        out = np.repeat(starts - at, lens) + np.arange(self._n, dtype=np.int64)
        return out

    @property
    def nbytes(self) -> int:
        parts = (self._flat, self._starts, self._lens, self._gaps)
        return sum(int(p.nbytes) for p in parts if p is not None)


_EMPTY: Slots = np.zeros(0, np.uint32)


class SlotSet:
    """A set of slots as a sorted `Packed` set plus pending additions and removals, merged
    on the next read (writes cost O(changed), a read after writes O(size) once)."""

    __slots__ = ("_added", "_base", "_removed")

    def __init__(self, base: npt.NDArray[np.integer[Any]] | None = None) -> None:
        self._base = Packed(np.zeros(0, np.int64) if base is None else base)  # sorted, unique
        # Pending changes (sets made on the first change: ~430 bytes saved per idle tenant)
        self._added: set[int] | None = None  # not in _base
        self._removed: set[int] | None = None  # in _base

    def add(self, slot: int) -> bool:
        """Add a slot; whether it was new."""
        if self._removed and slot in self._removed:
            self._removed.discard(slot)
            return True
        if (self._added and slot in self._added) or slot in self._base:
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
        if (self._removed and slot in self._removed) or slot not in self._base:
            return False
        if self._removed is None:
            self._removed = set()
        self._removed.add(slot)
        return True

    def __contains__(self, slot: int) -> bool:
        if self._added and slot in self._added:
            return True
        return not (self._removed and slot in self._removed) and slot in self._base

    def __len__(self) -> int:
        return len(self._base) + len(self._added or ()) - len(self._removed or ())

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (pending changes not counted)."""
        return self._base.nbytes

    def array(self) -> I64:
        """The slots, sorted, as a new int64 array (merges pending changes first)."""
        if not (self._added or self._removed):
            return self._base.expand()
        base = self._base.expand()
        if self._removed:
            base = base[~np.isin(base, np.fromiter(self._removed, np.int64))]
        if self._added:
            base = np.union1d(base, np.fromiter(self._added, np.int64))
        self._base = Packed(base)
        self._added = self._removed = None
        return base


_BITS = Visible.__dict__["bits"]  # the slot holding a built bitmap


class LazyVisible(Visible):
    """A `Visible` whose bitmap (one bit per slot of the collection: 49 KB at 390,000
    points) is built on first use. A tenant answered from its copy never needs one, so
    most tenant reads build none; built ones are kept only by the caller's small cache."""

    __slots__ = ("_built", "_make", "version")

    def __init__(
        self,
        make: Callable[[], Visible],
        built: Callable[[LazyVisible], None] | None = None,
        version: Hashable | None = None,
    ) -> None:
        self._make: Callable[[], Visible] | None = make
        self._built = built  # told once the bitmap exists (e.g. to cache it)
        self._count = None
        # names the set's version (read before its slots: a set with the same version has
        # the same slots), so derived state can key on it without building the bitmap
        self.version = version

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
            if self._built is not None:
                self._built(self)
                self._built = None
            return built

    @bits.setter
    def bits(self, value: npt.NDArray[np.uint8]) -> None:
        _BITS.__set__(self, value)

    @property
    def built(self) -> bool:
        """Whether the bitmap exists yet."""
        return self._make is None
