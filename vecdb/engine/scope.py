"""`Scope`: the set of live slots a read is restricted to, and how to search within it.

The tenant layer (`tenant_reads`) makes one for a tenant, several tenants, or a global read
while a dropped tenant's points wait for their cleanup; the read path (`reader`) intersects
filters with it and calls its `walk` for index searches. `Scope` itself is a value object; `matching` and `pairs_from` answer filters and scroll
pages within a small scope from its own points instead of the whole collection's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Scope:
    """The live slots a read may see, and how to search a subset of them."""

    slots: I64  # sorted, unique
    visible: Visible  # the same set as a bitmap
    walk: Walk  # searches index + buffer within a subset of `slots`
    key: str  # names the set in cache keys (changes whenever the set does)

    def has(self, slots: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Membership of each slot (vectorised)."""
        s = np.asarray(slots, np.int64)
        if len(self.slots) == 0:
            return np.zeros(s.shape, np.bool_)
        i = np.minimum(np.searchsorted(self.slots, s), len(self.slots) - 1)
        return np.asarray(self.slots[i] == s, np.bool_)

    def mask(self, n: int) -> npt.NDArray[np.bool_]:
        """The set as a mask over slots 0 .. n - 1."""
        out = np.zeros(n, np.bool_)
        out[self.slots[self.slots < n]] = True
        return out


SMALL_SHARE = 8  # a scope of at most 1/8 of the points is read point by point


def is_small(coll: CollectionCore, scope: Scope) -> bool:
    return len(scope.slots) * SMALL_SHARE <= coll.points.count


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
