"""Bulk build of a SPANN index: private structures first, then one swap of references.

Pass 1 builds the clustering tree (`vecdb.index.heads`: balanced k-means, heads are the real
vectors nearest the leaf centres). Pass 2 puts the heads in the head graph (`headgraph`: built by hnswlib, kept
in compact arrays, float16 vectors) whose labels are posting ids. Pass 3 picks up to `replicas` postings per vector by the RNG rule among its
`candidates` nearest heads. Pass 4 trims the farthest replicas if the postings would pass `max_disk_ratio` x the raw
float32 bytes (later placements keep that replica cap), then cuts postings to `BUILD_FILL` of
the entry budget (room for the first inserts), never orphaning a vector.
Pass 5 writes the postings, packed best-fit, into a new posting file generation, in groups of
bounded size. Pass 6 fills the tree's memberships (primary leaf = nearest kept posting),
counts and radii. Pass 7 publishes everything under the write lock by swapping references;
slots removed while the build ran stay removed (remove wins). Searches run on the previous
state until then. Memory beyond the input: the (n, replicas) placement arrays, one group of
encoded blocks and the head graph; no n x k distance matrix and no copy of the input.
Passes 1-6 of a build of at least `VECDB_BUILD_CHILD_MIB` MiB run in a child process
(`vecdb.index.spann.child`), so their temporaries never stay in a long-running process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.allocator import release_free_memory
from vecdb.errors import DiskFull
from vecdb.index import room
from vecdb.index.base import Progress
from vecdb.index.heads import ClusterTree, build_tree, fill_members
from vecdb.index.params import BITS, BuildParams
from vecdb.index.spann import child, staging
from vecdb.index.spann.assign import (
    ExactHeads,
    cut,
    disk_cap,
    graph_wins,
    make_head_graph,
    primaries,
    select_replicas,
)
from vecdb.index.spann.bitcodes import BitCoder, Codec
from vecdb.index.spann.calibrate import calibrate
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.postings import GROW_MIN, GROW_SHARE, PostingFile, Quantizer, to_half
from vecdb.index.spann.state import SpannState, file_path, head_space, open_reader
from vecdb.index.spann.table import BlockTable
from vecdb.index.spann.update import chunk_bounds
from vecdb.index.spann.vectors import row_bytes
from vecdb.kernels.posting import block_extent, block_extents, group_by_posting

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BUILD_SHARE = 0.93  # a build's entries may fill this share of the disk budget (the rest is
# room for the garbage and free space of later updates; blocks' rounding to pages comes on
# top: GloVe-50 at 3.0 ends at 2.89x raw with 0.95). 0.95 left a delete-and-upsert churn of
# 1024-d vectors 0.05 % over its budget once the trim kept replicas by distance ratio
# (filling the budget fully, where dropping whole columns stopped short of it)
BUILD_FILL = 0.9  # a build cuts each posting to this share of its entry limit (nearest
# kept), so the first inserts after it do not split a large share of the postings at once.
# An int8 + float16-rerank build of 65,536 random 1024-d rows keeps 7.6 replicas under the
# byte budget (postings 84% of the limit): its first 4,464 inserts split 960 of 2,944 postings
# (15,252 moves, 49.9 s); cut at 0.9: 146 splits, 12.1 s; at 0.8: none, 2.2 s. GloVe-50,
# recall@10 at equal KB read per query (1 thread, old and new alternated): 0.9 ~ uncut
# (int8 + rerank 0.943 vs 0.942 at 511 KB; float16 0.951 vs 0.953 at 984 KB), 0.8 loses 0.004
GROUP_BYTES = 8 << 20  # encoded blocks written per packed write (bounds build memory)
ASSIGN_ROWS = 65_536  # rows per replica-selection step (progress granularity)
# Build candidates are exact (a BLAS product and a heap per row on every core) up to this
# many heads, from the head graph beyond it. Per row, 2 threads, 20,000 rows (scratch
# `calib.py`, 2026-12-05): exact ~6.5 us + heads x (3.2 + 0.011 x dim) ns, the selection
# more than the product; the graph at build_ef 96 ~15 + 0.035 x dim us, nearly flat in
# heads. Even at 3,000 heads from 50 to 1,024 dims (GloVe-50 20.2 vs 20.3, 384-d 31.6 vs
# 27.5, 1,024-d 50.5 vs 48.6 us); at 9,000 the graph 1.8-2.8x faster. (The earlier rule,
# heads x dim against a budget, sent GloVe-50 with 8,757 heads to exact candidates: a 53 s
# build against 14 s by the graph.) From PROBE_MIN_DIM dimensions the data decides
# (`assign.graph_wins`): on wide clustered rows the graph is the faster with fewer heads too
# (2026-12-07, 20,000 rows, ~2,000 heads: 384-d 18 vs 23 us a row, 1,536-d 46-50 vs 73),
# on structureless rows it is slower and misses heads (random 384-d: 36 vs 26 us, 0.89 of
# the 8 nearest found; random 1,024-d, 337 heads: 18 vs 11 us); on GloVe-50 the exact path
# is the faster (15 vs 16 us), and the graph finds 0.986 of the 32 nearest
EXACT_HEADS = 3_000
PROBE_MIN_DIM = 256
# A posting's bytes beside its entries' and its head vector's, for `build_need`: its head
# graph node's links, its tree and table rows in the state file (over-counted)
NODE_BYTES = 1_024


def _report(progress: Progress | None, phase: str, done: int, total: int) -> None:
    if progress is not None:
        progress(phase, done, total)


def write_postings(
    file: PostingFile,
    table: BlockTable,
    slots: I64,
    vectors: F32,
    posts: npt.NDArray[np.int32],
    keep: npt.NDArray[np.bool_],
    n_postings: int,
    block_cap: int,
    progress: Progress | None,
) -> None:
    """Pass 5: every posting's kept entries as blocks of at most `block_cap` entries
    (version 1), best-fit packed, in groups of about GROUP_BYTES."""
    starts, rows, _ = group_by_posting(posts, keep, n_postings)
    ones = np.ones(int(np.diff(starts).max()) if n_postings else 0, np.uint8)
    # float16 postings: convert once, not once per replica (the largest part of the write);
    # "bits" postings: code once, the blocks copy the entries
    stored: npt.NDArray[Any] = to_half(vectors) if file.width == 2 else vectors
    if isinstance(file.quant, BitCoder):
        stored = file.quant.encode(vectors)
    group: list[tuple[int, int]] = []
    blocks: list[npt.NDArray[np.uint8]] = []
    size = 0
    for p in range(n_postings + 1):
        if p < n_postings and starts[p + 1] > starts[p]:
            r = rows[starts[p] : starts[p + 1]]
            for lo, hi in chunk_bounds(len(r), block_cap):
                rr = r[lo:hi]
                blocks.append(file.encode(p, slots[rr], ones[: len(rr)], stored[rr]))
                group.append((p, len(rr)))
                size += len(blocks[-1])
        if blocks and (size >= GROUP_BYTES or p == n_postings):
            for (q, count), off in zip(group, file.write_packed(blocks), strict=True):
                table.push(q, int(off), count)
            group, blocks, size = [], [], 0
            _report(progress, "write", p, n_postings)


def build(st: SpannState, slots: I64, vectors: F32, progress: Progress | None = None) -> None:
    """Replace the whole content by a bulk build of (slots, vectors); `DiskFull` before
    anything is written when the disk lacks room for it (`build_need`, `room.ensure`). A
    build that fails removes its new posting file at once (a full disk must not stay full)."""
    p, n = st.params, len(slots)
    gen = st.file_gen + 1
    need = build_floor(st, n)
    if st.refused_build:  # what the last refused build measured, scaled to n
        seen_n, seen_need = st.refused_build
        need = max(need, seen_need * n // max(1, seen_n))
    room.ensure(st.directory, need, build_what(n), build_hint(st))
    file: PostingFile | None = None
    try:
        staged = staging.staged_fd(vectors) is not None
        if child.use_child(n, st.dim, st.directory, need, staged):  # a large build: in a child
            file, table, tree, graph, cap = child.build_in_child(st, gen, slots, vectors, progress)
        else:
            file, table, tree, graph, cap = _in_process(st, gen, slots, vectors, progress)
        reader = open_reader(file, p.io)
        if st.store is not None:  # the rerank rows, written before a search may see the slots
            write_rows(st, slots, vectors, tree)
    except BaseException as exc:
        if file is not None:
            file.close()
        file_path(st.directory, "postings", gen).unlink(missing_ok=True)
        if isinstance(exc, DiskFull) and exc.need:  # retries wait for that much room
            st.refused_build = (n, exc.need)
        raise
    st.refused_build = None
    # Pass 7: publish by swapping references
    versions = np.zeros(int(slots.max()) + 1 if n else 0, np.uint8)
    versions[slots] = 1
    heads = 0 if graph is None else graph.get_current_count()
    table.ensure(heads)
    content: dict[str, object] = {"file": file, "reader": reader, "graph": graph, "tree": tree}
    content["table"] = table
    content |= {"file_gen": gen, "live_heads": heads, "next_posting": heads, "replica_cap": cap}
    content |= {"pending": set(), "heads_dirty": True, "freed_bytes": 0}
    st.publish("build publish", versions, content)
    release_free_memory()
    # How many 1-bit candidates this data needs re-ranked (`calibrate`): after the publish,
    # so without progress reports (a report may cancel the job, which must not happen to a
    # build already published): 0.2 s at 390,000 x 384 (MiniLM, 100), 0.9 s at 30,000 x
    # 1024 (random, 2,000)
    if st.is_bits:
        st.rerank_k, st.rerank_k_agreement = calibrate(st, slots, vectors)


def input_array(st: SpannState, n: int) -> F32 | None:
    """Where the engine should put the n vectors of the next build: an array on a staged
    file its child maps without a copy (`staging`) when that build will run in a child,
    else None (the caller allocates)."""
    if not child.use_child(n, st.dim, st.directory, build_floor(st, n)):
        return None
    return staging.staged_rows(st.directory, n, st.dim)


def build_floor(st: SpannState, n: int) -> int:
    """The bytes any bulk build of n vectors writes at least, checked before its passes
    run: one posting entry and its rerank row a vector, its heads and state (`build_need`
    is the real count, known after pass 4)."""
    if n == 0:
        return 0
    p = st.params
    data = n * (p.entry_bytes(st.dim) + row_bytes(p.rerank, st.dim))
    return data + _beside(st, n, max(1, round(p.head_fraction * n)), data)


def build_need(st: SpannState, n: int, counts: I64) -> int:
    """The bytes a bulk build of n vectors writes, once pass 4 has decided each posting's
    entry count (`counts`): the postings' blocks (full blocks and the last of each, by
    `block_extents`), the rerank rows, and beside them the file's growth chunk, the head
    graph and the state file (over-counted: `_beside`)."""
    cap = st.block_cap
    full, rest = counts // cap, counts % cap
    blocks = int(full.sum()) * block_extent(cap, st.bdim, st.width, cap)
    blocks += int(block_extents(rest[rest > 0], st.bdim, st.width, cap).sum())
    data = blocks + n * row_bytes(st.params.rerank, st.dim)
    return data + _beside(st, n, len(counts), data)


def kept_counts(posts: npt.NDArray[np.int32], keep: npt.NDArray[np.bool_], n_postings: int) -> I64:
    """Kept entries per posting, ASSIGN_ROWS rows at a time (`posts[keep]` whole would copy
    up to the (n, replicas) matrix: 320 MB at 10M vectors)."""
    counts = np.zeros(n_postings, np.int64)
    for lo in range(0, len(posts), ASSIGN_ROWS):
        hi = lo + ASSIGN_ROWS
        counts += np.bincount(posts[lo:hi][keep[lo:hi]], minlength=n_postings)
    return counts


def _beside(st: SpannState, n: int, heads: int, data: int) -> int:
    """A build's bytes beside its postings' and rows' `data`: the file's growth chunk,
    and per posting NODE_BYTES and a head vector, per vector 16 bytes of state."""
    return data // GROW_SHARE + GROW_MIN + heads * (NODE_BYTES + 4 * st.dim) + 16 * n


def build_what(n: int) -> str:
    return f"the index build of {n:,} vectors"


def build_hint(st: SpannState) -> str:
    ratio = st.params.max_disk_ratio
    return f"; a lower max_disk_ratio (index_params, now {ratio:g}) needs less"


def write_rows(st: SpannState, slots: I64, vectors: F32, tree: ClusterTree) -> None:
    """A bulk build's rerank rows. Row order "head": every slot gets a new row, in the
    order of its primary posting (posting ids follow the clustering tree, so near postings
    are near in the file too) and by slot within one; from row 0 again when no row is live,
    neither here nor in the last checkpoint (a rebuild empties the index and checkpoints
    first), else after the rows in use (those die at the next checkpoint and `reclaim`
    punches them)."""
    store = st.store
    assert store is not None
    if not store.mapped:
        store.write(slots, vectors)
        return
    if st.n_live == 0 and store.ckpt_live == 0:
        store.reset_rows()
    order = np.argsort(tree.primary[slots], kind="stable") if len(slots) else None
    store.write(slots, vectors, fresh=True, order=order)


def fit_codec(p: BuildParams, metric: str, vectors: F32) -> Codec | None:
    """The coder of a new posting file for a build of `vectors`: int8's quantizer (fitted
    to them; none for an empty build), the "bits" coder (`bitcodes.BitCoder`), or None."""
    if p.vector_dtype == "int8":
        return Quantizer.fit(vectors) if len(vectors) else None
    if p.vector_dtype == BITS:
        return BitCoder.fit(vectors, metric, p.rerank, p.seed, p.rotation)
    return None


def _in_process(
    st: SpannState, gen: int, slots: I64, vectors: F32, progress: Progress | None
) -> child.Built:
    """Passes 1-6 in this process, into posting file generation `gen`."""
    quant = fit_codec(st.params, st.metric, vectors)
    path = file_path(st.directory, "postings", gen)
    file = PostingFile(path, st.dim, width=st.width, quant=quant, full_cap=st.block_cap)
    table = file.attach(BlockTable(st.bdim, st.width))
    try:
        tree, graph, cap = _passes(st, file, table, slots, vectors, progress)
    except BaseException:  # abandoned (closing, superseded) or failed: close the new file
        file.close()
        raise
    return file, table, tree, graph, cap


def _passes(
    st: SpannState,
    file: PostingFile,
    table: BlockTable,
    slots: I64,
    vectors: F32,
    progress: Progress | None,
) -> tuple[ClusterTree, HeadGraph | None, int]:
    """Passes 1-6 into private structures: (tree, head graph, replica cap)."""
    p, n = st.params, len(slots)
    tree, graph, cap = ClusterTree(st.dim), None, 0
    if n:
        # Pass 1: the clustering tree and its heads
        n_heads = max(1, min(n, round(p.head_fraction * n)))
        tree, head_rows = build_tree(vectors, n_heads, p.seed, progress, st.threads)
        n_heads = len(head_rows)
        # Pass 2: the head graph
        _report(progress, "heads", 0, n_heads)
        heads = vectors[head_rows]
        graph = make_head_graph(heads, st.metric, p, st.threads)
        # the tree's leaf centroids as the graph holds them (float16-rounded), so the radii
        # below bound distances to the centroids later searches read
        stored = graph.get_items(np.arange(n_heads))
        tree.leaf_vectors = lambda q: stored[q]
        exact = ExactHeads(heads, head_space(st.metric), exact=n_heads <= EXACT_HEADS)
        if exact.exact and st.dim >= PROBE_MIN_DIM:
            exact.exact = not graph_wins(graph, exact, vectors, p, st.threads)
        _report(progress, "heads", n_heads, n_heads)
        # Pass 3: replicas by the RNG rule
        posts = np.empty((n, p.replicas), np.int32)
        dists = np.empty((n, p.replicas), np.float32)
        for lo in range(0, n, ASSIGN_ROWS):
            hi = min(n, lo + ASSIGN_ROWS)
            pp, dd = select_replicas(graph, n_heads, vectors[lo:hi], p, st.threads, exact=exact)
            posts[lo:hi], dists[lo:hi] = pp, dd
            _report(progress, "assign", hi, n)
        # Pass 4: the disk budget (less the rerank store's rows), then the posting cut
        share = BUILD_SHARE * p.max_disk_ratio * 4 * st.dim - row_bytes(p.rerank, st.dim)
        budget = max(n, share * n / p.entry_bytes(st.dim))
        cap = disk_cap(posts, int(budget), dists)
        keep = cut(posts, dists, max(1, int(BUILD_FILL * st.limit)), n_heads)
        del dists
        # Room for what passes 5-6 and the publish write, before any of it is written
        counts = kept_counts(posts, keep, n_heads)
        room.ensure(st.directory, build_need(st, n, counts), build_what(n), build_hint(st))
        del counts
        # Pass 5: postings into the new file generation
        write_postings(file, table, slots, vectors, posts, keep, n_heads, st.block_cap, progress)
        # Pass 6: memberships, counts and radii
        fill_members(tree, slots, primaries(posts, keep), vectors)
        tree.trim()
        del posts, keep, heads, exact, stored
    return tree, graph, cap
