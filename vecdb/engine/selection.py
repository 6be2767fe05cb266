"""Which live points a filter selects, with payload indexes when they can answer it.

Owns `Selector`: for a compiled filter, the mask of matching live slots, from the payload
indexes when every condition is answerable by a ready index (`PayloadIndexes.plan`), else by
reading payloads (only the stored ones when the filter cannot match an empty payload, every
live point's otherwise, through one `View` of the store so that a write meanwhile is seen
whole or not at all); and a cache of such answers (and of what the read path derives from
them, e.g. the vectors of an exact scan), keyed by the filter and the collection's write
version, so repeated searches with one filter between writes cost one lookup. The cache is
emptied by every write and bounded in bytes (`max_bytes`, least recently used answers go
first; an answer larger than the whole budget is not kept). Takes no lock of the
collection; callers that need a stable answer (delete by filter) hold its write lock.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from vecdb.engine.filters import Filter
from vecdb.engine.payload_index import PayloadIndexes
from vecdb.engine.points import PointTable
from vecdb.storage.kv import View

CACHE_ENTRIES = 32  # answers kept per collection (all dropped at the next write)
CACHE_BYTES = 64 * 2**20  # bytes of cached answers per collection, least recently used out
_SCAN_CHUNK = 4096  # payloads read per multi_get when every live point must be tested

Mask = npt.NDArray[np.bool_]
T = TypeVar("T")


def held_bytes(value: object) -> int:
    """Bytes of the numpy arrays inside a cached answer (arrays, tuples and lists of them,
    objects with array attributes such as `Visible`); Python overhead is not counted."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(held_bytes(v) for v in value)
    slots = getattr(type(value), "__slots__", ())
    return sum(held_bytes(getattr(value, a, None)) for a in slots if a != "__weakref__")


class Selector:
    """Filter -> matching live slots for one collection."""

    def __init__(
        self, points: PointTable, pindex: PayloadIndexes, max_bytes: int = CACHE_BYTES
    ) -> None:
        self.points = points  # the collection's point table
        self.pindex = pindex  # its payload indexes
        self.max_bytes = max_bytes  # cache budget in bytes
        self.version = 0  # bumped after every committed change of points or payloads
        # (tag, filter) -> (answer, bytes) at _cache_version, least recently used first
        self._cache: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._cache_bytes = 0  # sum of the cached answers' bytes
        self._cache_version = 0
        self._lock = threading.Lock()
        self.hits = 0  # answers served from the cache
        self.misses = 0  # answers computed
        self.evictions = 0  # answers dropped to stay within the budget
        # filter -> payloads its unindexed searches have read since the last write
        # (`charge`): once they add up to what a scan reads, the filter is scanned
        self._tally: dict[str, int] = {}

    def bump(self) -> None:
        """A write was committed: cached answers are stale and their memory is given back
        (caller holds the write lock)."""
        self.version += 1
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0
            self._cache_version = self.version
            self._tally.clear()

    def cached(self, tag: str, flt: Filter, compute: Callable[[], T]) -> T:
        """`compute()`'s answer for (tag, flt), reused until the next write."""
        version = self.version  # read before computing: a write meanwhile makes it stale
        key = (tag, repr(flt.root))  # repr tells True, 1 and 1.0 apart (hash does not)
        with self._lock:
            if self._cache_version == version and key in self._cache:
                self._cache.move_to_end(key)
                self.hits += 1
                return self._cache[key][0]  # type: ignore[no-any-return]
            self.misses += 1
        value = compute()
        size = held_bytes(value)
        with self._lock:
            if self._cache_version != version:
                if version < self._cache_version:
                    return value
                self._cache.clear()
                self._cache_bytes, self._cache_version = 0, version
            if size > self.max_bytes:
                return value  # would evict everything and still not fit
            old = self._cache.pop(key, None)
            if old is not None:
                self._cache_bytes -= old[1]
            while self._cache and (
                self._cache_bytes + size > self.max_bytes or len(self._cache) >= CACHE_ENTRIES
            ):
                _, (_, dropped) = self._cache.popitem(last=False)
                self._cache_bytes -= dropped
                self.evictions += 1
            self._cache[key] = (value, size)
            self._cache_bytes += size
        return value

    def scanned(self, flt: Filter) -> Mask | None:
        """The matching live slots of an unindexed filter if they were read since the last
        write (a cached `matching`), else None; computes nothing."""
        with self._lock:
            if self._cache_version != self.version:
                return None
            got = self._cache.get(("scan", repr(flt.root)))
        return None if got is None else got[0]

    def charge(self, flt: Filter, reads: int) -> bool:
        """Count `reads` payloads read by a search of an unindexed filter; True once those
        since the last write add up to the live points, which one scan of the payloads
        would read (then `matching` reads them once for every later search until a write:
        never more than twice the reads of the cheaper way, whether writes come often or
        not)."""
        key = repr(flt.root)
        with self._lock:
            total = self._tally.get(key, 0) + reads
            if len(self._tally) < CACHE_ENTRIES or key in self._tally:
                self._tally[key] = total
        return total >= self.points.count

    def cache_stats(self) -> dict[str, int]:
        """What the cache holds now and has done (for `stats()`)."""
        with self._lock:
            return {
                "entries": len(self._cache),
                "bytes": self._cache_bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

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

    def planned_at(self, flt: Filter, view: View) -> Mask | None:
        """The slots matching `flt` at the instant of `view`, from payload indexes alone (a
        mask over the slots `view` knows of), or None when they cannot answer every
        condition. Cached by the view's sequence: scroll pages read while nothing is
        written share one answer."""
        if not self.pindex.answerable(flt):
            return None

        def compute() -> Mask:
            # Only live points have entries; negations are taken within every known slot,
            # and the caller keeps the slots live in the view.
            every = np.ones(self.points.stored_next_slot(view), np.bool_)
            mask = self.pindex.plan(flt, every, view)
            assert mask is not None  # answerable
            return mask

        return self.cached(f"plan@{view.seq}", flt, compute)

    def _scan(self, flt: Filter) -> Mask:
        # Memory first, then the view: a point written in between is not in `alive`, and
        # one deleted in between has no payload in the view (deletes win, adds wait).
        alive = self.points.alive()
        out = np.zeros(len(alive), np.bool_)
        n = len(alive)
        with self.points.kv.view() as view:
            if not flt.matches({}):
                # Points without a payload cannot match: read only the stored payloads.
                for slot, raw in self.points.stored_payloads(view):
                    if slot < n and alive[slot] and flt.matches(json.loads(raw)):
                        out[slot] = True
                return out
            live = np.flatnonzero(alive)
            for lo in range(0, len(live), _SCAN_CHUNK):
                part = live[lo : lo + _SCAN_CHUNK].tolist()
                pays = self.points.payloads(part, view)
                there = self.points.slot_rows(part, view)
                for slot, pay, ok in zip(part, pays, there, strict=True):
                    if ok and flt.matches(pay):
                        out[slot] = True
        return out
