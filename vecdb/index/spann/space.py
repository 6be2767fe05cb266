"""The space map of a posting file: which byte extents are live, pending or free.

The data region `[start, end)` (after the header page) is exactly partitioned into *live*
extents (allocated: referenced by the block table, or written and about to be), *pending*
ones (dropped by the table, possibly still referenced by the published checkpoint or by a
search's table) and *free* ones (reusable). The map holds only free extents (a `FreeList`:
sorted int64 arrays by offset to coalesce and by size for best fit, 32 bytes per extent, no
Python object per extent) and pending ones (int64 queues: ~17 bytes per extent); live extents
are the table's. No free byte precedes `end`: space freed at the end lowers `end`, and the
file is cut there. This module owns no file and knows nothing of postings beyond their
extents.

Allocation is best fit under the posting file's page rule (a block of `s` bytes starts 64-byte
aligned and spans no more pages than `ceil(s / 4096)`): the smallest free extents of at least
`s` bytes are probed in (size, offset) order, and an extent of at least `s + 4032` bytes always
fits; only when none can take the block does it go at `end`, so the file grows only then.
Defragmentation moves the postings nearest the end into the lowest free space below them
(`fragmented_postings`, `alloc(below=...)`), so that the tail frees and is cut.

Crash safety. A table tags each block with the checkpoint epoch it was pushed in. A dropped
block from an earlier epoch may be in the published checkpoint (or in the one being
published): it stays pending until `checkpointed(mark)`, called once the manifest naming a
table captured after the release is durable. A block pushed and dropped within the current
epoch is in no checkpoint: it is freed by `checkpointed` too, or earlier by
`readers_done(mark)` once no search can hold a table from before `mark`. So no byte the
published checkpoint references is overwritten and a crash anywhere reopens it intact,
provided `begin_checkpoint()` (which starts a new epoch) is called at the very moment the table
to be published is captured, with no release in between.

Another process's table. A drain child (`drain_child`) opens the parent's checkpoint and
writes into the same file while the parent's searches go on reading that checkpoint's table:
its blocks must outlive every release and checkpoint of the child's map. `hold` names them;
a release of one keeps it out of free space for the map's life (counted as pending), so the
child's splits and merges write around them. The parent's map, rebuilt from the child's last
table when it adopts it, frees them then.

Thread safety: none. Every method runs on the single maintenance thread that also writes the
file; searches never touch the map. They read only blocks of a table they hold, which the rules
above keep from being freed (hence overwritten or cut off) under them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from vecdb.index.spann.freelist import FreeList
from vecdb.kernels.unique import sorted_unique

PAGE = 4096  # the read unit of the posting file
ALIGN = 64  # blocks start on multiples of this and their sizes are multiples of it
UNITS = PAGE // ALIGN  # allocation units per page
PROBES = 8  # best-fit candidates tried before taking the first one sure to fit
PROBES_BELOW = 64  # candidates tried for a block moved towards the start
PROBES_LOW = 32  # lowest free extents also tried by every allocation (lowest placement wins)
DEFRAG_FREE_SHARE = 0.1  # no defragmentation while free space is under this share of the data
BYTES_PER_PENDING = 17  # measured: two int64 in array("q") queues

I64 = npt.NDArray[np.int64]


class NoRoom(Exception):
    """A bounded write found no room below its limit (nothing was written)."""


class Extents(NamedTuple):
    """The blocks a table references: posting id, byte offset and extent size of each."""

    posting: I64
    offset: I64
    size: I64


class HasExtents(Protocol):
    def extents(self) -> Extents: ...


class Mark(NamedTuple):
    """A point in the stream of releases: how many durable and fresh releases came before."""

    durable: int
    fresh: int


@dataclass(frozen=True)
class SpaceStats:
    """Sizes of the posting file's space map (bytes unless named otherwise)."""

    file_bytes: int  # end of the data (the header page included)
    live_bytes: int  # allocated extents: referenced by the table or being written
    pending_bytes: int  # dropped, not reusable before a checkpoint (or a readers' drain)
    free_bytes: int  # reusable now
    free_extents: int  # number of free extents
    largest_free: int  # size of the largest free extent
    fragmentation: float  # 1 - largest_free / free_bytes (0: free space is one extent)
    garbage_share: float  # (pending + free) / data bytes
    map_bytes: int  # memory of the map (estimate from measured per-extent costs)


class SpaceMap:
    """Free and pending extents of one posting file, and its data end."""

    start: int  # first data byte (the header page is never allocated)
    end: int  # end of the last non-free extent; the file needs no byte beyond it
    epoch: int  # checkpoint epoch; tables tag each block with the epoch it was pushed in
    free: FreeList  # free extents (start, length) in ALIGN units
    free_bytes: int  # total of the free extents
    live_bytes: int  # allocated and not released
    pend: tuple[array[int], array[int]]  # durable pending: offsets, sizes (bytes)
    fresh: tuple[array[int], array[int]]  # fresh pending: offsets, sizes (bytes)
    pend_base: int  # durable releases already freed (the queue's front was dropped)
    fresh_base: int  # fresh releases already freed
    pending_bytes: int  # total of both pending queues (and of held extents released)
    held: I64  # sorted offsets of extents another process reads (`hold`): never freed here
    held_bytes: int  # of pending_bytes, the held extents released (no checkpoint frees them)

    def __init__(self, start: int, end: int) -> None:
        """A map of a file whose data ends at `end`, all of it taken to be live until
        `rebuild` says which extents a table references."""
        self.start, self.end, self.epoch = start, max(start, end), 1
        self.free = FreeList()
        self.free_bytes, self.live_bytes = 0, self.end - start
        self.pend, self.fresh = (array("q"), array("q")), (array("q"), array("q"))
        self.pend_base = self.fresh_base = self.pending_bytes = 0
        self.held = np.zeros(0, np.int64)
        self.held_bytes = 0

    def hold(self, offsets: I64) -> None:
        """The extents starting at `offsets` (live now: a table's blocks) are read by
        another process as long as this map lives; a release of one never frees it."""
        self.held = sorted_unique(np.asarray(offsets, np.int64))

    # --- allocate ----------------------------------------------------------------------------

    def alloc(
        self, size: int, grow: bool = True, below: int | None = None, limit: int | None = None
    ) -> int:
        """Offset for a block of `size` bytes (a positive multiple of ALIGN): best fit in a
        free extent, else at the end; -1 if nothing fits and not `grow`, or if growing would
        take the data end past `limit` (the disk guard of maintenance rewrites). With `below` (a
        block moved towards the start to defragment) the file never grows and the lowest
        placement wholly below that offset is taken, among the lowest free extents and the
        best-fitting ones."""
        if size <= 0 or size % ALIGN:
            raise ValueError(f"block size {size} is not a positive multiple of {ALIGN}")
        s = size // ALIGN
        slack = (-s) % UNITS  # latest start inside a page that keeps the page count minimal
        fl = self.free
        if below is not None:
            found = _lowest_fit(fl, s, slack, PROBES_BELOW, PROBES_BELOW, below // ALIGN - s)
            return -1 if found is None else self._take(*found, s)
        # The lowest placement among the best-fitting extents and the lowest extents: lower
        # addresses first keeps the end of the file draining, so it can be cut (best fit
        # alone filled holes near the end as readily as any and pinned the file's length).
        found = _lowest_fit(fl, s, slack, PROBES, PROBES_LOW, None)
        if found is not None:
            return self._take(*found, s)
        fa, fln = fl.fitting(s + UNITS - 1, 1)  # any such extent fits after padding
        if len(fa):
            a0, ln0 = int(fa[0]), int(fln[0])
            return self._take(a0, ln0, _place(a0, ln0, s, slack), s)
        if not grow:
            return -1
        a = self.end // ALIGN
        o = a if a % UNITS <= slack else a + UNITS - a % UNITS
        if limit is not None and (o + s) * ALIGN > limit:
            return -1
        if o > a:
            self._add_free(a, o - a)
        self.end = (o + s) * ALIGN
        self.live_bytes += size
        return o * ALIGN

    def _take(self, a: int, ln: int, o: int, s: int) -> int:
        """Allocate s units at o inside the free extent (a, ln); return the byte offset."""
        self._drop_free(a, ln)
        if o > a:  # the pieces border allocated bytes: nothing to coalesce
            self._insert_free(a, o - a)
        if a + ln > o + s:
            self._insert_free(o + s, a + ln - o - s)
        self.live_bytes += s * ALIGN
        return o * ALIGN

    def place_at_end(self, offsets: I64, sizes: I64) -> None:
        """Record blocks a packer laid out from `end` on (offsets >= end, not overlapping);
        the gaps between them become free."""
        if len(offsets) == 0:
            return
        order = np.argsort(offsets)
        lo, hi = offsets[order], offsets[order] + sizes[order]
        if lo[0] < self.end or (lo[1:] < hi[:-1]).any() or (lo % ALIGN).any():
            raise ValueError("packed blocks overlap the file or each other")
        starts = np.concatenate(([self.end], hi[:-1]))
        for a, b in zip(starts.tolist(), lo.tolist(), strict=True):
            if b > a:
                self._add_free(a // ALIGN, (b - a) // ALIGN)
        self.end = int(hi[-1])
        self.live_bytes += int(sizes.sum())

    # --- release -----------------------------------------------------------------------------

    def release(self, offset: int, size: int, fresh: bool) -> None:
        """A table stopped referencing the extent; `fresh` if it was written in the current
        epoch (no checkpoint references it). Reusable after `checkpointed` (or, if fresh,
        `readers_done`) with a later mark."""
        size = -(-size // ALIGN) * ALIGN
        if offset < self.start or offset + size > self.end or offset % ALIGN:
            raise ValueError(f"release of [{offset}, {offset + size}) outside the data region")
        o, fl = offset // ALIGN, self.free
        i = fl.index_of_start(o)
        near = [fl.by_start(k) for k in range(max(0, i - 1), min(len(fl), i + 1))]
        if any(a < o + size // ALIGN and o < a + ln for a, ln in near):
            raise ValueError(f"release of [{offset}, {offset + size}) overlaps free space")
        self.live_bytes -= size
        self.pending_bytes += size
        held = self.held
        if len(held) and held[min(int(held.searchsorted(offset)), len(held) - 1)] == offset:
            self.held_bytes += size
            return  # another process still reads it (`hold`)
        offs, sizes = self.fresh if fresh else self.pend
        offs.append(offset)
        sizes.append(size)

    @property
    def awaiting_checkpoint(self) -> int:
        """Pending bytes that a checkpoint (or a readers' drain) would free: not held ones."""
        return self.pending_bytes - self.held_bytes

    def mark(self) -> Mark:
        """The current point of the release stream."""
        return Mark(self.pend_base + len(self.pend[0]), self.fresh_base + len(self.fresh[0]))

    def begin_checkpoint(self) -> Mark:
        """Start a new epoch; call it when the table to be published is captured."""
        self.epoch += 1
        return self.mark()

    def checkpointed(self, mark: Mark) -> None:
        """The checkpoint whose table was captured at `mark` is published: every extent
        released before `mark` is free."""
        self.pend_base += self._free_front(self.pend, mark.durable - self.pend_base)
        self.readers_done(mark)

    def readers_done(self, mark: Mark | None = None) -> None:
        """No search holds a table from before `mark` (default: now): fresh extents released
        before it are free (no checkpoint ever referenced them)."""
        upto = self.mark().fresh if mark is None else mark.fresh
        self.fresh_base += self._free_front(self.fresh, upto - self.fresh_base)

    def _free_front(self, queue: tuple[array[int], array[int]], n: int) -> int:
        """Free the first n extents of a pending queue; return how many were freed."""
        offs, sizes = queue
        n = min(n, len(offs))
        if n <= 0:
            return 0
        o = np.array(offs[:n], dtype=np.int64) // ALIGN
        s = np.array(sizes[:n], dtype=np.int64) // ALIGN
        self.pending_bytes -= int(s.sum()) * ALIGN
        if n > len(self.free) // 4:  # many: one vectorised merge of all free extents
            self._merge_free(o, s)
        else:
            for a, ln in zip(o.tolist(), s.tolist(), strict=True):
                self._add_free(a, ln)
        del offs[:n], sizes[:n]
        return n

    # --- rebuild -----------------------------------------------------------------------------

    def rebuild(self, offsets: I64, sizes: I64) -> None:
        """Forget everything but `end`: the given extents (a table's) are live, every other
        byte of the data region is free, nothing is pending or held."""
        order = np.argsort(offsets, kind="stable")
        lo, hi = offsets[order], offsets[order] + sizes[order]
        if len(lo) and (lo[0] < self.start or hi[-1] > self.end or (lo[1:] < hi[:-1]).any()):
            raise ValueError("the table's blocks overlap each other or lie outside the file")
        gap_lo = np.concatenate(([self.start], hi)) // ALIGN
        gap_hi = np.concatenate((lo, [self.end])) // ALIGN
        keep = gap_hi > gap_lo
        self.free, self.free_bytes = FreeList(), 0
        self.pend, self.fresh = (array("q"), array("q")), (array("q"), array("q"))
        self.pend_base = self.fresh_base = self.pending_bytes = 0
        self.held, self.held_bytes = np.zeros(0, np.int64), 0  # (`hold` names this table's)
        self.live_bytes = int(sizes.sum())
        self._merge_free(gap_lo[keep], (gap_hi - gap_lo)[keep])

    def _merge_free(self, offs: I64, lens: I64) -> None:
        """Add many free extents (ALIGN units) at once: coalesce with numpy, reassign the
        free list."""
        a = np.concatenate((self.free.starts(), offs.astype(np.int64)))
        ln = np.concatenate((self.free.lengths(), lens.astype(np.int64)))
        if len(a) == 0:
            return
        order = np.argsort(a, kind="stable")
        a, b = a[order], a[order] + ln[order]
        new = np.ones(len(a), dtype=bool)
        new[1:] = a[1:] != b[:-1]
        first = np.flatnonzero(new)
        last = np.append(first[1:] - 1, len(a) - 1)
        ga, gb = a[first], b[last]
        if int(gb[-1]) * ALIGN == self.end:  # a free tail lowers the end instead
            self.end = int(ga[-1]) * ALIGN
            ga, gb = ga[:-1], gb[:-1]
        self.free.assign(ga, gb - ga)
        self.free_bytes = int((gb - ga).sum()) * ALIGN

    # --- free extents ------------------------------------------------------------------------

    def _add_free(self, a: int, ln: int) -> None:
        """Insert a free extent (ALIGN units), coalescing with its neighbours."""
        fl = self.free
        i = fl.index_of_start(a)
        if i < len(fl):
            b, m = fl.by_start(i)
            if b == a + ln:
                self._drop_free(b, m)
                ln += m
        if i > 0:
            b, m = fl.by_start(i - 1)
            if b + m == a:
                self._drop_free(b, m)
                a, ln = b, ln + m
        if (a + ln) * ALIGN == self.end:
            self.end = a * ALIGN
            return
        self._insert_free(a, ln)

    def _insert_free(self, a: int, ln: int) -> None:
        self.free.add(a, ln)
        self.free_bytes += ln * ALIGN

    def _drop_free(self, a: int, ln: int) -> None:
        self.free.remove(a, ln)
        self.free_bytes -= ln * ALIGN

    def free_extents(self) -> list[tuple[int, int]]:
        """(offset, size) in bytes of every free extent, by offset."""
        a, ln = self.free.starts() * ALIGN, self.free.lengths() * ALIGN
        return list(zip(a.tolist(), ln.tolist(), strict=True))

    # --- stats -------------------------------------------------------------------------------

    def stats(self) -> SpaceStats:
        largest = self.free.largest() * ALIGN
        data = max(1, self.end - self.start)
        n_pend = len(self.pend[0]) + len(self.fresh[0])
        return SpaceStats(
            file_bytes=self.end,
            live_bytes=self.live_bytes,
            pending_bytes=self.pending_bytes,
            free_bytes=self.free_bytes,
            free_extents=len(self.free),
            largest_free=largest,
            fragmentation=1.0 - largest / self.free_bytes if self.free_bytes else 0.0,
            garbage_share=(self.pending_bytes + self.free_bytes) / data,
            map_bytes=self.free.nbytes + BYTES_PER_PENDING * n_pend,
        )

    def fragmented_postings(
        self, table: HasExtents, limit: int, min_free_share: float = DEFRAG_FREE_SHARE
    ) -> I64:
        """Postings to move towards the start of the file, up to `limit`: none while free
        space is under `min_free_share` of the data; else those whose blocks end nearest the
        end of the file first. Rewriting each into free space below its blocks (`PostingFile.
        move`) lets the tail become free and be truncated at the next checkpoint. (Tail
        first beat emptiest-region first in simulated churn: see the tests.)"""
        st = self.stats()
        ext = table.extents()
        if (
            limit <= 0
            or len(ext.posting) == 0
            or st.free_bytes < min_free_share * max(1, st.file_bytes - self.start)
        ):
            return np.empty(0, dtype=np.int64)
        last = np.full(int(ext.posting.max()) + 1, -1, dtype=np.int64)
        np.maximum.at(last, ext.posting, ext.offset + ext.size)
        cand = np.flatnonzero(last >= 0)
        out: I64 = cand[np.argsort(-last[cand], kind="stable")][:limit].astype(np.int64)
        return out


def _lowest_fit(
    fl: FreeList, s: int, slack: int, best: int, low: int, limit: int | None
) -> tuple[int, int, int] | None:
    """(start, length, placement) of the lowest placement of s units, at most `limit`,
    among the `best` smallest extents of at least s units and the `low` lowest extents; None
    if none fits. (At most ~130 candidates: a Python loop beats a dozen small numpy calls.)"""
    ba, bl = fl.fitting(s, best)
    la, ll = fl.lowest(low)
    out: tuple[int, int, int] | None = None
    for a, ln in zip(ba.tolist() + la.tolist(), bl.tolist() + ll.tolist(), strict=True):
        o = _place(a, ln, s, slack)
        if o >= 0 and (limit is None or o <= limit) and (out is None or o < out[2]):
            out = (a, ln, o)
    return out


def _place(a: int, ln: int, s: int, slack: int) -> int:
    """Where s units go in the free extent (a, ln) under the page rule, in units; -1 if they
    do not fit. At its start if that keeps the page count; else at its end (one piece left
    instead of two); else at its next page boundary."""
    if a % UNITS <= slack:
        return a if s <= ln else -1
    hi = a + ln - s
    if hi >= a and hi % UNITS <= slack:
        return hi
    o = a + UNITS - a % UNITS
    return o if o + s <= a + ln else -1
