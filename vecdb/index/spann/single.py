"""The fast path of one warm, unfiltered SPANN query: passes 1-4 of `search` in one kernel
(with a rerank store, `search_one_rerank` / for a "bits" index `search_one_bits`: the
search and its exact rerank).

A single query's search costs ~0.1 ms of kernel work, and called as a batch of one it paid
about as much again in the Python between the kernels (see `kernels.single`). `search_one`
takes the index's arrays, makes one `kernels.single.search_one` call under the read lock and
builds the result; it answers exactly what `search.search` answers for the same query (the
same kernels on the same values, the same counters) and returns None whenever the ordinary
path has more to do: a cold reader (or VECDB_BLOCK_CRC=always), no head graph yet, fewer
heads than asked, a block failing its header or CRC check (the ordinary path raises naming
the file), more blocks to CRC-check than `CHECK_BLOCKS`, or a row short of k results (pass
5 widens it). Only `search.search` calls it; it never raises on the index's content.

A block's first read after an open or a write needs its CRC checked: the kernel lists such
blocks instead of answering (`kernels.single.VERIFY`), `_verified` checks them as the
ordinary path would (`blockcheck.check_blocks`: their pages faulted in without the GIL, then
the CRCs, remembered in the file's bitmap) and the kernel runs again, under the same read
lock. Such a query costs a second head search, no longer the whole ordinary path (issue 12:
cold queries after an open; see bench/RESULTS.md).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.base import IndexResult, SearchStats
from vecdb.index.params import PAGE_SIZE, SearchParams, prune_ratio_for
from vecdb.index.spann import blockcheck
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.postings import MmapReader
from vecdb.index.spann.state import SpannState
from vecdb.index.spann.vectors import VectorStore
from vecdb.kernels.posting import ALWAYS_READ, METRIC_CODE, NO_VISIBLE
from vecdb.kernels.rerank import _empty
from vecdb.kernels.single import OK, VERIFY
from vecdb.kernels.single import search_one as kernel
from vecdb.kernels.single import search_one_bits as bits_kernel
from vecdb.kernels.single import search_one_rerank as rerank_kernel

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

CHECK_BLOCKS = 2048  # unverified blocks one query checks itself; more: the ordinary path
_LISTS = threading.local()  # each thread's list of blocks to verify (see `_verify_list`)


def _verify_list() -> I64:
    """This thread's (3, CHECK_BLOCKS) int64 list the kernels fill with the blocks whose CRC
    is to be checked (offset, entry count, bytes), kept for the thread's life."""
    got: I64 | None = getattr(_LISTS, "chk", None)
    if got is None:
        got = _LISTS.chk = np.empty((3, CHECK_BLOCKS), np.int64)
    return got


def _verified(st: SpannState, chk: I64, n: int, dim: int) -> bool:
    """Under the read lock: check the CRCs of the first n blocks of `chk` (a kernel's VERIFY
    list) in the file's map, as the ordinary path's `check_blocks` does (and remembering
    them); False when one fails, for the ordinary path to raise naming the file."""
    reader = st.reader
    assert isinstance(reader, MmapReader)  # (`_beams` let only that through)
    u8 = reader.views()[0]
    try:
        blockcheck.check_blocks(
            u8, chk[0, :n], chk[1, :n], dim, st.width, st.file.path, None, st.file.verified,
            chk[2, :n],
        )  # fmt: skip
    except FormatError:
        return False
    return True


def _beams(st: SpannState, sp: SearchParams) -> tuple[MmapReader, HeadGraph, int, int] | None:
    """Under the read lock: the warm reader, the head graph, `search`'s m (clamped as
    `nearest_heads` does) and the beam `nearest_heads` asks of the graph, or None where the
    ordinary path must run (a cold reader, or VECDB_BLOCK_CRC=always: every block a CRC; no
    graph or live heads yet; a beam wider than the live heads: `knn_query` raises)."""
    reader, g, live = st.reader, st.graph, st.live_heads
    if not isinstance(reader, MmapReader) or blockcheck.MODE == "always":
        return None
    if g is None or live == 0:
        return None
    m = min(sp.max_postings, live)
    hk = max(m, min(sp.head_ef, live))
    if g.n == 0 or hk > g.n - g.n_deleted:
        return None
    return reader, g, m, hk


def _graph(g: HeadGraph, hk: int) -> tuple[object, ...]:
    """The head graph's arguments of the `kernels.single` calls, the beam hk included."""
    return (
        g.kernel_vecs, g.links, g.nlinks, g.deleted, g.up_off, g.up_links, g.up_cnt, g.entry,
        g.maxlevel, g.n, hk, g.space == "ip", g.labels,
    )  # fmt: skip


def _scan(st: SpannState, sp: SearchParams) -> tuple[tuple[object, ...], HeadGraph, int] | None:
    """Under the read lock: the arguments `kernels.single.search_one` and `search_one_rerank`
    share (the head graph's to the slot versions), the graph and m; None as `_beams`."""
    beams = _beams(st, sp)
    if beams is None:
        return None
    reader, g, m, hk = beams
    t, verified = st.table, st.file.verified
    args = (
        *_graph(g, hk), m, st.metric == "ip", prune_ratio_for(sp, st.metric), ALWAYS_READ,
        t.post_first, t.blk_next, t.blk_off, t.blk_cnt, st.dim, st.width, PAGE_SIZE,
        *reader.views(), *st.quant(), blockcheck.BLOCK_MAGIC, blockcheck.UNIT,
        blockcheck._NO_BITS if verified is None else verified.bits, verified is not None,
        blockcheck.MODE != "off", st.slot_version,
    )  # fmt: skip
    return args, g, m


def search_one(st: SpannState, query: F32, k: int, sp: SearchParams) -> IndexResult | None:
    """Top-k of one query (1, dim) with no visible set, as `search.search` finds it, or None
    when the ordinary path must run (see the module docstring)."""
    chk = _verify_list()
    with st.lock.read():
        for _ in range(2):  # (a second call after verifying the blocks the first listed)
            scan = _scan(st, sp)  # (again: verifying may have grown the bitmap)
            if scan is None:
                return None
            args, g, m = scan
            ids = np.empty((1, k), np.int64)
            out_d = np.empty((1, k), np.float32)
            status, postings, pairs, pages = kernel(  # type: ignore[call-arg]  # (a star of args)
                query, *args, NO_VISIBLE, False, METRIC_CODE[st.metric], ids, out_d,
                *g.scratch(), chk,
            )  # fmt: skip
            if status != VERIFY or not _verified(st, chk, postings, st.dim):
                break
    if status != OK or ids[0, -1] < 0:
        return None
    return IndexResult(ids, out_d, _read(m, postings, pairs, pages))


def _store_rows(st: SpannState, store: VectorStore) -> tuple[bool, Any, Any]:
    """(half, rows16, rows32) of the rerank kernels: the store's rows in the slot of their
    format (float16 bits or float32), an empty matrix in the other."""
    rows = store.rows()
    empty16, empty32 = _empty(st.dim)
    if rows.dtype == np.uint16:
        return True, rows, empty32
    return False, empty16, rows


def _outputs(wide: int, k: int) -> tuple[Any, Any, Any, Any]:
    """Uninitialised (1, wide) candidate and (1, k) result rows (the kernels fill them)."""
    return (
        np.empty((1, wide), np.int64),
        np.empty((1, wide), np.float32),
        np.empty((1, k), np.int64),
        np.empty((1, k), np.float32),
    )


def _read(m: int, postings: int, blocks: int, pages: int, nbytes: int = 0) -> SearchStats:
    """One query's counters: m heads, the postings, blocks and pages its scan read, plus
    `nbytes` read besides (rerank rows)."""
    return SearchStats(
        queries=1,
        heads_searched=m,
        postings_read=postings,
        blocks_read=blocks,
        pages_read=pages,
        bytes_read=pages * PAGE_SIZE + nbytes,
    )


def _reranked(m: int, postings: int, blocks: int, pages: int, scored: int, row: int) -> SearchStats:
    """The counters `rerank.search` reports for one query: the scan's reads plus the
    `scored` store rows of `row` bytes it re-ranked."""
    nbytes = scored * row
    stats = _read(m, postings, blocks, pages, nbytes)
    stats.extra["rerank_bytes"] = float(nbytes)
    stats.extra["rerank_rows"] = float(scored)
    return stats


def search_one_rerank(
    st: SpannState, query: F32, k: int, sp: SearchParams, wide: int
) -> IndexResult | None:
    """Top-k of one query (1, dim) of an index with a rerank store whose scan keys are exact
    code distances (int8 / float16 postings), no visible set, as `rerank.search` over
    `search.search` finds it: the `wide` best of the scan re-ranked from the store (the same
    counters, rerank bytes and rows included), or None when the ordinary path must run (as
    `search_one`; also when the probed postings hold fewer than `wide` visible slots)."""
    store = st.store
    if store is None or st.is_bits:
        return None
    chk = _verify_list()
    with st.lock.read():
        for _ in range(2):  # as `search_one`
            scan = _scan(st, sp)
            if scan is None:
                return None
            args, g, m = scan
            half, rows16, rows32 = _store_rows(st, store)
            cand_ids, cand_d, ids, out_d = _outputs(wide, k)
            status, postings, pairs, pages, scored = rerank_kernel(  # type: ignore[call-arg]
                query, *args, METRIC_CODE[st.metric], cand_ids, cand_d, half, rows16, rows32,
                store.row_map(), ids, out_d, *g.scratch(), chk,
            )  # fmt: skip
            if status != VERIFY or not _verified(st, chk, postings, st.dim):
                break
    if status != OK:
        return None
    return IndexResult(ids, out_d, _reranked(m, postings, pairs, pages, scored, store.row))


def search_one_bits(
    st: SpannState, query: F32, k: int, sp: SearchParams, wide: int, eps: float = 0.0
) -> IndexResult | None:
    """Top-k of one query (1, dim) of a "bits" index with its rerank store, no visible set,
    as `rerank.search` over `search.search` finds it (the `wide` best estimates re-ranked
    exactly; the same counters, rerank bytes and rows included), or None when the ordinary
    path must run (as `search_one`; also when the probed postings hold fewer than `wide`
    visible slots: it widens)."""
    store, coder = st.store, st.bits
    if store is None or coder is None:
        return None
    chk = _verify_list()
    with st.lock.read():
        beams = _beams(st, sp)
        if beams is None:
            return None
        reader, g, m, hk = beams
        t = st.table
        verified = st.file.verified
        u8, u32, f32, _ = reader.views()
        half, rows16, rows32 = _store_rows(st, store)
        cand_ids, cand_d, ids, out_d = _outputs(wide, k)
        for _ in range(2):  # as `search_one` (the bitmap read again: verifying may grow it)
            status, postings, blocks, pages, scored = bits_kernel(  # type: ignore[call-arg]  # (a star of the graph's args)
                query, *_graph(g, hk), m, st.metric == "ip", prune_ratio_for(sp, st.metric),
                ALWAYS_READ, t.post_first, t.blk_next, t.blk_off, t.blk_cnt, st.bdim,
                st.width, PAGE_SIZE, u8, u32, u32.view(np.uint64), f32, blockcheck.BLOCK_MAGIC,
                blockcheck.UNIT, blockcheck._NO_BITS if verified is None else verified.bits,
                verified is not None, blockcheck.MODE != "off", coder.centroid, coder.qrot,
                METRIC_CODE[st.metric], st.slot_version, eps, cand_ids, cand_d, half, rows16,
                rows32, store.row_map(), ids, out_d, *g.scratch(), coder.held(len(st.slot_version)),
                chk,
            )  # fmt: skip
            if status != VERIFY or not _verified(st, chk, postings, st.bdim):
                break
    if status != OK:
        return None
    stats = _reranked(m, postings, blocks, pages, scored, store.row)
    if eps > 0:  # as `rerank.search` counts it
        short = cand_ids[0, -1] >= 0 and cand_d[0, -1] <= out_d[0, -1]
        stats.extra["bound_short"] = float(short)
    return IndexResult(ids, out_d, stats)
