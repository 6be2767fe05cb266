"""`SpannIndex`: the disk-hybrid SPANN index behind the engine's `VectorIndex` contract.

Heads (an hnswlib graph), the head tree, the posting offset table and one version byte per
slot live in memory; the vectors live in the posting file, read through an mmap (warm) or
O_DIRECT (cold). The class holds the state and the lifecycle (build, add, search, remove,
maintain, checkpoint, open, close); the phases live in `build`, `search` and `update`, the
files in `postings` and `persist`. It never opens RocksDB: the engine's op log is the truth,
`checkpoint(seq)` makes the applied state durable and `open` returns the last durable
sequence so the engine replays what follows (add and remove are idempotent under replay).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt
import psutil

from vecdb.errors import FormatError, InvalidArgument
from vecdb.index.base import Progress, Slots, Vectors
from vecdb.index.params import MAX_FLOAT16, BuildParams, SearchParams
from vecdb.index.spann import compaction, persist
from vecdb.index.spann.build import HeadTree, build_threads, head_space, plan
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.postings import (
    DirectReader,
    MmapReader,
    PostingFile,
    Quantizer,
)
from vecdb.index.spann.search import SearchState, per_query, search_batch
from vecdb.index.spann.stats import index_stats, verify
from vecdb.index.spann.table import BlockTable
from vecdb.index.spann.update import DRAIN, merge_small, place, process_pending
from vecdb.kernels.posting import live_counts

U8 = npt.NDArray[np.uint8]
AUTO_MMAP_SHARE = 0.5  # io="auto" maps the file if it takes at most this share of free RAM


@functools.lru_cache(maxsize=64)
def identity_quant(dim: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Offsets 0 and steps 1: what the scan kernel gets for non-int8 postings."""
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)


class SpannIndex:
    """SPANN heads in RAM, postings on disk, SPFresh-style updates."""

    kind = "spann"
    persistent = True

    dim: int  # vector dimension
    metric: str  # "l2" | "ip" | "cosine"; vectors arrive prepared for it
    params: BuildParams  # build parameters, fixed at creation (stored in the manifest)
    directory: Path  # the index's own directory
    limit: int  # entry budget of a posting (from the page budget)
    width: int  # bytes per stored component in postings (4 float32, 2 float16)
    threads: int  # threads for build-time and update-time head searches
    graph: hnswlib.Index | None  # head graph; label = posting id; None before the first build
    live_heads: int  # heads not deleted from the graph
    next_posting: int  # next unused posting id (ids are never reused)
    tree: HeadTree  # the head tree (shared with multi-tenancy)
    table: BlockTable  # posting id -> chain of blocks in the posting file
    file: PostingFile  # the current posting file
    file_gen: int  # generation number in the posting file's name
    reader: MmapReader | DirectReader  # warm or cold reader of `file`
    slot_version: U8  # per slot: current version 1..255, 0 = removed / never added
    n_live: int  # live slots
    pending: set[int]  # postings queued for split or clean-up
    rng: np.random.Generator  # randomness of splits
    counters: dict[str, int]  # splits, merges, gc, reassigned, compactions
    applied_seq: int  # last sequence made durable by checkpoint
    heads_gen: int  # generation of the heads file; bumped when heads change
    heads_dirty: bool  # heads changed since the last checkpoint
    ckpt_no: int  # number of the last state file
    last_stats: dict[str, Any]  # per-query stats of the last search

    def __init__(self, dim: int, metric: str, params: BuildParams, directory: Path) -> None:
        if metric not in ("l2", "ip", "cosine"):
            raise InvalidArgument(f"metric must be l2, ip or cosine, got {metric!r}")
        self.dim, self.metric, self.params, self.directory = dim, metric, params, directory
        self.limit, self.width = params.posting_limit(dim)[1], params.width
        self.threads = build_threads(params)
        self.graph, self.live_heads, self.next_posting = None, 0, 0
        self.tree = HeadTree(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))
        self.table = BlockTable(dim, self.width)
        self.file_gen = 0
        self.file = PostingFile(self.posting_path(0), dim, width=self.width)
        self.reader = self.open_reader()
        self.slot_version = np.zeros(0, dtype=np.uint8)
        self.n_live, self.pending = 0, set()
        self.rng = np.random.default_rng(params.seed)
        self.counters = dict(splits=0, merges=0, gc=0, reassigned=0, compactions=0)
        self.applied_seq, self.heads_gen, self.heads_dirty, self.ckpt_no = 0, 0, False, 0
        self.last_stats = {}

    # --- build -------------------------------------------------------------------------------

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Replace the whole content with a bulk build (new posting file generation)."""
        slots, vectors = self._check(slots, vectors)
        self._new_file(Quantizer.fit(vectors) if self.width == 1 and len(vectors) else None)
        self.slot_version = np.zeros(0, dtype=np.uint8)
        self.table, self.pending, self.n_live = BlockTable(self.dim, self.width), set(), 0
        self.graph, self.live_heads, self.next_posting = None, 0, 0
        if len(slots) == 0:
            self.heads_dirty = True
            return
        self.tree, self.graph, posts, keep = plan(vectors, self.metric, self.params, progress)
        self.live_heads = self.next_posting = self.graph.get_current_count()
        self._grow_slots(int(slots.max()) + 1)
        self.slot_version[slots] = 1
        self.n_live = len(slots)
        rows = np.repeat(np.arange(len(slots)), posts.shape[1])[keep.ravel()]
        flat = posts.ravel()[keep.ravel()]
        order = np.argsort(flat, kind="stable")
        rows, flat = rows[order], flat[order]
        starts = np.searchsorted(flat, np.arange(self.next_posting + 1))
        self.table.ensure(self.next_posting)
        for lo in range(0, self.next_posting, compaction.GROUP):  # bounded memory
            group = range(lo, min(lo + compaction.GROUP, self.next_posting))
            parts = [(p, rows[starts[p] : starts[p + 1]]) for p in group]
            parts = [(p, r) for p, r in parts if len(r)]
            blocks = [
                self.file.encode(p, slots[r], np.ones(len(r), np.uint8), vectors[r])
                for p, r in parts
            ]
            for (p, r), off in zip(parts, self.file.write_packed(blocks), strict=True):
                self.table.push(p, int(off), len(r))
        self.heads_dirty = True
        if isinstance(self.reader, DirectReader):
            self.reader.close()
        self.reader = self.open_reader()  # io="auto" decides again for the built file

    # --- add ---------------------------------------------------------------------------------

    def add(self, slots: Slots, vectors: Vectors) -> None:
        """Insert slots (a replayed slot is re-placed with a new version: idempotent)."""
        slots, vectors = self._check(slots, vectors)
        if len(slots) == 0:
            return
        if self.graph is None:
            self.build(slots, vectors)
            return
        self._grow_slots(int(slots.max()) + 1)
        self.n_live += int((self.slot_version[slots] == 0).sum())
        place(self, slots, vectors)
        process_pending(self)

    # --- search ------------------------------------------------------------------------------

    def search(
        self, queries: Vectors, k: int, params: Mapping[str, Any] | None = None
    ) -> tuple[Slots, npt.NDArray[np.float32]]:
        """Top-k slots and distances per query, padded with -1 / +inf."""
        sp = SearchParams.parse(params)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgument(f"k must be a positive integer, got {k!r}")
        q = self._rows(queries, "queries")
        if self.graph is None:
            self.last_stats = per_query({"queries": len(q)})
            return np.full((len(q), k), -1, np.int64), np.full((len(q), k), np.inf, np.float32)
        ids, dists, stats = search_batch(self._search_state(), q, int(k), sp)
        self.last_stats = per_query(stats)
        return ids, dists

    @property
    def max_abs_component(self) -> float | None:
        """Largest component magnitude the postings can store (None: no limit). The engine
        rejects larger vectors before it commits them."""
        return MAX_FLOAT16 if self.width == 2 else None

    def last_search_stats(self) -> dict[str, Any]:
        """Heads searched, postings, blocks, pages and bytes read by the last search (totals
        and per-query means)."""
        return dict(self.last_stats)

    # --- remove ------------------------------------------------------------------------------

    def remove(self, slots: Slots) -> None:
        """Tombstone slots (version 0); their copies are dropped by clean-up and compaction."""
        s = np.asarray(slots, dtype=np.int64).ravel()
        s = s[(s >= 0) & (s < len(self.slot_version))]  # unknown slots are ignored
        self.n_live -= int((self.slot_version[s] != 0).sum())
        self.slot_version[s] = 0

    def __len__(self) -> int:
        return self.n_live

    # --- maintain ----------------------------------------------------------------------------

    def maintain(self) -> None:
        """Run pending background work now: splits, merges, then compaction if due."""
        if self.graph is None:
            return
        # Pass 1: queued splits and clean-ups, until none is left
        process_pending(self, DRAIN)
        # Pass 2: merge tiny postings
        merge_small(self, self.live_counts())
        # Pass 3: compaction when dead bytes pass the threshold
        if compaction.garbage_fraction(self, self.live_counts()) > self.params.compact_garbage:
            self.compact()

    def compact(self) -> None:
        """Rewrite the posting file with live entries only (see `compaction`)."""
        compaction.compact(self)

    # --- checkpoint / open / close -----------------------------------------------------------

    def checkpoint(self, applied_seq: int) -> None:
        """Make the applied state durable and record `applied_seq` with it."""
        # Pass 1: posting data
        self.file.sync()
        # Pass 2: head graph, if it changed
        if self.heads_dirty and self.graph is not None:
            self.heads_gen += 1
            persist.save_heads(self._path("heads", self.heads_gen), self.graph)
        self.heads_dirty = False
        # Pass 3: versions, block table, tree
        self.ckpt_no += 1
        info = dict(self.counters, live_heads=self.live_heads, n_live=self.n_live)
        info["next_posting"] = self.next_posting
        state = self._path("state", self.ckpt_no)
        quant = b"" if self.file.quant is None else self.file.quant.to_bytes()
        persist.save_state(state, self.slot_version, self.table, self.tree, info, quant)
        kill_point("checkpoint")
        # Pass 4: switch the manifest, then drop files it no longer names
        manifest = {
            "applied_seq": int(applied_seq),
            "dim": self.dim,
            "metric": self.metric,
            "params": self.params.__dict__,
            "postings": self.file.path.name,
            "postings_length": self.file.length,
            "heads": self._path("heads", self.heads_gen).name if self.graph is not None else None,
            "state": state.name,
            "gens": [self.file_gen, self.heads_gen, self.ckpt_no],
        }
        persist.write_manifest(self.directory, manifest)
        self.applied_seq = int(applied_seq)
        persist.clean_directory(self.directory, self._files(manifest))

    @classmethod
    def open(
        cls, dim: int, metric: str, params: Mapping[str, Any], directory: Path
    ) -> tuple[SpannIndex, int]:
        """Open the index in `directory` (creating it if new); return it and the last durable
        applied sequence."""
        directory.mkdir(parents=True, exist_ok=True)
        m = persist.read_manifest(directory)
        if m is None:
            persist.clean_directory(directory, set())
            return cls(dim, metric, BuildParams.parse(params), directory), 0
        if m["dim"] != dim or m["metric"] != metric:
            raise FormatError(
                f"{directory / persist.MANIFEST}: index is dim={m['dim']} metric={m['metric']}, "
                f"opened as dim={dim} metric={metric}"
            )
        persist.clean_directory(directory, cls._files(m))
        stored = dict(m["params"], io=dict(params).get("io", m["params"]["io"]))
        self = cls.__new__(cls)
        self.dim, self.metric, self.directory = dim, metric, directory
        self.params = BuildParams.parse(stored)
        self.limit, self.width = self.params.posting_limit(dim)[1], self.params.width
        self.threads = build_threads(self.params)
        self.file_gen, self.heads_gen, self.ckpt_no = m["gens"]
        self.slot_version, self.table, self.tree, info, qbytes = persist.load_state(
            directory / m["state"], dim, self.width
        )
        quant = Quantizer.from_bytes(qbytes, dim) if qbytes else None
        space = head_space(metric)
        self.graph = (
            None if m["heads"] is None else persist.load_heads(directory / m["heads"], space, dim)
        )
        self.live_heads, self.next_posting = info["live_heads"], info["next_posting"]
        self.n_live = info["n_live"]
        self.counters = {
            k: int(info[k]) for k in ("splits", "merges", "gc", "reassigned", "compactions")
        }
        self.file = PostingFile(
            directory / m["postings"], dim, m["postings_length"], self.width, quant
        )
        self.reader = self.open_reader()
        self.pending, self.rng = set(), np.random.default_rng(self.params.seed + self.ckpt_no)
        self.applied_seq, self.heads_dirty, self.last_stats = int(m["applied_seq"]), False, {}
        return self, self.applied_seq

    def close(self) -> None:
        """Release the posting file and reader threads (no implicit checkpoint)."""
        if isinstance(self.reader, DirectReader):
            self.reader.close()
        self.file.close()

    # --- stats -------------------------------------------------------------------------------

    def live_counts(self) -> npt.NDArray[np.int64]:
        """Live entries per posting id (replicas counted)."""
        reader = self.reader if isinstance(self.reader, MmapReader) else MmapReader(self.file)
        reader.refresh()
        u8, i64, _, _ = reader.views()
        t = self.table
        counts: npt.NDArray[np.int64] = live_counts(
            u8, i64, t.post_first, t.blk_next, t.blk_off, t.blk_cnt, self.slot_version
        )
        return counts[: self.next_posting]

    def stats(self) -> dict[str, Any]:
        """Sizes, counts and memory estimates of the index (see `stats.index_stats`)."""
        return index_stats(self)

    def verify(self) -> dict[str, int]:
        """CRC-check every referenced posting block (see `stats.verify`)."""
        return verify(self)

    # --- helpers used by the phases ----------------------------------------------------------

    def heads(self) -> hnswlib.Index:  # the head graph, once the index has been built
        assert self.graph is not None
        return self.graph

    def new_head(self, centre: npt.NDArray[np.float32]) -> int:
        """Add a head to the graph; return its posting id."""
        assert self.graph is not None
        label = self.next_posting
        if self.graph.get_current_count() + 1 > self.graph.get_max_elements():
            self.graph.resize_index(int(self.graph.get_max_elements() * 1.25) + 64)
        self.graph.add_items(centre[None, :], np.array([label]), num_threads=1)
        self.next_posting, self.live_heads = self.next_posting + 1, self.live_heads + 1
        self.table.ensure(self.next_posting)
        self.heads_dirty = True
        return label

    def delete_head(self, posting: int) -> None:
        assert self.graph is not None
        self.graph.mark_deleted(posting)
        self.live_heads -= 1
        self.heads_dirty = True

    def refresh_reader(self) -> None:
        if isinstance(self.reader, MmapReader):
            self.reader.refresh()

    def _search_state(self) -> SearchState:
        assert self.graph is not None
        self.refresh_reader()
        q = self.file.quant
        return SearchState(
            self.graph,
            self.live_heads,
            self.table,
            self.reader,
            self.slot_version,
            self.metric,
            self.dim,
            self.width,
            *(identity_quant(self.dim) if q is None else (q.offset, q.scale)),
        )

    def open_reader(self) -> MmapReader | DirectReader:
        io = self.params.io
        if io == "auto":
            free = psutil.virtual_memory().available
            io = "mmap" if self.file.length <= AUTO_MMAP_SHARE * free else "direct"
        return MmapReader(self.file) if io == "mmap" else DirectReader(self.file)

    def _new_file(self, quant: Quantizer | None) -> None:
        if isinstance(self.reader, DirectReader):
            self.reader.close()
        self.file.close()
        self.file_gen += 1
        path = self.posting_path(self.file_gen)
        self.file = PostingFile(path, self.dim, width=self.width, quant=quant)
        self.reader = self.open_reader()

    def _grow_slots(self, n: int) -> None:
        if n > len(self.slot_version):
            grown = np.zeros(max(n, len(self.slot_version) * 5 // 4), dtype=np.uint8)
            grown[: len(self.slot_version)] = self.slot_version
            self.slot_version = grown

    def _rows(self, x: Any, name: str) -> Vectors:
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.size % self.dim:
            raise InvalidArgument(
                f"{name}: {a.size} floats is not a whole number of {self.dim}-d rows"
            )
        return a.reshape(-1, self.dim)

    def _check(self, slots: Slots, vectors: Vectors) -> tuple[Slots, Vectors]:
        s = np.ascontiguousarray(slots, dtype=np.int64).ravel()
        v = self._rows(vectors, "vectors")
        if len(s) != len(v):
            raise InvalidArgument(f"{len(s)} slots for {len(v)} vectors")
        if len(s) and s.min() < 0:
            raise InvalidArgument(f"slots must be non-negative, got {int(s.min())}")
        if self.width == 2 and len(v):
            big = np.abs(v) > MAX_FLOAT16
            if big.any():
                row, col = np.argwhere(big)[0]
                raise InvalidArgument(
                    f"vectors[{row}][{col}] = {v[row, col]:g}: vector_dtype=float16 holds "
                    f"components up to {MAX_FLOAT16:g}"
                )
        return s, v

    def posting_path(self, gen: int) -> Path:
        return self._path("postings", gen)

    def _path(self, kind: str, n: int) -> Path:  # kind: postings | heads | state
        return self.directory / f"{kind}.{n}.bin"

    @staticmethod
    def _files(manifest: Mapping[str, Any]) -> set[str]:
        return {f for f in (manifest["postings"], manifest["heads"], manifest["state"]) if f}
