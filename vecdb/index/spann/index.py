"""`SpannIndex`: the disk-hybrid SPANN index behind the engine's `VectorIndex` contract.

A thin lifecycle class over `SpannState`: it validates arguments, and calls the phases
(`build`, `update`, `search`, `maintain`, `compaction`, `persist`, `stats`), which are
functions over the state and never import this module. Concurrency is the state's
readers-writer lock (see `state` and `vecdb.index.base`): searches and removes from any
thread, build / add / maintain / checkpoint from one worker thread; after an open or a new
posting file, one background thread CRC-checks its blocks as a reader (`prewarm`; `close`
stops it). It never opens RocksDB:
the engine's op log is the truth, `checkpoint(seq)` makes the applied state durable and
`open` returns the last durable sequence so the engine replays what follows (add and remove
are idempotent under replay).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.errors import InvalidArgument
from vecdb.index.base import IndexResult, Progress, Slots, Vectors, Visible, as_visible
from vecdb.index.params import MAX_FLOAT16, SearchParams
from vecdb.index.spann import (
    build,
    compaction,
    drain_child,
    maintain,
    persist,
    search,
    staging,
    stats,
    subtree,
    update,
)
from vecdb.index.spann.prewarm import Prewarm
from vecdb.index.spann.state import SpannState
from vecdb.index.spann.vectors import row_bytes
from vecdb.index.tenancy import TenantParams, node_counts


class SpannIndex:
    """SPANN heads in RAM, postings on disk, SPFresh-style updates."""

    kind = "spann"  # registry name
    persistent = True  # keeps its own files: checkpoint / open matter

    state: SpannState  # everything the index holds (the phases work on it)
    max_abs_component: float | None  # float16 postings hold components up to this; else None

    def __init__(self, state: SpannState) -> None:
        if state.metric not in ("l2", "ip", "cosine"):
            raise InvalidArgument(f"metric must be l2, ip or cosine, got {state.metric!r}")
        self.state = state
        self.max_abs_component = MAX_FLOAT16 if state.params.float16_rows else None
        self.prewarm = Prewarm()  # the background CRC check of a new file (`prewarm`)

    # --- build -------------------------------------------------------------------------------

    def build_input(self, rows: int) -> Vectors | None:
        """An array for the next `build`'s input of `rows` vectors that its child process
        reads without a copy (`spann.staging`), or None: the caller allocates."""
        return build.input_array(self.state, rows)

    def spill_file(self) -> staging.SpillFile:
        """An unnamed file in the index directory (`spann.staging`) for one write buffer
        segment's rows waiting for the first build, gathered whole as its input."""
        return staging.SpillFile(self.state.directory, self.state.dim)

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Replace the whole content with a bulk build (published by one swap)."""
        s, v = self._check(slots, vectors)
        build.build(self.state, s, v, progress)
        self.prewarm.start(self.state)

    # --- add ---------------------------------------------------------------------------------

    def add(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Insert slots (a replayed live slot is re-placed; removed slots are ignored).
        Postings that grow over budget wait for `maintain`."""
        s, v = self._check(slots, vectors)
        if len(s) == 0:
            return
        if self.state.graph is None:
            build.build(self.state, s, v, progress)
            self.prewarm.start(self.state)
            return
        update.add(self.state, s, v, progress)

    # --- search ------------------------------------------------------------------------------

    def search(
        self,
        queries: Vectors,
        k: int,
        params: Mapping[str, Any] | None = None,
        visible: Visible | None = None,
    ) -> IndexResult:
        """Top-k slots per query among live slots (only those in `visible`, if given, tested
        inside the scan), padded with -1 / +inf, with what this call read."""
        sp = SearchParams.parse(params)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgument(f"k must be a positive integer, got {k!r}")
        q = self._rows(queries, "queries")
        return search.search(self.state, q, int(k), sp, as_visible(visible))

    def search_subset(
        self,
        queries: Vectors,
        k: int,
        params: Mapping[str, Any] | None,
        slots: Slots,
        visible: Visible,
        key: Hashable,
    ) -> IndexResult:
        """Top-k among `slots` (sorted; `visible` is the same set, and a new object whenever
        the set changes), walking the set's sub-tree of the clustering tree; `key` names the
        set (a tuple of tenant numbers) for the directory cache. `params` may mix search
        and `tenant_*` parameters (see `index.tenancy.TenantParams`)."""
        mine, rest = TenantParams.split(params)
        tp, sp = TenantParams.parse(mine), SearchParams.parse(rest)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgument(f"k must be a positive integer, got {k!r}")
        q = self._rows(queries, "queries")
        s = np.asarray(slots, dtype=np.int64)
        return subtree.search_subset(self.state, q, int(k), sp, tp, s, visible, key)

    def forget_subsets(self, members: Iterable[int]) -> None:
        """Drop cached directories of sets (keys) that include any of `members`."""
        self.state.subtrees.forget(members)

    def subset_nodes(self, slots: Slots) -> int:
        """Nodes of the sub-tree of `slots` in the clustering tree (their primary leaves and
        every ancestor; 0 before the first build), for a tenant's `get_tenant`."""
        with self.state.lock.read():
            if self.state.graph is None:
                return 0
            nodes, _ = node_counts(self.state.tree, np.asarray(slots, dtype=np.int64))
            return len(nodes)

    def add_bytes(self, n: int) -> tuple[Path, int]:
        """Each vector in every posting the build's replica cap allows, and its rerank row,
        twice over for the splits and moves the add causes (`base.BoundsAdds`)."""
        st = self.state
        p = st.params
        per = (st.replica_cap or p.replicas) * p.entry_bytes(st.dim) + row_bytes(p.rerank, st.dim)
        return st.directory, 2 * n * per

    def drains_in_child(self, n: int) -> bool:
        """Whether an add of n vectors goes to a child (`spann.drain_child.use_child`)."""
        return drain_child.use_child(self.state, n)

    def add_in_child(
        self,
        chunks: Iterable[tuple[Slots, Vectors]],
        seq: int,
        applied_seq: int,
        progress: Progress | None,
    ) -> None:
        """Insert the chunks and run their maintenance in a child (`spann.drain_child`)."""
        drain_child.add_in_child(self.state, chunks, seq, applied_seq, progress)
        self.prewarm.start(self.state)  # the child's file, published by one swap

    # --- remove ------------------------------------------------------------------------------

    def remove(self, slots: Slots) -> None:
        """Tombstone slots for good (remove wins); unknown slots are remembered."""
        update.remove(self.state, np.asarray(slots, dtype=np.int64))

    def __len__(self) -> int:
        return self.state.n_live

    # --- maintain ----------------------------------------------------------------------------

    def maintain(self, budget_s: float | None = None) -> bool:
        """Splits, merges, clean-ups for about `budget_s` seconds; True if work is left."""
        return maintain.maintain(self.state, budget_s)

    def unstuck(self) -> bool:
        """Whether maintenance held back by the disk guard may go on now (the disk state it
        waits on changed: say, a checkpoint freed space). The engine asks after its
        checkpoints, which `maintain`'s answer cannot see."""
        return self.state.unstuck()

    def compact(self) -> None:
        """Rewrite the whole posting file now (a new generation, published by checkpoint)."""
        if self.state.graph is not None:
            compaction.compact(self.state)
            self.prewarm.start(self.state)

    # --- checkpoint / open / close -----------------------------------------------------------

    def checkpoint(self, applied_seq: int) -> None:
        """Make the applied state durable and record `applied_seq` with it."""
        persist.checkpoint(self.state, applied_seq)

    @classmethod
    def open(
        cls, dim: int, metric: str, params: Mapping[str, Any], directory: Path
    ) -> tuple[SpannIndex, int]:
        """Open the index in `directory` (creating it if new); return it and the last durable
        applied sequence."""
        if metric not in ("l2", "ip", "cosine"):
            raise InvalidArgument(f"metric must be l2, ip or cosine, got {metric!r}")
        state, seq = persist.open_state(dim, metric, dict(params), directory)
        index = cls(state)
        index.prewarm.start(state)
        return index, seq

    def close(self) -> None:
        """Release the posting file and reader threads (no implicit checkpoint)."""
        self.prewarm.stop()
        self.state.reader.close()
        self.state.file.close()
        if self.state.store is not None:  # the rerank store
            self.state.store.close()

    # --- stats -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Sizes, counts, memory estimates and lock hold times (see `stats.index_stats`)."""
        return stats.index_stats(self.state)

    def verify(self) -> dict[str, int]:
        """CRC-check every referenced posting block (see `stats.verify`)."""
        return stats.verify(self.state)

    # --- argument checks ---------------------------------------------------------------------

    def _rows(self, x: Any, name: str) -> Vectors:
        if type(x) is np.ndarray and x.ndim == 2 and x.dtype == np.float32:
            if x.shape[1] == self.state.dim and x.flags.c_contiguous:  # the engine's rows
                return x
        a = np.ascontiguousarray(x, dtype=np.float32)
        dim = self.state.dim
        if a.size % dim:
            raise InvalidArgument(f"{name}: {a.size} floats is not a whole number of {dim}-d rows")
        return a.reshape(-1, dim)

    def _check(self, slots: Slots, vectors: Vectors) -> tuple[Slots, Vectors]:
        s = np.ascontiguousarray(slots, dtype=np.int64).ravel()
        v = self._rows(vectors, "vectors")
        if len(s) != len(v):
            raise InvalidArgument(f"{len(s)} slots for {len(v)} vectors")
        if len(s) and s.min() < 0:
            raise InvalidArgument(f"slots must be non-negative, got {int(s.min())}")
        # Reductions, not np.abs(v): no full-size temporary of a bulk build's input.
        if self.max_abs_component is not None and len(v) and max(v.max(), -v.min()) > MAX_FLOAT16:
            for lo in range(0, len(v), 4096):
                big = np.abs(v[lo : lo + 4096]) > MAX_FLOAT16
                if not big.any():
                    continue
                row, col = np.argwhere(big)[0]
                row += lo
                raise InvalidArgument(
                    f"vectors[{row}][{col}] = {v[row, col]:g}: float16 postings or rerank "
                    f"rows hold components up to {MAX_FLOAT16:g}"
                )
        return s, v
