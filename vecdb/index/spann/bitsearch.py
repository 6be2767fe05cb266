"""Passes 3 and 4 of a search over "bits" postings: the 1-bit estimates pick candidates.

`search.scan` hands a "bits" index's reads here (`scan`, same arguments). Each query's
selected postings are gathered as block lists (`posting.gather_blocks`, CSR per query),
checked (`blockcheck`) and scanned by `bitscan.scan_blocks`: the query is rotated and
quantized once, every visible entry gets an estimated distance from its code (in the metric's
units), and the best R = the row width of `ids` distinct slots are kept, ascending (with
`rerank_eps`, by lower bounds of their distances: `head_distances` gives the deviations). The
exact distances and the final top k come after, from the rerank store (`rerank.search`, which
asks `search.search` for R candidates: pass 5's widening and `visible` work on them as on
any scan's rows). Warm, a batch's queries are cut into chunks run on `threads` threads
(`fanout.run_phases`; each chunk writes only its own rows, so no merge, and a query's row
does not depend on the batch or thread it ran in); cold (`io="direct"`), each query's blocks
are read with O_DIRECT and scanned in turn. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.index.base import SearchStats
from vecdb.index.params import PAGE_SIZE
from vecdb.index.spann.blockcheck import check_blocks
from vecdb.index.spann.fanout import run_phases
from vecdb.index.spann.postings import MmapReader
from vecdb.index.spann.state import SpannState
from vecdb.kernels.bitscan import scan_blocks
from vecdb.kernels.posting import METRIC_CODE, SLOT_DTYPE, block_values, gather_blocks

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
# A query's bit search is ~150-250 us at 384-d (MiniLM, 48-64 postings, helper B's offline
# kernel), far above a pool task's ~10 us hand-off: any batch of this many goes to threads.
PARALLEL_MIN_QUERIES = 2
CHUNKS_PER_THREAD = 4  # query chunks per thread (a preempted thread holds up one chunk)
NO_HEADS = np.zeros(0, np.float32)  # `head_distances` without a bound (never read)


def threads_for(nq: int) -> int:
    """Threads a bit search of `nq` queries uses (numba's count, as `search_threads`)."""
    return min(nb.get_num_threads(), nq) if nq >= PARALLEL_MIN_QUERIES else 1


def in_chunks(nq: int, run: Callable[[int, int], None]) -> None:
    """run(lo, hi) over the queries [0, nq): at once on this thread, or in contiguous query
    chunks (CHUNKS_PER_THREAD a thread) on `threads_for(nq)` threads (`fanout.run_phases`;
    each chunk writes only its own rows, so a query's answer does not depend on its chunk)."""
    threads = threads_for(nq)
    if threads == 1:
        run(0, nq)
        return
    chunks = min(nq, CHUNKS_PER_THREAD * threads)
    bounds = np.linspace(0, nq, chunks + 1).astype(np.int64).tolist()
    run_phases([(chunks, lambda c, _: run(bounds[c], bounds[c + 1]))], list(range(threads)))


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
    """Passes 3 and 4 for "bits" postings: fold the selected postings' entries into each
    query's R best keys (ids / out_d, R = their width, come in with what earlier rounds
    found): the estimates, or with eps > 0 their lower bounds (`scan_blocks`), hd (aligned
    with sel) giving the head distances the bounds need (None, or an "ip" index: the global
    centroid's distance stands in)."""
    coder = st.bits
    assert coder is not None
    t = st.table
    chains = (t.post_first, t.blk_next, t.blk_off, t.blk_cnt)
    ptr, off, cnt, nbytes, pages, postings = gather_blocks(
        sel, *chains, st.bdim, st.width, PAGE_SIZE
    )
    stats.postings_read += postings
    stats.blocks_read += len(off)
    stats.pages_read += pages
    words = st.bdim - 1
    fixed = (coder.centroid, coder.qrot, METRIC_CODE[st.metric], st.slot_version, vis, use_vis)
    hsq = head_distances(st, sel, hd, eps, len(off))

    def held() -> U8:  # the calling thread's bitmap
        return coder.held(len(st.slot_version))

    if isinstance(st.reader, MmapReader):
        stats.bytes_read += pages * PAGE_SIZE
        u8, u32, f32, _ = st.reader.views()
        u64 = u32.view(np.uint64)
        blocks, first = np.unique(off, return_index=True)  # a block read by several queries
        path, verified = st.file.path, st.file.verified
        check_blocks(u8, blocks, cnt[first], st.bdim, st.width, path, None, verified, nbytes[first])
        views = (u8, u32, u64, f32, words, off, cnt, ptr)

        def part(lo: int, hi: int) -> None:
            scan_blocks(*views, lo, hi, queries, *fixed, hsq, eps, ids, out_d, held())

        in_chunks(len(queries), part)
        return
    for i in range(len(queries)):
        lo, hi = int(ptr[i]), int(ptr[i + 1])
        buf, boff, nread = st.reader.read(off[lo:hi], nbytes[lo:hi])
        stats.bytes_read += nread
        check_blocks(
            buf, boff, cnt[lo:hi], st.bdim, st.width, st.file.path, off[lo:hi], None, nbytes[lo:hi]
        )
        b64 = buf[: len(buf) // 8 * 8]
        views = (
            buf,
            b64.view(SLOT_DTYPE),
            b64.view(np.uint64),
            buf[: len(buf) // 4 * 4].view(np.float32),
            words,
            boff,
            cnt[lo:hi],
            np.array([0, hi - lo], np.int64),
        )
        scan_blocks(
            *views, 0, 1, queries[i : i + 1], *fixed, hsq[lo:hi], eps,
            ids[i : i + 1], out_d[i : i + 1], held(),
        )  # fmt: skip


def head_distances(st: SpannState, sel: I64, hd: F32 | None, eps: float, blocks: int) -> F32:
    """Per block of `gather_blocks(sel)`, the squared distance of its query to its posting's
    head (`scan_blocks`' head_sq): hd's, or NaN (unknown: no distances, or an "ip" index,
    whose head distances are inner products); none without a bound (the scan reads them only
    with eps > 0)."""
    if eps <= 0:
        return NO_HEADS
    if hd is None or st.metric == "ip":
        return np.full(blocks, np.nan, np.float32)
    t = st.table
    vals = np.ascontiguousarray(hd, np.float32)
    out: F32 = block_values(sel, vals, t.post_first, t.blk_next, blocks)
    return out
