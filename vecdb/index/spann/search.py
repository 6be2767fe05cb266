"""Search of a SPANN index: heads, pruning, batched posting reads, one numba scan.

Everything happens under the state's read lock (ms) and nothing here writes. Pass 1 finds
each query's `max_postings` nearest heads in the head graph (`headgraph`: hnswlib's search over
our compact arrays) with the call's own `head_ef` (the call asks for max(head_ef, m) neighbours,
which is the beam the graph searches with, and keeps m: no shared `set_ef`). Pass 2 prunes: a posting is read only if its
head's distance is within `prune_ratio` of the nearest head's (squared L2 for "l2" and
"cosine"; for "ip" the gap to the best head is compared with its magnitude); the nearest
max(ALWAYS_READ, m / 2) are always read (`posting.prune_postings`). Pass 3 reads the
postings' blocks: warm, as offsets into the mmap (no copy;
`pairs.gather_pairs` lists the batch's (query, block) reads grouped by block, each distinct
block checked once per batch); cold, O_DIRECT reads submitted together per query. Every block
is checked before the scan (`blockcheck`: bounds, header, CRC). Pass 4 scores the batch's (query,
block) pairs ordered by block (`groupscan.scan_pairs`: each block decoded once for all the
queries that read it, ranges of pairs on several threads with `fanout.fan_out_pairs`), keeps
only entries passing the one "entry visible" predicate (current version, and in `visible`
when given: inside the scan, not after it), dedupes replicas and keeps the top k. Pass 5 widens the search for queries left with
fewer results than exist (a restrictive `visible`): 4x the postings per round, finally every
posting, so a visible set with k live members always gives k results. With `visible`, pass 1
takes max_postings / sqrt(share of the points visible) heads (`filtered_postings`). A batch of
`PARALLEL_MIN_QUERIES` or more runs on numba's thread count (`search_threads`): a warm one of
`THREADED_MIN_QUERIES` or more runs passes 1-4 as tasks (`threaded`: chunks of queries find
and prune their heads, then parts of the posting ids are each gathered, checked and scanned,
so no step of the batch runs on one thread while the others wait); a smaller or cold one runs
passes 1 and 4 on those threads. One warm query without `visible` (what an app sends) runs
passes 1-4 in one kernel call instead (`single.search_one`: the same kernels and values, no
Python between them), falling back to this path for anything it does not handle. "bits"
postings are scanned by `bitsearch` (passes 3-4: the R best 1-bit estimates per query, which
`rerank` re-scores exactly); their batches run pass 1 on the head graph's threads and pass 4
on query chunks, never `threaded`; one warm query without `visible` runs the search and
its rerank in one kernel call (`single.search_one_bits`).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from vecdb.index.base import IndexResult, SearchStats, Visible
from vecdb.index.params import PAGE_SIZE, SearchParams, prune_ratio_for
from vecdb.index.spann import bitsearch, rerank, single
from vecdb.index.spann.assign import nearest_heads
from vecdb.index.spann.blockcheck import check_blocks
from vecdb.index.spann.fanout import fan_out_pairs, run_phases
from vecdb.index.spann.postings import MmapReader
from vecdb.index.spann.state import SpannState
from vecdb.kernels.groupscan import merge_topk, pair_order, scan_pairs
from vecdb.kernels.pairs import bucket_parts, gather_pairs, gather_part
from vecdb.kernels.posting import (
    ALWAYS_READ,
    METRIC_CODE,
    NO_VISIBLE,
    SLOT_DTYPE,
    count_visible,
    gather_blocks,
    prune_postings,
)
from vecdb.kernels.postscan import search_threads

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
WIDEN = 4  # postings per query grow by this factor per widening round
# Task sizes of a threaded batch: small enough that the last task of a phase keeps the other
# threads waiting briefly, large enough that a task's fixed cost (a Python call or two, some
# 10 us) stays below 1%. GloVe-50, max_postings 64, 10,000 queries (loaded host): a query's
# heads take ~35 us of CPU; 16 posting parts by equal id ranges took 31 ms each on average,
# 70 ms the largest (half the ranges empty, see `posting_parts`); 156 parts of about equal
# entries, 3.8 ms on average, 8.3 ms the largest.
HEAD_ROWS = (16, 64)  # queries per heads task (one head-graph call): at least, at most
HEAD_CHUNKS_PER_THREAD = 16  # heads tasks per thread, within HEAD_ROWS
PART_ENTRIES = 4_096  # (query, posting) selections per posting part, before pruning
MIN_PARTS_PER_THREAD = 8  # posting parts per thread at least, while a part keeps 256
# Smaller threaded batches take the plain path (the head graph's threads, then `fan_out_pairs`): at
# 16 queries the tasks cost 1.26x its CPU (one heads task, 4 parts), at 32-400 they were
# even with it (GloVe-50, max_postings 64, alternating, load ~2).
THREADED_MIN_QUERIES = 64


def select_postings(labels: I64, dists: F32, metric: str, sp: SearchParams) -> I64:
    """Pass 2: the posting ids each query reads, -1 where pruned (labels nearest first), at
    the request's prune ratio or the metric's default (`prune_ratio_for`)."""
    ratio = prune_ratio_for(sp, metric)
    out: I64 = prune_postings(labels, dists, metric == "ip", ratio, ALWAYS_READ)
    return out


def scan(
    st: SpannState,
    queries: F32,
    sel: I64,
    vis: U8,
    use_vis: bool,
    ids: I64,
    out_d: F32,
    stats: SearchStats,
    hd: F32 | None = None,
    eps: float = 0.0,
) -> None:
    """Passes 3 and 4: read the selected postings' blocks and fold them into the top-k
    (ids / out_d come in with what earlier rounds found). "bits" postings: `bitsearch`
    (hd: the head distances aligned with sel, eps: its bound, both only used there)."""
    if st.is_bits:
        bitsearch.scan(st, queries, sel, vis, use_vis, ids, out_d, stats, hd, eps)
        return
    t = st.table
    chains = (t.post_first, t.blk_next, t.blk_off, t.blk_cnt)
    metric = METRIC_CODE[st.metric]
    qoff, qscale = st.quant()
    fixed = (st.dim, st.width, qoff, qscale)
    tail = (st.slot_version, vis, use_vis, metric)
    if isinstance(st.reader, MmapReader):
        u8, u32, f32, u16 = st.reader.views()
        b_off, b_cnt, b_bytes, off, cnt, pq, pages, postings = gather_pairs(
            sel, *chains, st.dim, st.width, PAGE_SIZE
        )
        stats.postings_read += postings
        stats.blocks_read += len(off)
        stats.pages_read += pages
        stats.bytes_read += pages * PAGE_SIZE
        path = st.file.path
        check_blocks(u8, b_off, b_cnt, st.dim, st.width, path, None, st.file.verified, b_bytes)
        order = np.arange(len(off), dtype=np.int64)
        head = (u8, u32, f32, u16, *fixed, off, cnt)
        threads = search_threads(len(queries))  # 1 for a single query: the kernel runs here
        fan_out_pairs(scan_pairs, head, order, pq, queries, tail, ids, out_d, threads)
        return
    ptr, off, cnt, nbytes, pages, postings = gather_blocks(
        sel, *chains, st.dim, st.width, PAGE_SIZE
    )
    stats.postings_read += postings
    stats.blocks_read += len(off)
    stats.pages_read += pages
    for i in range(len(queries)):
        lo, hi = int(ptr[i]), int(ptr[i + 1])
        buf, boff, nread = st.reader.read(off[lo:hi], nbytes[lo:hi])
        stats.bytes_read += nread
        check_blocks(
            buf, boff, cnt[lo:hi], st.dim, st.width, st.file.path, off[lo:hi], None, nbytes[lo:hi]
        )
        b4 = buf[: len(buf) // 4 * 4]
        views = (
            buf,
            b4.view(SLOT_DTYPE),
            b4.view(np.float32),
            buf[: len(buf) // 2 * 2].view(np.uint16),
        )
        order, pq = pair_order(np.array([0, hi - lo], np.int64), boff)
        args = (*views, *fixed, boff, cnt[lo:hi], order, pq, 0, hi - lo, queries[i : i + 1])
        scan_pairs(*args, *tail, ids[i : i + 1], out_d[i : i + 1])


def search(
    st: SpannState,
    queries: F32,
    k: int,
    sp: SearchParams,
    visible: Visible | None,
    eps: float = 0.0,
) -> IndexResult:
    """Top-k slots and distances of each query (padded with -1 / +inf) and what it read.
    eps > 0 ("bits", asked by `rerank.search`): the distances are lower bounds of them
    (`bitscan.scan_blocks`), for the rerank's stop rule."""
    if st.store is not None and rerank.wanted(st, sp):  # candidates, then the exact rerank
        eps = rerank.bound_eps(st, sp)
        inner = functools.partial(search, eps=eps) if eps > 0 else search
        if len(queries) == 1 and visible is None:  # one kernel call
            wide = max(k, rerank.candidates(st, sp))
            if not st.is_bits:  # exact code distances: no bound, nothing to widen
                one = single.search_one_rerank(st, queries, k, sp, wide)
                if one is not None:
                    return one
            else:
                one = single.search_one_bits(st, queries, k, sp, wide, eps)
                if one is not None:
                    if one.stats.extra.get("bound_short", 0.0) <= 0:  # nothing to widen
                        return one
                    short = np.ones(1, np.bool_)
                    return rerank.widen(st, queries, k, sp, visible, inner, eps, one, short, wide)
        return rerank.search(st, queries, k, sp, visible, inner, eps)
    nq = len(queries)
    bits = st.is_bits  # (its own scan: `bitsearch`)
    if nq == 1 and visible is None and not bits:  # one warm query: passes 1-4 in one kernel
        one = single.search_one(st, queries, k, sp)
        if one is not None:
            return one
    ids = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    stats = SearchStats(queries=nq)
    vis, use_vis = (visible.bits, True) if visible is not None else (NO_VISIBLE, False)
    with st.lock.read():
        if nq == 0 or st.graph is None or st.live_heads == 0:
            return IndexResult(ids, out_d, stats)
        m = min(filtered_postings(sp.max_postings, visible, st.n_live), st.live_heads)
        threads = bitsearch.threads_for(nq) if bits else search_threads(nq)
        stats.heads_searched += nq * m
        reader = st.reader
        if (
            threads > 1
            and nq >= THREADED_MIN_QUERIES
            and isinstance(reader, MmapReader)
            and not bits
        ):
            sel = threaded(st, reader, queries, sp, m, vis, use_vis, ids, out_d, stats, threads)
        else:
            # Pass 1: nearest heads, one batched call, per-call effort
            labels, hd = nearest_heads(st.graph, st.live_heads, queries, sp.head_ef, m, threads)
            # Pass 2: query-aware pruning
            sel = select_postings(labels, hd, st.metric, sp)
            # Passes 3 and 4: read and scan
            scan(st, queries, sel, vis, use_vis, ids, out_d, stats, hd, eps)
        # Pass 5: widen for queries short of the results that exist
        # (rows fill from the left: a short one ends in -1; one query: no numpy reduction)
        if ids[0, -1] < 0 if nq == 1 else ids[:, -1].min() < 0:
            want = min(k, int(count_visible(st.slot_version, vis, use_vis)))
            widen(st, queries, sp, vis, use_vis, want, sel, ids, out_d, stats, eps)
    return IndexResult(ids, out_d, stats)


def threaded(
    st: SpannState,
    reader: MmapReader,
    queries: F32,
    sp: SearchParams,
    m: int,
    vis: U8,
    use_vis: bool,
    ids: I64,
    out_d: F32,
    stats: SearchStats,
    threads: int,
) -> I64:
    """Passes 1-4 of a warm batch on `threads` threads, as three phases of tasks
    (`fanout.run_phases`: a thread done early takes the next task instead of waiting for
    the others at a barrier). Phase 1: chunks of queries, each finding its heads (one
    single-threaded head-graph call; it releases the GIL), pruning them into its rows of `sel`
    and bucketing them by posting part (`bucket_parts`). Phase 2: the parts, each
    gathering its postings' (query, block) pairs from every chunk (`gather_part`: every
    query that reads a posting is in its part, so a block is still decoded once per batch),
    checking those blocks and scanning them into the thread's own top-k table. Phase 3:
    ranges of rows, each merging the other threads' tables into ids / out_d. The serial
    steps of the one-thread path (the whole batch's gather, check and merge) are all
    inside tasks. The same pairs are scanned as by `scan`, and the top-k fold does not
    depend on their order, so the results are the serial path's bit for bit. Returns
    `sel` (the postings read, -1 where pruned)."""
    nq = len(queries)
    t = st.table
    npost = len(t.post_first)
    sel = np.empty((nq, m), np.int64)
    rows = min(max(HEAD_ROWS[0], -(-nq // (HEAD_CHUNKS_PER_THREAD * threads))), HEAD_ROWS[1])
    chunks = -(-nq // rows)
    entries = nq * m
    parts = max(entries // PART_ENTRIES, min(MIN_PARTS_PER_THREAD * threads, entries // 256))
    part_of, bounds = posting_parts(t.post_entries, max(1, min(parts, npost)))
    parts = len(bounds) - 1
    keys = np.empty(nq * m, np.int64)
    ptr = np.empty((chunks, parts + 1), np.int64)
    metric = METRIC_CODE[st.metric]
    qoff, qscale = st.quant()
    head = (*reader.views(), st.dim, st.width, qoff, qscale)
    tail = (st.slot_version, vis, use_vis, metric)
    chains = (t.post_first, t.blk_next, t.blk_off, t.blk_cnt)
    read = np.zeros((parts, 3), np.int64)  # per part: postings, blocks (pairs), pages
    tables = [(ids, out_d)] + [  # the calling thread's is the result itself
        (np.full(ids.shape, -1, np.int64), np.full(out_d.shape, np.inf, np.float32))
        for _ in range(threads - 1)
    ]
    scanned = [False] * threads  # whose table holds results to merge
    spans = np.linspace(0, nq, threads + 1).astype(np.int64).tolist()  # rows per merge task

    def heads(c: int, _: int) -> None:
        lo, hi = c * rows, min(nq, (c + 1) * rows)
        labels, hd = nearest_heads(st.graph, st.live_heads, queries[lo:hi], sp.head_ef, m, 1)
        sel[lo:hi] = select_postings(labels, hd, st.metric, sp)
        bucket_parts(sel, lo, hi, part_of, keys, ptr[c])

    def part(j: int, me: int) -> None:
        b_off, b_cnt, b_bytes, off, cnt, pq, pages, postings = gather_part(
            keys, ptr, rows * m, j, nq, bounds, *chains, st.dim, st.width, PAGE_SIZE
        )
        path, verified = st.file.path, st.file.verified
        check_blocks(head[0], b_off, b_cnt, st.dim, st.width, path, None, verified, b_bytes)
        order = np.arange(len(off), dtype=np.int64)
        args = (*head, off, cnt, order, pq, 0, len(off), queries, *tail, *tables[me])
        scan_pairs(*args)
        read[j] = postings, len(off), pages
        scanned[me] = True

    def merge(r: int, _: int) -> None:
        lo, hi = spans[r], spans[r + 1]
        for w in range(1, threads):
            if scanned[w]:
                merge_topk(tables[w][0][lo:hi], tables[w][1][lo:hi], ids[lo:hi], out_d[lo:hi])

    run_phases([(chunks, heads), (parts, part), (threads, merge)], list(range(threads)))
    postings, blocks, pages = (int(v) for v in read.sum(0))
    stats.postings_read += postings
    stats.blocks_read += blocks
    stats.pages_read += pages
    stats.bytes_read += pages * PAGE_SIZE
    return sel


def posting_parts(entries: npt.NDArray[np.int32], parts: int) -> tuple[I64, I64]:
    """Posting ids cut into `parts` runs of about equal entries (what a part's scan costs,
    with how many queries read them): (part of each posting, non-decreasing; the first
    posting id of each part and the table's length after them). Equal id ranges would not
    do: ids are allocated from a table that doubles, so the top of the range is mostly
    empty (GloVe-50: 17,576 live postings in a table of 32,768)."""
    before = np.cumsum(entries, dtype=np.int64) - entries  # entries in lower ids
    total = max(1, int(before[-1] + entries[-1])) if len(entries) else 1
    part_of: I64 = np.minimum(before * parts // total, parts - 1)  # empty top: the last
    bounds: I64 = np.searchsorted(part_of, np.arange(parts + 1), "left").astype(np.int64)
    return part_of, bounds


def filtered_postings(max_postings: int, visible: Visible | None, n_live: int) -> int:
    """Postings to read when `visible` holds a share s of the live points: max_postings /
    sqrt(s). A query's k nearest visible points lie about as far as its k / s nearest points
    overall, so more postings are needed for the same recall; on GloVe-50, recall@10 0.95
    took 64 postings at s = 0.5, 128 at 0.1 and over 256 at 0.01 (bench/RESULTS.md,
    glove-50-filtered), close to this rule."""
    if visible is None or n_live <= 0:
        return max_postings
    share = min(1.0, max(visible.count(), 1) / n_live)
    return int(np.ceil(max_postings / np.sqrt(share)))


def widen(
    st: SpannState,
    queries: F32,
    sp: SearchParams,
    vis: U8,
    use_vis: bool,
    want: int,
    scanned: I64,
    ids: I64,
    out_d: F32,
    stats: SearchStats,
    eps: float = 0.0,
) -> None:
    """Pass 5: more postings for short queries (never one already scanned: `scanned` holds
    the postings read, -1 where pruned), 4x per round, then every posting (a "bits" scan's
    bounds with eps: the global centroid's distance stands in for the heads')."""
    m = scanned.shape[1]
    every_read = False
    while True:
        short = np.flatnonzero((ids >= 0).sum(1) < want)
        if len(short) == 0 or every_read:
            return
        m = min(WIDEN * m, st.live_heads)
        labels = None
        if m < st.live_heads:
            try:
                labels, _ = nearest_heads(
                    st.heads(), st.live_heads, queries[short], sp.head_ef, m, 1
                )
                stats.heads_searched += len(short) * m
            except RuntimeError:  # the graph holds fewer live heads than counted: take them all
                m = st.live_heads
        every_read = m >= st.live_heads
        if labels is None:  # every posting
            every = st.tree.leaf_postings()
            labels = np.broadcast_to(every, (len(short), len(every)))
        fresh = np.where(_isin_rows(labels, scanned[short]), -1, labels)
        sub_ids, sub_d = ids[short], out_d[short]
        scan(st, queries[short], fresh, vis, use_vis, sub_ids, sub_d, stats, None, eps)
        ids[short], out_d[short] = sub_ids, sub_d
        grown = np.full((len(ids), labels.shape[1]), -1, np.int64)
        grown[short] = labels
        scanned = grown


def _isin_rows(a: I64, b: I64) -> npt.NDArray[np.bool_]:
    """Row-wise membership: out[i, j] = a[i, j] in b[i]."""
    return np.array([np.isin(a[i], b[i]) for i in range(len(a))]).reshape(a.shape)
