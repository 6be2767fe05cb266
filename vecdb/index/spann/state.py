"""The data of a SPANN index, and the few helpers every phase shares.

`SpannState` holds everything the phases (build, update, split, maintain, compaction, search,
persist, stats) work on: the head graph, the clustering tree, the posting file with its block
table and reader, the per-slot versions, queues, counters and the readers-writer lock. The
phases are functions over it and never import the index class. Locking rule (see
`vecdb.index.base`): `search` holds `lock.read()` for its gather and scan; the one worker
thread (build / add / maintain / checkpoint) computes outside the lock, writes new posting
bytes where no published table points, and takes `lock.write(phase)` only to publish (table
pushes and clears, graph add / mark_deleted / resize, reader refresh, tree changes, version
bumps); `remove` takes the write side briefly from any thread. Only the worker changes a live
slot's version, so it may read versions outside the lock; `remove` may turn any version into
REMOVED at any time, so every publish re-checks.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

from vecdb.index import room
from vecdb.index.heads import ClusterTree
from vecdb.index.params import BITS_WIDTH, BuildParams
from vecdb.index.spann.bitcodes import BitCoder
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.locks import RWLock
from vecdb.index.spann.postings import PAGE, DirectReader, MmapReader, PostingFile, Quantizer
from vecdb.index.spann.table import BlockTable
from vecdb.index.spann.vectors import VectorStore, row_bytes
from vecdb.index.tenancy import SubTreeCache
from vecdb.kernels.posting import VERSION_NONE, VERSION_REMOVED
from vecdb.kernels.unique import sorted_unique

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
AUTO_MMAP_SHARE = 0.5  # io="auto" maps the file if it takes at most this share of free RAM
PRESSURE_SHARE = 0.85  # maintenance works against disk pressure above this share of the budget
GUARD_SHARE = 0.97  # maintenance rewrites keep the data end below this share of the budget
# (the rest: the file's preallocated growth chunk, 1/64 of it, counts on disk)
# A rewrite that waited for the disk goes on once the disk's room (free space past the headroom)
# moves by a step; above the cap, room is room (no retry for every write elsewhere on the disk).
ROOM_STEP = 16 << 20
ROOM_CAP = 1 << 30
COUNTERS = (
    "splits",
    "merges",
    "gc",
    "reassigned",
    "reassign_skipped",
    "compactions",
    "self_checkpoints",
    "defrags",
)


@functools.lru_cache(maxsize=64)
def identity_quant(dim: int) -> tuple[F32, F32]:
    """Offsets 0 and steps 1: what the scan kernel gets for non-int8 postings."""
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)


def head_space(metric: str) -> str:
    """Space of the head graph (hnswlib's names): inner product for "ip", squared L2 otherwise."""
    return "ip" if metric == "ip" else "l2"


def open_reader(file: PostingFile, io: str) -> MmapReader | DirectReader:
    """The posting reader `io` asks for ("auto": mmap if the file fits in free RAM)."""
    if io == "auto":
        free = psutil.virtual_memory().available
        io = "mmap" if file.length <= AUTO_MMAP_SHARE * free else "direct"
    return MmapReader(file) if io == "mmap" else DirectReader(file)


def file_path(directory: Path, kind: str, n: int) -> Path:
    """`<kind>.<n>.bin` in the index directory (kind: postings | heads | state)."""
    return directory / f"{kind}.{n}.bin"


# Fields of a `SpannState` that belong to the process's object rather than to the index's
# content: a publish of another state's content (`drain_child.adopt`) keeps these.
OWN_FIELDS = frozenset(
    {"dim", "metric", "params", "directory", "limit", "block_cap", "width", "threads", "lock"}
    | {"subtrees", "store", "removes_since", "stale_slots", "refused_build"}
)


@dataclass
class LiveSeen:
    """The last whole count of live entries per posting (`compaction.counts`), with the
    entry counts it was taken at: what `stats` reports for an index too large to count on
    every call (a cold 10,000,000 x 96 index read 2.3 GB in 14 minutes to count). The
    maintenance pass that took it keeps both arrays current for the postings it rewrites;
    entries appended since are counted live, removes since are not seen until the next count.
    Belongs to one block table: a published new content (`table` replaced) invalidates it."""

    table: BlockTable
    live: I64  # live entries per posting id when counted
    base: I64  # post_entries then
    stale_slots: int  # `SpannState.stale_slots` then
    removed: I64 | None = None  # entries of removed slots per posting, once counted

    def current(self, st: SpannState, share: float = 0.0) -> bool:
        """Still the count of `st`'s entries: the same block table, and nothing since has
        made an entry stale in a posting nobody knows (a remove of a live slot, or a live
        slot placed again), or, with `share` > 0, the copies of the slots that went stale
        since (at the mean replicas per slot) are at most that share of the entries.
        Appends and clean-ups keep it current: `estimate` and `maintain.Counts.cleaned`
        account for them."""
        if self.table is not st.table:
            return False
        drift = st.stale_slots - self.stale_slots  # at mean replicas per slot: the entries
        return drift <= share * st.n_live  # gone stale <= share of them (0: none may have)

    def rewritten(self, st: SpannState, postings: I64) -> None:
        """`postings` were rewritten with their visible entries only (a clean-up or a
        defragmenting move): all their entries are live now, none of a removed slot."""
        if self.table is not st.table:
            return
        p = postings[postings < len(self.live)]
        now = st.table.post_entries[p].astype(np.int64)
        self.live[p] = now
        self.base[p] = now
        if self.removed is not None:
            self.removed[p[p < len(self.removed)]] = 0

    def estimate(self, entries: I64) -> I64:
        """Live entries per posting now: as counted, plus entries appended since (clipped
        to the entries there are)."""
        m = min(len(self.live), len(entries))
        out = entries.copy()
        out[:m] = np.clip(self.live[:m] + (entries[:m] - self.base[:m]), 0, entries[:m])
        return out


@dataclass
class SpannState:
    """Everything a SPANN index holds (see the module docstring for who may touch what)."""

    dim: int  # vector dimension
    metric: str  # "l2" | "ip" | "cosine"; vectors arrive prepared for it
    params: BuildParams  # build parameters, fixed at creation (stored in the manifest)
    directory: Path  # the index's own directory
    limit: int  # entry budget of a posting (from the page budget)
    block_cap: int  # entries per block at most (`block_pages`); bigger postings are chains
    width: int  # bytes per stored component in postings (4 float32, 2 float16, 1 int8, 8 bits)
    threads: int  # threads for build-time and update-time head searches
    file: PostingFile  # the current posting file
    reader: MmapReader | DirectReader  # warm or cold reader of `file`
    lock: RWLock = field(default_factory=RWLock)  # searches read, publishes write
    graph: HeadGraph | None = None  # head graph, label = posting id
    live_heads: int = 0  # heads not deleted from the graph
    next_posting: int = 0  # next unused posting id (ids are never reused)
    tree: ClusterTree = field(init=False)  # the clustering tree (leaves = postings)
    table: BlockTable = field(init=False)  # posting id -> chain of blocks in `file`
    file_gen: int = 0  # generation number in the posting file's name
    slot_version: U8 = field(default_factory=lambda: np.zeros(0, np.uint8))  # see kernels
    n_live: int = 0  # live slots
    pending: set[int] = field(default_factory=set)  # postings over budget: split or clean
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # splits
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    applied_seq: int = 0  # last sequence made durable by checkpoint
    heads_gen: int = 0  # generation of the heads file; bumped when heads change
    heads_dirty: bool = False  # heads changed since the last checkpoint
    ckpt_no: int = 0  # number of the last state file
    freed_bytes: int = 0  # bytes of blocks dropped from the table since the last checkpoint
    replica_cap: int = 0  # replicas per vector after the build's disk budget (0: no cap)
    ceiling: int = 0  # end a file over its budget may reach (0: within budget; see rewrite_limit)
    stuck: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # see disk_state
    subtrees: SubTreeCache = field(default_factory=SubTreeCache)  # slot sets' directories
    store: VectorStore | None = None  # exact-rerank rows by slot (`rerank` != "none")
    live_seen: LiveSeen | None = None  # the last whole count of live entries (`LiveSeen`)
    removes_since: list[I64] | None = None  # slots removed while `publish` prepares
    stale_slots: int = 0  # live slots removed or placed again, ever (`LiveSeen.current`)
    # "bits": the rerank_k of a request that gives none, measured by the last bulk build
    # (`calibrate`; 0: none measured, DEFAULT_BITS_RERANK_K), and the agreement it reached
    rerank_k: int = 0
    rerank_k_agreement: float = 1.0
    # (vectors, bytes) of the last bulk build refused for want of disk room once pass 4 had
    # counted its bytes (`build.build`): its retries wait for that room before clustering
    refused_build: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.tree = ClusterTree(self.dim)
        self.tree.leaf_vectors = self.leaf_vectors()
        self.table = BlockTable(self.bdim, self.width)

    @property
    def bdim(self) -> int:
        """Components per entry in the posting blocks (`BuildParams.block_dim`): what the
        block layout, the table and the block checks size entries by."""
        return self.params.block_dim(self.dim)

    @property
    def is_bits(self) -> bool:
        """Whether postings hold 1-bit codes (`vector_dtype="bits"`): fixed for the index,
        unlike `bits`, which is None until the first build publishes a coded file."""
        return self.width == BITS_WIDTH

    @property
    def bits(self) -> BitCoder | None:
        """The coder of a "bits" posting file (None for other dtypes, or before a build)."""
        q = self.file.quant
        return q if isinstance(q, BitCoder) else None

    # --- reading (any thread) --------------------------------------------------------------

    def heads(self) -> HeadGraph:
        """The head graph, once the index has been built."""
        assert self.graph is not None
        return self.graph

    def head_vectors(self, postings: npt.NDArray[np.integer[Any]]) -> F32:
        """Head vectors by posting id, from the graph (the tree's leaf centroids)."""
        return self.heads().get_items(postings)

    def leaf_vectors(self) -> Callable[[npt.NDArray[np.integer[Any]]], F32]:
        """`head_vectors` for the tree (`ClusterTree.leaf_vectors`), holding this state by
        weak reference: the bound method made a cycle (state -> tree -> method -> state), so
        a closed index's files stayed open and mapped until the cycle collector ran."""
        ref = weakref.ref(self)

        def leaf_vectors(postings: npt.NDArray[np.integer[Any]]) -> F32:
            st = ref()
            if st is None:
                raise RuntimeError("the index state is gone")
            return st.head_vectors(postings)

        return leaf_vectors

    def is_posting(self, posting: int) -> bool:
        """Whether `posting` is a live leaf (its head is in the graph)."""
        leaf_of = self.tree.leaf_of
        return 0 <= posting < len(leaf_of) and bool(leaf_of[posting] >= 0)

    def leaf_mask(self, n: int) -> npt.NDArray[np.bool_]:
        """Which of posting ids 0..n-1 are live leaves (ids past the tree's table are not)."""
        leaf_of = self.tree.leaf_of[:n]
        out = np.zeros(n, dtype=bool)
        out[: len(leaf_of)] = leaf_of >= 0
        return out

    def quant(self) -> tuple[F32, F32]:
        """(offset, scale) for the scan kernel: the int8 quantizer or the identity."""
        q = self.file.quant
        return (q.offset, q.scale) if isinstance(q, Quantizer) else identity_quant(self.dim)

    # --- publishing a new content (worker) ---------------------------------------------------

    def publish(self, why: str, versions: U8, content: dict[str, object]) -> None:
        """Swap in a whole new content (a build's, or a drain child's reopened result) by
        one swap of references under the write lock. `content` holds the new field values
        (at least `file`, `reader`, `graph`, `tree` and `table`); `versions` the new slot
        versions. Slots removed here meanwhile stay removed (remove wins: marked removed and
        dropped from the new tree's primary leaves), also those removed while this call
        prepares (`removes_since`); the live count is recounted. The old
        posting file and its reader are closed once the lock is released (the file stays on
        disk until a checkpoint names the new one)."""
        old_file, old_reader = self.file, self.reader
        tree = content["tree"]
        assert isinstance(tree, ClusterTree)
        # The whole-array work runs before the write lock (at 10,000,000 slots it held the
        # lock, and so every search, 35-106 ms): removes from here on are also logged, and
        # only those are applied under the lock.
        log: list[I64] = []
        with self.lock.read():  # no remove is half done: each one is before or logged
            self.removes_since = log
        try:
            merged = np.zeros(max(len(self.slot_version), len(versions)), np.uint8)
            merged[: len(versions)] = versions
            tree.grow_slots(len(merged))
            _remove_wins(merged, tree, np.flatnonzero(self.slot_version == VERSION_REMOVED))
            n_live = int(live_mask(merged).sum())
            with self.lock.write(why):
                late = np.concatenate([np.zeros(0, np.int64), *log])
                self.removes_since = None
                top = max(len(merged), len(self.slot_version))
                if top > len(merged):  # a remove of slots past the end grew the versions
                    merged = np.concatenate([merged, np.zeros(top - len(merged), np.uint8)])
                    tree.grow_slots(top)
                n_live -= _remove_wins(merged, tree, sorted_unique(late))
                for name, value in content.items():
                    setattr(self, name, value)
                self.tree.leaf_vectors = self.leaf_vectors()
                self.slot_version = merged
                self.n_live = n_live
        finally:
            self.removes_since = None
        old_reader.close()
        old_file.close()

    # --- changes (worker, under the write lock) --------------------------------------------

    def grow_slots(self, n: int) -> None:
        """Make room for slots below n (versions and the tree's primary leaves)."""
        if n > len(self.slot_version):
            grown = np.zeros(max(n, len(self.slot_version) * 5 // 4), dtype=np.uint8)
            grown[: len(self.slot_version)] = self.slot_version
            self.slot_version = grown
        self.tree.grow_slots(n)

    def push(self, posting: int, offset: int, count: int) -> None:
        """Publish a written block into a posting's chain; queue the posting if it is now
        over its entry budget or has too many blocks."""
        self.table.push(posting, offset, count)
        t = self.table
        if (
            t.post_entries[posting] > self.limit
            or self.excess_blocks(posting) >= self.params.max_blocks
        ):
            self.pending.add(posting)

    def excess_blocks(self, posting: int) -> int:
        """Blocks of a posting beyond the fewest its entries need (appended blocks)."""
        t = self.table
        return int(t.post_blocks[posting]) - -(-int(t.post_entries[posting]) // self.block_cap)

    def clear(self, posting: int) -> None:
        """Drop a posting's chain (caller holds the write lock). The table hands the blocks to
        the file's space map: blocks written since the last checkpoint began are in no
        checkpoint and, as no search can be running now (we hold the write lock) and every
        later one sees the new table, reusable at once; older blocks wait for the next
        checkpoint (`persist.checkpoint`)."""
        before = self.table.ref_bytes
        self.table.clear(posting)
        self.freed_bytes += before - self.table.ref_bytes
        self.file.readers_done()

    def over_budget(self) -> bool:
        """Whether the posting file (its length, free space inside it included) passes
        PRESSURE_SHARE x `max_disk_ratio` x the raw float32 bytes of the live vectors (a
        margin below the budget: one batch of rewrites lands before the next check)."""
        return self.file.length > PRESSURE_SHARE * self.budget_bytes()

    def budget_bytes(self) -> int:
        """The posting file's disk budget: `max_disk_ratio` x the raw float32 bytes of the
        live vectors, less the rerank store's live rows (the store counts in the budget)."""
        n = max(1, self.n_live)
        store = row_bytes(self.params.rerank, self.dim) * n
        return int(self.params.max_disk_ratio * 4 * self.dim * n) - store

    def rewrite_limit(self) -> int:
        """The data end that maintenance rewrites (clean-ups, split halves) may reach:
        GUARD_SHARE of the disk budget, or for a file already past it (deletes lower the
        budget under it, a placement keeps at least one copy) the `ceiling` that
        `update_ceiling` fixed when it passed; and never past what the disk has room for
        (`disk_room`). A rewrite with no room below the limit waits (`SpannState.stuck`)
        instead of growing the file."""
        limit = max(int(GUARD_SHARE * self.budget_bytes()), self.ceiling)
        left = self.disk_room()
        return limit if left is None else min(limit, self.file.length + left)

    def disk_room(self) -> int | None:
        """Bytes the disk lets maintenance write past the file's data end: its free space
        less `room.HEADROOM` (kept for the database's own writes and checkpoints), so a
        rewrite waits rather than fill the disk; None when the file system cannot say.
        (Space inside the file, below its end, is already on the disk.)"""
        free = room.free_bytes(self.directory)
        return None if free is None else max(0, free - room.HEADROOM)

    def update_ceiling(self, slack: int) -> None:
        """Fix the `ceiling` at `slack` beyond the file's end when the file first passes the
        guard's share of the budget (so a clean-up can start where there is no free space
        yet); clear it once the file is back within."""
        if self.file.length <= int(GUARD_SHARE * self.budget_bytes()):
            self.ceiling = 0
        elif self.ceiling == 0:
            self.ceiling = self.file.length + slack

    def disk_state(self) -> tuple[int, int, int, int]:
        """What a rewrite that found no room depends on: free bytes in the file, file end,
        live count, and the disk's room (`disk_room`, in ROOM_STEP steps up to ROOM_CAP).
        `stuck[kind]` (kind: "split", "clean", "defrag") holds it when that kind of rewrite
        could do nothing; that kind waits until it changes."""
        left = self.disk_room()
        steps = -1 if left is None else min(left, ROOM_CAP) // ROOM_STEP
        return self.file.space.free_bytes, self.file.length, self.n_live, steps

    def is_stuck(self, kind: str) -> bool:
        return self.stuck.get(kind) == self.disk_state()

    def unstuck(self) -> bool:
        """Whether a kind of rewrite that waits (`stuck`) may go on: the disk state changed
        since it could do nothing (say, a checkpoint freed the space it waits for)."""
        now = self.disk_state()
        return any(state != now for state in self.stuck.values())

    def prune_stuck(self) -> None:
        """Forget the waits whose disk state changed (a changed state is no wait)."""
        now = self.disk_state()
        self.stuck = {k: v for k, v in self.stuck.items() if v == now}

    def placement_cap(self, n: int = 0) -> int:
        """Replicas a placement of `n` vectors (insert, move) may get: the build's cap (0: no
        cap); under disk pressure one fewer, and no more than the room left below the whole
        budget holds for n entries each (at least 1: every vector keeps its nearest
        posting). Inserts drained 20,000 at a time into a GloVe-50 index built at 3.87x grew
        the file to 4.4-5.0x raw with a cap of one fewer alone."""
        if not self.over_budget():
            return self.replica_cap
        cap = max(1, (self.replica_cap or self.params.replicas) - 1)
        if n > 0:
            budget = GUARD_SHARE * self.budget_bytes()
            fit = int((budget - self.file.length) // (self.params.entry_bytes(self.dim) * n))
            cap = max(1, min(cap, fit))
        return cap

    def reader_kind(self) -> str:
        """ "mmap" or "direct": the posting reader in use (the store reads alike)."""
        return "mmap" if isinstance(self.reader, MmapReader) else "direct"

    def refresh_reader(self) -> None:
        """Remap after the file grew (under the write lock: searches use the views)."""
        if isinstance(self.reader, MmapReader):
            self.reader.refresh()

    def delete_head(self, posting: int) -> None:
        """Remove a head from the graph (under the write lock)."""
        self.heads().mark_deleted(posting)
        self.live_heads -= 1
        self.heads_dirty = True


def new_state(
    dim: int, metric: str, params: BuildParams, directory: Path, file: PostingFile | None = None
) -> SpannState:
    """An empty index over `file` (default: a new posting file, generation 0)."""
    if file is None:
        file = PostingFile(
            file_path(directory, "postings", 0),
            dim,
            width=params.width,
            full_cap=params.block_entries(dim),
        )
    st = SpannState(
        dim=dim,
        metric=metric,
        params=params,
        directory=directory,
        limit=params.posting_limit(dim)[1],
        block_cap=params.block_entries(dim),
        width=params.width,
        threads=params.threads or _cores(),
        file=file,
        reader=open_reader(file, params.io),
    )
    st.rng = np.random.default_rng(params.seed)
    if params.rerank != "none":
        st.store = VectorStore(directory, dim, params.rerank, st.reader_kind(), params.row_order)
    if file.length <= PAGE:  # a new, empty file: its space map follows this table
        st.table = file.attach(st.table)
    return st


def _cores() -> int:
    return os.cpu_count() or 1


def _remove_wins(merged: U8, tree: ClusterTree, gone: I64) -> int:
    """Mark the removed slots `gone` removed in the new versions `merged` (remove wins),
    dropping the live ones from the new tree's primary leaves; how many were live."""
    drop = gone[live_mask(merged[gone])]
    if len(drop):
        tree.drop_primary(drop)
    merged[gone] = VERSION_REMOVED
    return len(drop)


def live_mask(versions: U8) -> npt.NDArray[np.bool_]:
    """Which slots are live, from their version bytes."""
    out: npt.NDArray[np.bool_] = (versions != VERSION_NONE) & (versions != VERSION_REMOVED)
    return out
