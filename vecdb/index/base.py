"""The contract between the engine and an index kind.

The engine gives every stored vector a fresh int64 *slot* (an upsert of an existing id gets a
new slot; the old one is removed); slots are never reused. Indexes store (slot, vector) pairs
and answer top-k in slots. Vectors arrive already prepared for the metric: for "cosine" they
are L2-normalised and the index computes 1 - dot. Smaller distance is better for every metric.

Who calls what, and what may overlap (the engine relies on every index kind keeping this):
- `build`, `add`, `maintain` and `checkpoint` are called by one thread at a time (the
  database's maintenance worker, or the writer for an index without a write buffer).
- `remove` may be called from any thread, overlapping all of the above and `search`.
  **Remove wins**: once a slot is removed it never becomes live again; a later `add` or
  `build` that names it ignores it (a write buffer may hand the index a slot that a user
  deleted a moment before).
- `search` may be called from any thread, overlapping everything but `close`. It sees a
  consistent state: every slot added before the call began is found, none removed before the
  call began is returned. A maintenance step never keeps a search or a `remove` waiting for
  more than about a second: long work is done outside the index's locks and published in
  short steps (a bulk build is published by swapping references).
- `close` is called alone, after the worker has stopped and searches have drained.

Durability: the engine's RocksDB op log is the truth. An index with files (`persistent`)
persists its state in `checkpoint(seq)` and reports the last checkpointed sequence from
`open`; the engine replays later operations into it (add and remove are idempotent under
replay). It may also checkpoint on its own during `maintain`, but only at the sequence of its
last `checkpoint` call. An in-memory index is rebuilt from stored vectors on open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Slots = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
# Progress of long work: (phase, done, total), e.g. ("assign", 65536, 400000). Phases of one
# call are reported in order; `done == total` ends a phase.
Progress = Callable[[str, int, int], None]


class Visible:
    """A set of slots a search may return, as a packed bitmap: slot s is in the set when bit
    (s & 7) of byte s >> 3 is set (little-endian bit order, `np.packbits(..., "little")`).
    Slots at or past `8 * len(bits)` are outside the set. Kernels test membership inside the
    scan, so a restricted search still fills k results when the set has k members nearby."""

    __slots__ = ("__weakref__", "_count", "bits")  # weakly referable: derived caches key on it

    def __init__(self, bits: npt.NDArray[np.uint8]) -> None:
        self.bits = np.ascontiguousarray(bits, dtype=np.uint8)  # the packed bitmap
        self._count: int | None = None  # members, counted once

    @classmethod
    def from_slots(cls, slots: npt.ArrayLike, bound: int | None = None) -> Visible:
        """The set of the given slots (any order, duplicates allowed); `bound` sizes the
        bitmap (default: one past the largest slot)."""
        s = np.asarray(slots, dtype=np.int64).ravel()
        if len(s) and s.min() < 0:
            raise ValueError(f"slots must be non-negative, got {int(s.min())}")
        n = int(bound) if bound is not None else (int(s.max()) + 1 if len(s) else 0)
        mask = np.zeros(max(n, int(s.max()) + 1 if len(s) else 0), dtype=np.bool_)
        mask[s] = True
        return cls.from_mask(mask)

    @classmethod
    def from_mask(cls, mask: npt.NDArray[np.bool_]) -> Visible:
        """The set of the indices where `mask` is true."""
        return cls(np.packbits(np.asarray(mask, dtype=np.bool_), bitorder="little"))

    def contains(self, slots: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Membership of each slot (vectorised); negative or out-of-range slots are False."""
        s = np.asarray(slots, dtype=np.int64)
        ok = (s >= 0) & (s < 8 * len(self.bits))
        out = np.zeros(s.shape, dtype=np.bool_)
        si = s[ok]
        out[ok] = (self.bits[si >> 3] >> (si & 7).astype(np.uint8)) & 1 == 1
        return out

    def count(self) -> int:
        """Number of slots in the set (counted on the first call; the set is immutable)."""
        if self._count is None:
            self._count = int(np.unpackbits(self.bits).sum())
        return self._count


def as_visible(visible: Visible | npt.ArrayLike | None) -> Visible | None:
    """Normalise the `visible` argument of `search`: None (no restriction), a `Visible`, or
    an array of slots (sorted or not)."""
    if visible is None or isinstance(visible, Visible):
        return visible
    return Visible.from_slots(visible)


@dataclass
class SearchStats:
    """What one search call read: totals over its queries. Per call, never shared."""

    queries: int = 0  # queries answered
    heads_searched: int = 0  # head candidates asked of the head graph (SPANN)
    postings_read: int = 0  # postings scanned
    blocks_read: int = 0  # posting blocks scanned
    pages_read: int = 0  # 4 KiB pages those blocks span
    bytes_read: int = 0  # bytes read: pages x 4 KiB warm, bytes from the device cold
    extra: dict[str, float] = field(default_factory=dict)  # kind-specific counters

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "queries",
        "heads_searched",
        "postings_read",
        "blocks_read",
        "pages_read",
        "bytes_read",
    )

    def add(self, other: SearchStats) -> None:
        """Accumulate another call's totals into this one."""
        for f in fields(self):
            if f.name != "extra":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for key, value in other.extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value

    def as_dict(self) -> dict[str, Any]:
        """Totals and per-query means (`<name>_per_query`), for stats and benchmarks."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.COUNTERS}
        nq = max(1, self.queries)
        for name in self.COUNTERS[1:]:
            out[name + "_per_query"] = getattr(self, name) / nq
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class IndexResult:
    """Top-k of a batch of queries, in slots: shapes (nq, k), padded with -1 / +inf, rows
    ascending by distance; and what the call read."""

    slots: Slots
    distances: npt.NDArray[np.float32]
    stats: SearchStats


class VectorIndex(Protocol):
    """What every index kind implements (see the module docstring for who calls what)."""

    kind: str  # registry name: "flat" | "spann"
    persistent: bool  # True if the index keeps its own files (then checkpoint/open matter)
    # Largest component magnitude the index can store (a float16 posting file, say), or
    # None. The engine rejects larger vectors before it commits them.
    max_abs_component: float | None

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Replace the whole content with these vectors (bulk build). The index may keep
        `vectors` without copying until the call returns, never after."""

    def add(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Insert slots. Re-adding a live slot re-places it (replay); removed slots are
        ignored (remove wins)."""

    def remove(self, slots: Slots) -> None:
        """Remove slots; unknown slots are remembered as removed (remove wins)."""

    def search(
        self,
        queries: Vectors,
        k: int,
        params: Mapping[str, Any] | None = None,
        visible: Visible | None = None,
    ) -> IndexResult:
        """Top-k slots per query among live slots (and, if given, only those in `visible`,
        tested inside the scan). Per-call parameters only: nothing here changes state that
        another search reads."""

    def __len__(self) -> int:
        """Number of live slots."""

    def maintain(self, budget_s: float | None = None) -> bool:
        """Run pending background work (splits, merges, clean-up, compaction) for about
        `budget_s` seconds (None: until done); return True if work is left."""

    def unstuck(self) -> bool:
        """Whether work that `maintain` held back (e.g. for want of disk room) may go on now
        that a checkpoint ran (which `maintain`'s answer could not see)."""

    def checkpoint(self, applied_seq: int) -> None:
        """Make everything applied so far durable and record `applied_seq` with it."""

    def stats(self) -> dict[str, Any]:
        """Numbers for `stats` / inspect (sizes, counts, memory estimates)."""

    def close(self) -> None:
        """Release files and threads."""


@runtime_checkable
class DrainsInChild(Protocol):
    """An optional capability of an index kind: a large add can run, with the maintenance it
    causes, in a child process, so that the long-running process afterwards holds what a
    fresh open of the result would (the native memory of the insert path stays in the
    child). The engine asks `drains_in_child(n)` before a drain of n vectors and, if True,
    hands the drain to `add_in_child` instead of `add`."""

    def drains_in_child(self, n: int) -> bool:
        """Whether an add of n vectors would go to a child process now."""

    def add_in_child(
        self,
        chunks: Iterable[tuple[Slots, Vectors]],
        seq: int,
        applied_seq: int,
        progress: Progress | None,
    ) -> None:
        """Add the (slots, vectors) chunks and run their maintenance in a child; publish the
        result here as one swap (remove wins, as for `add`). `applied_seq` is the engine's
        applied sequence now (a checkpoint at it is taken first); `seq` the sequence the
        drain makes applied, which the child's checkpoints record."""


@runtime_checkable
class StagesBuildInput(Protocol):
    """An optional capability of an index kind that builds in a child process: the engine,
    about to gather the input of a bulk build of n vectors, asks `build_input(n)` for the
    array to gather it in, so that the child reads it where it was written (no second copy
    of the input, and the long-running process holds file pages for it, not anonymous
    memory). None: the engine allocates as usual. Before the first build, the engine's write
    buffer also keeps the overflow of a large load in a `spill_file`."""

    def build_input(self, rows: int) -> Vectors | None:
        """A writable (rows, dim) float32 array the next `build` of those rows reads as is,
        or None."""

    def spill_file(self) -> Spill:
        """A new file on the index's disk where one write buffer segment keeps the rows of
        a load too large for memory until the first build, which reads the file gathered
        whole (`Spill.gather`) as its input."""


class Spill(Protocol):
    """Where a write buffer segment (`FlatIndex`) keeps rows on file: each chunk at its
    rows' place in one file, so that the segment can be handed to a build as that file."""

    def rows(self, start: int, count: int) -> Vectors | None:
        """A writable (count, dim) float32 array for rows [start, start + count) of the
        segment, on file; None: keep them in memory from now on."""

    def gather(self, n: int, pieces: list[tuple[int, Vectors]]) -> Vectors | None:
        """Rows [0, n) as one array on file (a build's staged input), given every chunk of
        the segment as (start row, rows): those `rows` did not give are written in first.
        None: gather them some other way (nothing spilled, no room)."""

    def restart(self) -> None:
        """Forget the rows given so far (the segment compacted them into memory): later
        chunks go to a new file, the old one lasting as long as arrays over it do."""


@runtime_checkable
class BoundsAdds(Protocol):
    """An optional capability of an index kind with files: it bounds the bytes an add of n
    vectors may write (with the splits and moves it causes), so the engine does not start a
    drain its disk has no room for (`vecdb.index.room`)."""

    def add_bytes(self, n: int) -> tuple[Path, int]:
        """(the index directory, at most the bytes an add of n vectors writes there)."""


class IndexOpener(Protocol):
    """Creates or opens an index in `directory` (None for a purely in-memory index)."""

    def __call__(
        self,
        dim: int,
        metric: str,
        params: Mapping[str, Any],
        directory: Path | None,
    ) -> tuple[VectorIndex, int]:
        """Return the index and the last durable applied sequence (0 if new or in-memory)."""
