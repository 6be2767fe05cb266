"""The exact write buffer in front of a disk index, and the backpressure on writers.

Owns up to two segments of recent writes, each an exact in-memory `FlatIndex`: the *active*
segment that upserts append to, and the *frozen* segment that the maintenance worker is
moving into the index. Searches take a snapshot of both (before they search the index, so a
segment moved into the index meanwhile is still covered; the merge drops duplicates), deletes
clear rows in both, and `freeze` / `release` hand segments to and back from the worker.
Writers wait in `wait_for_room` while the segments hold more than the cap, for a bounded time
(`ResourceExhausted` after it); the waits are counted for metrics. The cap is on memory: rows
a segment holds in file-backed chunks (`FlatIndex` spilling, or a build's staged input) count
only beyond `spill_limit`. Knows nothing of RocksDB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vecdb.errors import BUFFER_FULL, ResourceExhausted
from vecdb.index.base import Slots, Spill, Vectors
from vecdb.index.flat import FlatIndex


@dataclass
class StallStats:
    """Backpressure counters of one buffer (cumulative)."""

    stalls: int = 0  # writes that had to wait
    stall_seconds: float = 0.0  # total time writers waited
    rejected: int = 0  # writes refused after waiting the whole timeout


class WriteBuffer:
    """Active and frozen segments of one collection's buffered writes."""

    def __init__(
        self,
        dim: int,
        metric: str,
        spill: Callable[[], Spill] | None = None,
        spill_from: int = 0,
        spill_limit: int = 0,
    ) -> None:
        self.dim = dim  # vector dimension
        self.metric = metric  # the collection's metric (vectors arrive prepared for it)
        # a segment's rows past `spill_from` bytes go to chunks of its own `spill()` (which
        # gives none when they should not: e.g. the index is built); file-backed bytes
        # beyond `spill_limit` count against the cap like memory
        self._spill, self._spill_from, self._spill_limit = spill, spill_from, spill_limit
        self.active = self._segment()  # takes new writes
        self.frozen: FlatIndex | None = None  # being moved into the index by the worker
        self.stats = StallStats()
        self._room = threading.Condition()  # writers waiting for the worker to make room

    # -- writers --------------------------------------------------------------------------

    def add(self, slots: Slots, vectors: Vectors) -> None:
        """Append to the active segment (caller holds the collection's write lock)."""
        self.active.add(slots, vectors)

    def remove(self, slots: Slots) -> None:
        """Clear rows of `slots` wherever they are buffered."""
        frozen = self.frozen
        self.active.remove(slots)
        if frozen is not None:
            frozen.remove(slots)

    def wait_for_room(self, nbytes: int, cap: int, timeout: float, name: str) -> None:
        """Block while the segments hold more than `cap` bytes and the incoming `nbytes`
        would not fit, at most `timeout` seconds; then `ResourceExhausted`."""
        held = self.held_bytes()
        if held + nbytes <= cap or held == 0:
            return
        start = time.monotonic()
        deadline = start + timeout
        with self._room:
            self.stats.stalls += 1
            while self.held_bytes() + nbytes > cap and self.held_bytes() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats.rejected += 1
                    self.stats.stall_seconds += time.monotonic() - start
                    raise ResourceExhausted(
                        f"collection {name!r}: the write buffer is full "
                        f"({self.held_bytes() / 2**20:.0f} MiB of vectors waiting to be "
                        f"indexed, cap {cap / 2**20:.0f} MiB); retry shortly",
                        reason=BUFFER_FULL,
                        retry_after=max(1.0, timeout / 4),
                    )
                self._room.wait(min(left, 0.25))
            self.stats.stall_seconds += time.monotonic() - start

    # -- readers --------------------------------------------------------------------------

    def snapshot(self) -> list[FlatIndex]:
        """The segments a search must cover, taken before the index is searched."""
        frozen = self.frozen
        return [self.active] if frozen is None else [self.active, frozen]

    def __len__(self) -> int:
        """Live buffered vectors (a frozen segment being applied counts until released)."""
        frozen = self.frozen
        return len(self.active) + (0 if frozen is None else len(frozen))

    def held_bytes(self) -> int:
        """Bytes of vectors the segments hold in memory, plus those on file beyond
        `spill_limit` (what backpressure caps)."""
        frozen = self.frozen
        parts = [self.active] if frozen is None else [self.active, frozen]
        live = sum(p.live_bytes for p in parts)
        spilled = self.spilled_bytes()
        return max(0, live - spilled) + max(0, spilled - self._spill_limit)

    def spilled_bytes(self) -> int:
        """Bytes of buffered rows in file-backed chunks (page cache, not this process's
        memory)."""
        frozen = self.frozen
        return self.active.spilled_bytes + (0 if frozen is None else frozen.spilled_bytes)

    def close(self) -> None:
        """Let the segments' rows go (and a spill's files with them): the collection is
        closed and its buffer comes back from RocksDB at the next open."""
        frozen = self.frozen
        self.active.close()
        if frozen is not None:
            frozen.close()

    # -- the worker -----------------------------------------------------------------------

    def freeze(self) -> FlatIndex:
        """Hand the active segment to the worker and start a new one (caller holds the
        collection's write lock, so no write is half applied)."""
        assert self.frozen is None, "one frozen segment at a time"
        self.frozen, self.active = self.active, self._segment()
        return self.frozen

    def release(self) -> None:
        """The frozen segment is in the index now: drop it and wake waiting writers."""
        self.frozen = None
        with self._room:
            self._room.notify_all()

    def thaw(self) -> None:
        """A job on the frozen segment failed: put its rows back in front of the active
        ones, so nothing buffered is lost (caller holds the collection's write lock)."""
        frozen = self.frozen
        if frozen is None:
            return
        merged = self._segment()
        for part in (frozen, self.active):
            for slots, vectors in part.iter_live(65_536):
                merged.add(slots, np.ascontiguousarray(vectors))
        self.active, self.frozen = merged, None

    def _segment(self) -> FlatIndex:
        spill = None if self._spill is None else self._spill()
        return FlatIndex(self.dim, self.metric, spill, self._spill_from)
