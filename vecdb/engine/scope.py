"""`Scope`: the set of live slots a read is restricted to, and how to search within it.

The tenant layer (`tenant_reads`) makes one for a tenant, several tenants, or a global read
while a dropped tenant's points wait for their cleanup; the read path (`reader`) intersects
filters with it and calls its `walk` for index searches. `Scope` holds its sets (made on first use) and its
walk; `matching` and `pairs_from` answer filters and scroll pages within a small scope from
its own points instead of the whole collection's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.filters import Filter
from vecdb.index.base import Visible

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
# (prepared queries, k, params, the visible subset, its sorted slots) -> top-k (slots, dist)
Walk = Callable[[F32, int, "dict[str, Any] | None", Visible, I64], tuple[I64, F32]]


class Scope:
    """The live slots a read may see, and how to search a subset of them. `slots` and
    `visible` are made by `make` on first use: a global read while a tenant is dropped needs
    neither for a get or a scroll page (`member` answers `has` without them)."""

    def __init__(
        self,
        make: Callable[[], tuple[I64, Visible]],
        walk: Walk,
        key: str,
        member: Callable[[I64], npt.NDArray[np.bool_]] | None = None,
        size: Callable[[], int] | None = None,
    ) -> None:
        self._make: Callable[[], tuple[I64, Visible]] | None = make
        self._size = size  # the number of slots without the sets (None: from them)
        self._sets: tuple[I64, Visible] | None = None
        self._member = member  # membership of live slots without the sets (None: from them)
        self._lock = threading.Lock()  # one build when several readers share the scope
        self.walk = walk  # searches index + buffer within a subset of `slots`
        self.key = key  # names the set in cache keys (changes whenever the set does)

    @classmethod
    def of(cls, slots: I64, visible: Visible, walk: Walk, key: str) -> Scope:
        """A scope over sets already made."""
        scope = cls(lambda: (slots, visible), walk, key)
        scope._sets, scope._make = (slots, visible), None
        return scope

    def _built(self) -> tuple[I64, Visible]:
        sets = self._sets
        if sets is None:
            with self._lock:
                if self._sets is None:
                    assert self._make is not None
                    self._sets, self._make = self._make(), None
                sets = self._sets
        return sets

    @property
    def slots(self) -> I64:
        """Sorted, unique live slots."""
        return self._built()[0]

    @property
    def visible(self) -> Visible:
        """The same set as a bitmap."""
        return self._built()[1]

    @property
    def made(self) -> bool:
        """Whether `slots` and `visible` exist yet."""
        return self._sets is not None

    @property
    def size(self) -> int:
        """The number of slots in the scope."""
        if self._size is not None and self._sets is None:
            return self._size()
        return len(self.slots)

    def has(self, slots: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Membership of each slot (vectorised; with `member`, of live slots)."""
        s = np.asarray(slots, np.int64)
        if self._member is not None and self._sets is None:
            return self._member(s)
        mine = self.slots
        if len(mine) == 0:
            return np.zeros(s.shape, np.bool_)
        i = np.minimum(np.searchsorted(mine, s), len(mine) - 1)
        return np.asarray(mine[i] == s, np.bool_)

    def within(self, pairs: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
        """Of (item, slot) pairs, in order, those whose slot is in the scope (a get's ids:
        the others look absent)."""
        if not pairs:
            return pairs
        inside = self.has([s for _, s in pairs]).tolist()
        return [p for p, ok in zip(pairs, inside, strict=True) if ok]

    def mask(self, n: int) -> npt.NDArray[np.bool_]:
        """The set as a mask over slots 0 .. n - 1."""
        out = np.zeros(n, np.bool_)
        mine = self.slots
        out[mine[mine < n]] = True
        return out


SMALL_SHARE = 8  # a scope of at most 1/8 of the points is read point by point


def is_small(coll: CollectionCore, scope: Scope) -> bool:
    return scope.size * SMALL_SHARE <= coll.points.count


def matching(coll: CollectionCore, flt: Filter, scope: Scope) -> npt.NDArray[np.bool_]:
    """The live slots of the scope the filter selects (a mask over all slots): from payload
    indexes when they answer, else, for a small scope, by reading only its payloads."""
    planned = coll.selector.planned(flt)
    if planned is None and is_small(coll, scope):
        out = np.zeros(coll.points.next_slot, np.bool_)
        slots = scope.slots[scope.slots < len(out)].tolist()
        for lo in range(0, len(slots), 4096):
            part = slots[lo : lo + 4096]
            for s, pay in zip(part, coll.points.payloads(part), strict=True):
                out[s] = flt.matches(pay)
        return out
    m = coll.selector.matching(flt) if planned is None else planned
    return m & scope.mask(len(m))


def pairs_from(
    coll: CollectionCore, scope: Scope, start: bytes | None
) -> Iterator[tuple[bytes, int]]:
    """(encoded id, slot) of the scope's points in ascending id order from `start` on (the
    order of `PointTable.id_range`), for a scroll within a small scope."""
    ids = coll.points.ids_of(scope.slots).tolist()
    pad = (-1, None)
    pairs = sorted(
        (v.encode_id(i), int(s)) for i, s in zip(ids, scope.slots.tolist(), strict=True)
        if i not in pad
    )  # fmt: skip
    for key, slot in pairs:
        if start is None or key >= start:
            yield key, slot
