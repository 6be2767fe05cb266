"""Which live points a filter selects, with payload indexes when they can answer it.

Owns `Selector`: for a compiled filter, the mask of matching live slots, from the payload
indexes when every condition is answerable by a ready index (`PayloadIndexes.plan`), else by
reading payloads (only the stored ones when the filter cannot match an empty payload, every
live point's otherwise); and a small cache of such answers (and of what the read path derives
from them), keyed by the filter and the collection's write version, so repeated searches with
one filter between writes cost one lookup. Takes no lock; callers that need a stable answer
(delete by filter) hold the collection's write lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from vecdb.engine.filters import Filter
from vecdb.engine.payload_index import PayloadIndexes
from vecdb.engine.points import PointTable

CACHE_ENTRIES = 32  # answers kept per collection (dropped at the next write)
_SCAN_CHUNK = 4096  # payloads read per multi_get when every live point must be tested

Mask = npt.NDArray[np.bool_]
T = TypeVar("T")


class Selector:
    """Filter -> matching live slots for one collection."""

    def __init__(self, points: PointTable, pindex: PayloadIndexes) -> None:
        self.points = points  # the collection's point table
        self.pindex = pindex  # its payload indexes
        self.version = 0  # bumped after every committed change of points or payloads
        self._cache: dict[tuple[str, str], Any] = {}  # (tag, filter) -> answer at _cache_version
        self._cache_version = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        """A write was committed: cached answers are stale (caller holds the write lock)."""
        self.version += 1

    def cached(self, tag: str, flt: Filter, compute: Callable[[], T]) -> T:
        """`compute()`'s answer for (tag, flt), reused until the next write."""
        version = self.version  # read before computing: a write meanwhile makes it stale
        key = (tag, repr(flt.root))  # repr tells True, 1 and 1.0 apart (hash does not)
        with self._lock:
            if self._cache_version == version and key in self._cache:
                return self._cache[key]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            if self._cache_version != version:
                if version < self._cache_version:
                    return value
                self._cache, self._cache_version = {}, version
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = value
        return value

    def planned(self, flt: Filter) -> Mask | None:
        """The matching live slots from payload indexes alone, or None when they cannot
        answer every condition."""
        if not self.pindex.answerable(flt):
            return None
        return self.cached("plan", flt, lambda: self.pindex.plan(flt, self.points.alive()))

    def matching(self, flt: Filter) -> Mask:
        """The matching live slots (a mask over slots 0 .. next_slot - 1), from the indexes
        when they can answer, else by reading payloads."""
        planned = self.planned(flt)
        if planned is not None:
            return planned
        return self.cached("scan", flt, lambda: self._scan(flt))

    def _scan(self, flt: Filter) -> Mask:
        alive = self.points.alive()
        out = np.zeros(len(alive), np.bool_)
        n = len(alive)
        if not flt.matches({}):
            # Points without a payload cannot match: read only the stored payloads.
            for slot, raw in self.points.stored_payloads():
                if slot < n and alive[slot] and flt.matches(json.loads(raw)):
                    out[slot] = True
            return out
        live = np.flatnonzero(alive)
        for lo in range(0, len(live), _SCAN_CHUNK):
            part = live[lo : lo + _SCAN_CHUNK].tolist()
            for slot, pay in zip(part, self.points.payloads(part), strict=True):
                if flt.matches(pay):
                    out[slot] = True
        return out
