"""Search of a SPANN index: heads, pruning, batched posting reads, one numba scan.

Pass 1 finds each query's `max_postings` nearest heads in the hnswlib graph (one batched call,
`head_ef` effort). Pass 2 prunes: a posting is read only if its head's distance is within
`prune_ratio` of the nearest head's (for "l2" and "cosine" these are squared L2 distances,
normalised vectors for cosine; for "ip" the gap to the best head is compared with its
magnitude, so the ratio stays meaningful with negative distances); the two nearest are always
read. Pass 3 reads the postings' blocks: warm, as offsets into the mmap of the whole file (no
copy, one gather call for the batch); cold, with O_DIRECT reads submitted together per query.
Pass 4 is one numba call that scores dimension-major blocks, masks stale and removed copies
with the per-slot version array, dedupes replicas and keeps the top k. This module never
writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt

from vecdb.index.params import PAGE_SIZE, SearchParams
from vecdb.index.spann.postings import DirectReader, MmapReader
from vecdb.index.spann.table import BlockTable
from vecdb.kernels.posting import (
    METRIC_COSINE,
    METRIC_IP,
    METRIC_L2,
    block_bytes,
    gather_blocks,
    scan_blocks,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
METRIC_CODE = {"l2": METRIC_L2, "ip": METRIC_IP, "cosine": METRIC_COSINE}
ALWAYS_READ = 2  # nearest postings read whatever the prune ratio says


@dataclass
class SearchState:
    """What a search needs from the index (a consistent snapshot taken under the engine's
    read/write serialisation)."""

    graph: hnswlib.Index  # head graph, label = posting id
    live_heads: int  # heads not deleted from the graph
    table: BlockTable  # posting -> block chain
    reader: MmapReader | DirectReader  # warm or cold posting reader
    slot_version: npt.NDArray[np.uint8]  # current version per slot, 0 = not live
    metric: str  # "l2" | "ip" | "cosine"
    dim: int  # vector dimension
    width: int  # bytes per stored component (4 float32, 2 float16, 1 int8 codes)
    qoff: F32  # int8 quantizer offsets (zeros otherwise)
    qscale: F32  # int8 quantizer steps (ones otherwise)


def select_postings(labels: I64, dists: F32, metric: str, ratio: float) -> I64:
    """Pass 2: the posting ids each query reads, -1 where pruned (labels nearest first)."""
    d1 = dists[:, :1]
    if metric == "ip":
        keep = (dists - d1) <= (ratio - 1.0) * np.abs(d1)
    else:
        keep = dists <= ratio * d1
    keep[:, :ALWAYS_READ] = True
    return np.where(keep, labels, -1)


def pages_spanned(off: I64, nbytes: I64) -> I64:
    out: I64 = -(-(off + nbytes) // PAGE_SIZE) - off // PAGE_SIZE
    return out


def search_batch(
    st: SearchState, queries: F32, k: int, sp: SearchParams
) -> tuple[I64, F32, dict[str, Any]]:
    """Top-k slots and distances of each query, padded with -1 / +inf, and per-batch stats."""
    nq = len(queries)
    ids = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    stats: dict[str, Any] = {"queries": nq, "heads_searched": 0, "postings_read": 0}
    stats.update(blocks_read=0, pages_read=0, bytes_read=0)
    if nq == 0 or st.live_heads == 0:
        return ids, out_d, stats
    # Pass 1: nearest heads, one batched call
    m = min(sp.max_postings, st.live_heads)
    st.graph.set_ef(max(sp.head_ef, m))
    labels, hd = st.graph.knn_query(queries, k=m, num_threads=1)
    # Pass 2: query-aware pruning
    sel = select_postings(labels.astype(np.int64), hd, st.metric, sp.prune_ratio)
    t = st.table
    sel[sel >= len(t.post_first)] = -1
    ptr, off, cnt = gather_blocks(sel, t.post_first, t.blk_next, t.blk_off, t.blk_cnt)
    metric = METRIC_CODE[st.metric]
    nbytes = block_bytes(cnt, st.dim, st.width)
    stats["heads_searched"] = nq * m
    stats["postings_read"] = int((sel >= 0).sum())
    stats["blocks_read"] = len(off)
    pages = int(pages_spanned(off, nbytes).sum())
    stats["pages_read"], stats["bytes_read"] = pages, pages * PAGE_SIZE
    # Passes 3 and 4: read and scan
    if isinstance(st.reader, MmapReader):
        u8, i64, f32, u16 = st.reader.views()
        scan_blocks(
            u8,
            i64,
            f32,
            u16,
            st.dim,
            st.width,
            st.qoff,
            st.qscale,
            ptr,
            off,
            cnt,
            queries,
            st.slot_version,
            metric,
            ids,
            out_d,
        )
        return ids, out_d, stats
    device = 0
    one = np.zeros(2, dtype=np.int64)
    for i in range(nq):
        lo, hi = int(ptr[i]), int(ptr[i + 1])
        buf, boff, nread = st.reader.read(off[lo:hi], nbytes[lo:hi])
        device += nread
        one[1] = hi - lo
        scan_blocks(
            buf,
            buf[: len(buf) // 8 * 8].view(np.int64),
            buf[: len(buf) // 4 * 4].view(np.float32),
            buf[: len(buf) // 2 * 2].view(np.uint16),
            st.dim,
            st.width,
            st.qoff,
            st.qscale,
            one,
            boff,
            cnt[lo:hi],
            queries[i : i + 1],
            st.slot_version,
            metric,
            ids[i : i + 1],
            out_d[i : i + 1],
        )
    stats["bytes_read"] = device
    return ids, out_d, stats


def per_query(stats: dict[str, Any]) -> dict[str, Any]:
    """Batch totals turned into per-query means (the `last_search_stats` shape)."""
    nq = max(1, int(stats.get("queries", 0)))
    out: dict[str, Any] = {"queries": stats.get("queries", 0)}
    for key in ("heads_searched", "postings_read", "blocks_read", "pages_read", "bytes_read"):
        out[key + "_per_query"] = float(stats.get(key, 0)) / nq
        out[key] = stats.get(key, 0)
    return out
