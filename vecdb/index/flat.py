"""The flat index: exact search over vectors held in memory, in chunks.

Owns float32 row chunks (appends fill the last chunk and then open a new one, so growth never
copies what is stored), the slot of each row (ascending: the engine hands out slots in
increasing order, so a slot's row is found by binary search), and a per-row valid flag.
Search is an exact scan of each chunk with the numba kernels, merged. Nothing is persisted:
the engine rebuilds it from stored vectors on open. It is both the `flat` index kind and the
engine's exact write buffer in front of disk indexes.

Spilling: a buffer given a `spill` (`base.Spill`: the engine's maps ranges of one file on the
index's disk, where a load too large for memory waits for its one bulk build) opens its
chunks past `spill_from` bytes there; `spilled_bytes` counts the rows on file, which the
buffer's memory cap does not. A spill that gives no chunk once (no room on the disk) is not
asked again. Dead rows on file are compacted away (into memory, the spill starting a new
file) only once the live rows fit under `spill_from`; a larger live set waits for its build,
which the engine starts when the rows on file, dead or alive, reach its spill limit.
`consolidate` hands such a segment over as the spill's file gathered whole
(no copy of the rows on file) when every row is live.

Thread safety: writes (build, add, remove, maintain, consolidate) serialise on an internal
lock; a search takes a snapshot of the chunk list and row count under that lock and scans
without it, so writes never wait for a scan (rows appended after the snapshot are not seen,
a row removed before the search began is never returned).
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.index.base import IndexResult, Progress, SearchStats, Slots, Spill, Vectors, Visible
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk
from vecdb.kernels.unique import sorted_unique

CHUNK_BYTES = 16 * 2**20  # a chunk holds at most about this many bytes of vectors ...
MIN_CHUNK_ROWS = 1024  # ... and at least this many rows (or a quarter of those stored)
_COMPACT_DEAD_FRACTION = 0.5  # the rows are rewritten once half of them are dead ...
_COMPACT_MIN_WASTE = 4 * MIN_CHUNK_ROWS  # ... and at least this many rows (dead or slack)
SPILL_CHUNK_BYTES = 64 * 2**20  # a spilled chunk (a file mapping) holds at most this many bytes


def _gather(
    chunks: list[npt.NDArray[np.float32]], starts: list[int], keep: npt.NDArray[np.bool_], dim: int
) -> npt.NDArray[np.float32]:
    """The rows of the first len(keep) rows that `keep` marks, as one matrix, in row order."""
    out = np.empty((int(keep.sum()), dim), np.float32)
    at, n = 0, len(keep)
    for i, chunk in enumerate(chunks):
        lo, hi = starts[i], min(starts[i + 1], n)
        if hi <= lo:
            break
        rows = chunk[: hi - lo][keep[lo:hi]]
        out[at : at + len(rows)] = rows
        at += len(rows)
    return out


def _grow(a: npt.NDArray[Any], n: int, fill: Any) -> npt.NDArray[Any]:
    if n <= len(a):
        return a
    out = np.full(max(n, 2 * len(a), MIN_CHUNK_ROWS), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


class FlatIndex:
    """Exact search; add appends rows, remove clears a row's valid flag."""

    kind = "flat"
    persistent = False
    max_abs_component: float | None = None

    dim: int  # vector dimension
    metric: str  # "l2" | "ip" | "cosine" (cosine rows are unit vectors)
    _chunks: list[Vectors]  # row chunks; chunk i holds rows _starts[i] .. _starts[i + 1]
    _starts: list[int]  # first row of each chunk, plus the capacity end
    _slots: Slots  # slot of each row, ascending over rows in use
    _valid: npt.NDArray[np.bool_]  # row is live
    _n: int  # rows in use (live + dead)
    _live: int  # live rows
    _removed_ahead: set[int]  # slots removed before they were added (remove wins)
    _sealed: bool  # consolidated for a bulk build: takes no more adds
    _has_file: bool  # some chunk may be file-backed (spilled, adopted, gathered): compacted
    # only when the live rows fit in memory under `_spill_from`
    _epoch: int  # bumped when the rows are replaced (build, reset, compaction)
    _lock: threading.Lock  # serialises writers and snapshots
    _spill: Spill | None  # where chunks past `_spill_from` bytes are opened (None: memory)
    _spilling: bool  # new chunks past `_spill_from` still go to `_spill` (it had room)

    def __init__(
        self, dim: int, metric: str, spill: Spill | None = None, spill_from: int = 0
    ) -> None:
        self.dim = dim
        self.metric = metric
        self._spill, self._spill_from = spill, spill_from
        self._spilling = spill is not None
        self._lock = threading.Lock()
        self._epoch = 0
        self._reset()

    def _reset(self) -> None:
        self._chunks, self._starts = [], [0]
        self._slots = np.zeros(0, np.int64)
        self._valid = np.zeros(0, np.bool_)
        self._n = self._live = 0
        self._removed_ahead = set()
        self._sealed = False
        self._has_file = False
        self._epoch += 1

    # -- build / add ---------------------------------------------------------------------

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Adopt `vectors` as the only chunk (no copy if it is C-contiguous float32); the
        caller must not modify it afterwards. Slots must be strictly ascending."""
        slots = np.ascontiguousarray(slots, np.int64)
        n = len(slots)
        if vectors.shape != (n, self.dim):
            raise InvalidArgument(f"expected ({n}, {self.dim}) vectors, got {vectors.shape}")
        _check_ascending(slots, -1)
        matrix = np.ascontiguousarray(vectors, np.float32)
        with self._lock:
            removed = self._removed_ahead
            self._reset()
            valid = np.ones(n, np.bool_)
            if removed:
                valid &= ~np.isin(slots, np.fromiter(removed, np.int64, len(removed)))
            self._chunks, self._starts = ([matrix], [0, n]) if n else ([], [0])
            self._has_file = _on_file(matrix)
            self._slots, self._valid = slots.copy(), valid
            self._n, self._live = n, int(valid.sum())
            self._removed_ahead = {s for s in removed if n == 0 or s > int(slots[-1])}
        if progress is not None:
            progress("build", n, n)

    def add(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Append rows; slots must be ascending and above every slot added before."""
        slots = np.ascontiguousarray(slots, np.int64)
        n = len(slots)
        if n == 0:
            return
        if vectors.shape != (n, self.dim):
            raise InvalidArgument(f"expected ({n}, {self.dim}) vectors, got {vectors.shape}")
        with self._lock:
            if self._sealed:
                raise RuntimeError("this buffer was consolidated for a build; it takes no adds")
            _check_ascending(slots, int(self._slots[self._n - 1]) if self._n else -1)
            valid = np.ones(n, np.bool_)
            if self._removed_ahead:
                gone = np.isin(slots, np.fromiter(self._removed_ahead, np.int64))
                valid &= ~gone
                self._removed_ahead.difference_update(slots[gone].tolist())
            self._slots = _grow(self._slots, self._n + n, -1)
            self._valid = _grow(self._valid, self._n + n, False)
            self._slots[self._n : self._n + n] = slots
            self._valid[self._n : self._n + n] = valid
            done = 0
            while done < n:
                if self._n == self._starts[-1]:
                    self._new_chunk(n - done)
                chunk = self._chunks[-1]
                at = self._n - self._starts[-2]
                take = min(n - done, chunk.shape[0] - at)
                chunk[at : at + take] = vectors[done : done + take]
                self._n += take
                done += take
            self._live += int(valid.sum())
            due = self._waste_due()
        if due:  # overwrites of a few hot points must not grow the rows without bound
            self._compact()
        if progress is not None:
            progress("add", n, n)

    def _new_chunk(self, want: int) -> None:
        row = 4 * self.dim
        chunk = None
        if self._spill is not None and self._spilling and self._n * row >= self._spill_from:
            size = min(SPILL_CHUNK_BYTES, max(CHUNK_BYTES, self._spill_from))
            chunk = self._spill.rows(self._starts[-1], max(MIN_CHUNK_ROWS, size // row))
            if chunk is None:
                self._spilling = False  # no room: memory from now on
            else:
                self._has_file = True
        if chunk is None:
            rows = min(
                max(MIN_CHUNK_ROWS, self._n // 4, want), max(MIN_CHUNK_ROWS, CHUNK_BYTES // row)
            )
            if self._spilling:  # memory ends near `spill_from` (a big add would pass it)
                rows = min(rows, max(MIN_CHUNK_ROWS, self._spill_from // row - self._n))
            chunk = np.empty((rows, self.dim), np.float32)
        self._chunks = [*self._chunks, chunk]
        self._starts = [*self._starts, self._starts[-1] + len(chunk)]

    @property
    def spills(self) -> bool:
        """Whether rows past `spill_from` bytes go to file chunks (a spill that has not yet
        found the disk short)."""
        return self._spilling

    @property
    def spilled_bytes(self) -> int:
        """Bytes of the rows in use that sit in file-backed chunks (page cache, not memory
        of this process: a spilled chunk, or a build's staged input adopted or gathered)."""
        if not self._has_file:  # (every write asks, through the buffer's cap)
            return 0
        chunks, starts, n = self._chunks, self._starts, self._n
        rows = 0
        for i, chunk in enumerate(chunks):
            if _on_file(chunk):
                rows += max(0, min(starts[i + 1], n) - starts[i])
        return rows * 4 * self.dim

    # -- search --------------------------------------------------------------------------

    def search(
        self,
        queries: Vectors,
        k: int,
        params: Mapping[str, Any] | None = None,
        visible: Visible | None = None,
    ) -> IndexResult:
        if params:
            raise InvalidArgument(f"the flat index takes no search params, got {sorted(params)}")
        return self.scan(queries, k, visible)

    def scan(self, queries: Vectors, k: int, visible: Visible | None = None) -> IndexResult:
        """Exact top-k over the live rows (and `visible`, if given)."""
        nq = queries.shape[0]
        ids = np.full((nq, k), -1, np.int64)
        dist = np.full((nq, k), np.inf, np.float32)
        with self._lock:
            chunks, starts, n = self._chunks, self._starts, self._n
            slots, valid = self._slots, self._valid
        stats = SearchStats(queries=nq)
        for i, chunk in enumerate(chunks):
            lo, hi = starts[i], min(starts[i + 1], n)
            if hi <= lo:
                break
            ok = valid[lo:hi]
            if visible is not None:
                ok = ok & visible.contains(slots[lo:hi])
            if not ok.any():
                continue
            rows, d = exact_topk(queries, chunk[: hi - lo], self.metric, k, valid=ok)
            found = np.where(rows >= 0, slots[lo:hi][np.maximum(rows, 0)], -1)
            ids, dist = merge_topk(ids, dist, found, d, k)
        return IndexResult(ids, dist, stats)

    def live(self) -> tuple[Slots, Vectors]:
        """Every live slot and a copy of its vector, in slot order."""
        with self._lock:
            chunks, starts, n = self._chunks, self._starts, self._n
            slots, valid = self._slots[:n].copy(), self._valid[:n].copy()
        return slots[valid], _gather(chunks, starts, valid, self.dim)

    def iter_live(self, batch: int) -> Iterator[tuple[Slots, Vectors]]:
        """The live rows in slot order, at most `batch` at a time (copies)."""
        with self._lock:
            chunks, starts, n = self._chunks, self._starts, self._n
            slots, valid = self._slots, self._valid
        for i, chunk in enumerate(chunks):
            lo, hi = starts[i], min(starts[i + 1], n)
            for a in range(lo, hi, batch):
                b = min(a + batch, hi)
                ok = valid[a:b]
                if ok.any():
                    yield slots[a:b][ok].copy(), chunk[a - lo : b - lo][ok]

    def consolidate(self, alloc: Callable[[int], Vectors] | None = None) -> tuple[Slots, Vectors]:
        """Move the live rows into one contiguous matrix, a chunk at a time (the peak is the
        rows plus one chunk), and return (slots, matrix) of the rows now held. The matrix
        comes from `alloc(rows)` if given (a build's staged input), else np.empty; a
        segment that spilled, all of its rows live, is its spill's file gathered whole
        (`Spill.gather`: only the rows kept in memory are written). For a buffer that no
        longer takes adds (`add` raises afterwards); removes and searches may run meanwhile
        and see every live row throughout. Rows removed during the move may be among those
        returned, still marked removed here."""
        with self._lock:
            self._sealed = True
            n = self._n
            live = bool(self._valid[:n].all())
            if len(self._chunks) == 1 and self._starts[1] == n and live:
                return self._slots[:n].copy(), self._chunks[0][:n]
            rows = int(self._valid[:n].sum())
            chunks, starts = self._chunks, self._starts
        # sealed: the chunks' rows no longer change (compaction never touches a segment
        # with a file chunk), so the file is gathered outside the lock
        if live and self._has_file and self._spill is not None:
            pieces = [(lo, chunk[: min(hi, n) - lo])
                      for chunk, lo, hi in zip(chunks, starts, starts[1:]) if lo < n]  # fmt: skip
            whole = self._spill.gather(n, pieces)
            if whole is not None:
                with self._lock:
                    self._chunks, self._starts = [whole], [0, n]
                    return self._slots[:n].copy(), whole
        # the allocation outside the lock (a staged file reserves its blocks): adds are
        # sealed off, and the live count can only fall meanwhile
        matrix = np.empty((rows, self.dim), np.float32) if alloc is None else alloc(rows)
        filed = _on_file(matrix)  # a staged input: its rows count as on file
        while True:
            with self._lock:
                # Chunk list is [matrix (rows 0..filled), rest...]: move the first of the rest.
                first = 1 if self._chunks and self._chunks[0] is matrix else 0
                if first == len(self._chunks):
                    break
                lo, hi = self._starts[first], min(self._starts[first + 1], self._n)
                ok = self._valid[lo:hi]
                moved = int(ok.sum())
                chunk = self._chunks[first][: hi - lo]
                matrix[lo : lo + moved] = chunk if moved == hi - lo else chunk[ok]
                n = self._n
                self._slots = np.concatenate(
                    [self._slots[:lo], self._slots[lo:hi][ok], self._slots[hi:n]]
                )
                self._valid = np.concatenate(
                    [self._valid[:lo], np.ones(moved, np.bool_), self._valid[hi:n]]
                )
                shift = (hi - lo) - moved
                self._n = n - shift
                rest = self._chunks[first + 1 :]
                self._chunks = [matrix, *rest]
                self._has_file = self._has_file or filed
                self._starts = [0, *(s - shift for s in self._starts[first + 1 :])]
                if not rest:
                    self._starts = [0, lo + moved]
        with self._lock:
            return self._slots[: self._n].copy(), matrix[: self._n]

    # -- remove --------------------------------------------------------------------------

    def remove(self, slots: Slots) -> None:
        """Clear the rows of `slots`; slots not added yet are remembered (remove wins)."""
        s = np.asarray(slots, np.int64).ravel()
        if len(s) == 0:
            return
        with self._lock:
            n = self._n
            top = int(self._slots[n - 1]) if n else -1
            ahead = s[s > top]
            if len(ahead):
                self._removed_ahead.update(ahead.tolist())
            rows = np.searchsorted(self._slots[:n], s)
            hit = (rows < n) & (self._slots[np.minimum(rows, max(n - 1, 0))] == s) if n else s < 0
            rows = sorted_unique(rows[hit])
            rows = rows[self._valid[rows]]
            if len(rows):
                self._valid[rows] = False
                self._live -= len(rows)
            gone = self._live == 0 and self._n > 0 and self._has_file and not self._sealed
        if gone:  # every row dead: the spill file goes now, not at the next write
            self._compact()

    def __len__(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        """Bytes of vectors held (live and dead rows, chunk capacity included)."""
        return sum(c.nbytes for c in self._chunks)

    @property
    def live_bytes(self) -> int:
        return self._live * 4 * self.dim

    # -- lifecycle -----------------------------------------------------------------------

    def maintain(self, budget_s: float | None = None) -> bool:
        """Drop dead rows and chunk slack once they are a large share (one matrix again)."""
        with self._lock:
            waste = self._starts[-1] - self._live
            due = (
                self._n and not self._has_file and waste > _COMPACT_DEAD_FRACTION * self._starts[-1]
            )
        if due:
            self._compact()
        return False

    def _waste_due(self) -> bool:
        """Under the lock: dead rows and slack are over half the capacity, and many; with a
        chunk on file, only if the live rows fit in memory under `spill_from` (overwrites
        of a hot set must not grow a spill file without bound, nor bring a large one back
        into memory)."""
        waste = self._starts[-1] - self._live
        return (
            (not self._has_file or self._live * 4 * self.dim <= self._spill_from)
            and waste >= _COMPACT_MIN_WASTE
            and waste > _COMPACT_DEAD_FRACTION * self._starts[-1]
        )

    def _compact(self) -> None:
        """Rewrite the live rows as one matrix in memory. The rows present at the start are
        copied without the lock (a row never changes once added, only its valid flag); at the
        switch, under the lock, rows added meanwhile are appended and removes made meanwhile
        applied, so no concurrent add or remove is lost (rewriting `live()` through `build`
        lost them). Given up if the rows were replaced meanwhile or the index was sealed."""
        with self._lock:
            if self._sealed or not self._n:
                return
            epoch, n0 = self._epoch, self._n
            chunks, starts = self._chunks, self._starts
            keep = self._valid[:n0].copy()
        matrix = _gather(chunks, starts, keep, self.dim)
        with self._lock:
            if self._sealed or self._epoch != epoch:
                return
            n = self._n
            added = n - n0
            new_slots = np.concatenate([self._slots[:n0][keep], self._slots[n0:n]])
            new_valid = np.concatenate([self._valid[:n0][keep], self._valid[n0:n]])
            if added:
                tail = np.empty((added, self.dim), np.float32)
                got = 0
                for i, chunk in enumerate(self._chunks):
                    lo, hi = max(self._starts[i], n0), min(self._starts[i + 1], n)
                    if hi > lo:
                        base = self._starts[i]
                        tail[got : got + hi - lo] = chunk[lo - base : hi - base]
                        got += hi - lo
                matrix = np.concatenate([matrix, tail])
            total = len(new_slots)
            self._chunks, self._starts = ([matrix], [0, total]) if total else ([], [0])
            self._slots, self._valid, self._n = new_slots, new_valid, total
            self._epoch += 1
            if self._has_file and self._spill is not None:
                # every row is in memory now; later chunks on file go to a new one (the
                # old file's mappings may still be read by searches that began before)
                self._spill.restart()
            self._has_file = False

    def unstuck(self) -> bool:
        return False  # nothing is ever held back

    def checkpoint(self, applied_seq: int) -> None:
        """Nothing to persist: the engine rebuilds this index from stored vectors."""

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vectors": self._live,
            "rows": self._n,
            "chunks": len(self._chunks),
            "resident_bytes": int(self.nbytes + self._slots.nbytes + self._valid.nbytes),
        }

    def close(self) -> None:
        with self._lock:
            self._reset()
            self._spill, self._spilling = None, False  # (a spill file holds its chunks)


def _on_file(a: npt.NDArray[Any]) -> bool:
    """Whether `a` views a memory map (its pages belong to a file, not to anonymous memory)."""
    base: Any = a
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer(an mmap)
        base = base.obj
    return isinstance(base, mmap.mmap)


def _check_ascending(slots: Slots, after: int) -> None:
    if len(slots) and (slots[0] <= after or (len(slots) > 1 and (np.diff(slots) <= 0).any())):
        raise InvalidArgument("flat index slots must be added in ascending order")


def open_flat(
    dim: int, metric: str, params: Mapping[str, Any], directory: Path | None
) -> tuple[FlatIndex, int]:
    if params:
        raise InvalidArgument(f"the flat index takes no index_params, got {sorted(params)}")
    return FlatIndex(dim, metric), 0
