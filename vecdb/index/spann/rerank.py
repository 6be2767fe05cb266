"""Search with an exact rerank: the posting scan's candidates re-scored from the rerank store.

With a store (`rerank` != "none") and `rerank_k` > 0, a search asks the posting scan
(`search.search` with `rerank_k=0`) for max(k, rerank_k) candidates per query, scored from
the compact codes, then computes exact distances for them from the store's rows
(`kernels.rerank`) and keeps the k nearest. Warm (mmap reader) the rows are read through the
store's map; cold (direct reader) the candidates' sectors are read with O_DIRECT, and the call's
stats count those bytes in `bytes_read` (and `rerank_bytes`, `rerank_rows` in `extra`).
Candidates come out of a scan that already applied `visible` and the versions, so nothing
else is filtered here. A "bits" index (1-bit postings, `bitsearch`) always has a store:
`rerank_k` not given is 100 there (`params.rerank_candidates`), and a warm batch's rerank
runs in query chunks on the scan threads; one warm query's search and rerank run in one
kernel call instead (`single.search_one_bits`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vecdb.index.base import IndexResult, Visible
from vecdb.index.params import SearchParams, rerank_candidates
from vecdb.index.spann import bitsearch
from vecdb.index.spann.postings import DirectReader
from vecdb.index.spann.state import SpannState
from vecdb.kernels.posting import METRIC_CODE
from vecdb.kernels.rerank import exact_topk

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Inner = Callable[[SpannState, F32, int, SearchParams, "Visible | None"], IndexResult]


def candidates(st: SpannState, sp: SearchParams) -> int:
    """The call's `rerank_k` on this index (`params.rerank_candidates`: 100 for "bits")."""
    return rerank_candidates(sp, st.params.vector_dtype)


def wanted(st: SpannState, sp: SearchParams) -> bool:
    """Whether a search of this index re-ranks (given a store): `rerank_k` > 0 (0: the
    codes' own top k and distances; for "bits", the estimates)."""
    return candidates(st, sp) > 0


@functools.lru_cache(maxsize=256)
def _scan_params(sp: SearchParams) -> SearchParams:
    """`sp` with `rerank_k=0`: the scan's own parameters (frozen, so cached)."""
    return dataclasses.replace(sp, rerank_k=0)


def bound_eps(st: SpannState, sp: SearchParams) -> float:
    """The call's `rerank_eps` when its scan can key candidates by lower bounds (a "bits"
    index), else 0 (every candidate re-ranked)."""
    return float(sp.rerank_eps) if st.is_bits else 0.0


def search(
    st: SpannState,
    queries: F32,
    k: int,
    sp: SearchParams,
    visible: Visible | None,
    inner: Inner,
    eps: float = 0.0,
) -> IndexResult:
    """Top-k with the exact rerank of max(k, rerank_k) scan candidates; with eps > 0 the
    inner scan's distances are lower bounds (`bitscan.scan_blocks`) and each query's rerank
    stops at the first past its k-th exact distance (cold: the rows of the first k
    candidates are read, then those of the rest whose bound is below the k-th exact
    distance among them)."""
    store = st.store
    assert store is not None
    wide = max(k, candidates(st, sp))
    got = inner(st, queries, wide, _scan_params(sp), visible)
    cand = got.slots
    stats = got.stats
    keys = got.distances if eps > 0 else None
    if isinstance(st.reader, DirectReader):
        ids, dist, n, nbytes = cold_topk(st, queries, cand, keys, k)
    else:  # warm: a slot is its row; bytes = the rows' (their pages come through the cache)
        ids, dist, n = warm_topk(st, queries, cand, store.rows(), k, keys)
        nbytes = n * store.row
    if keys is not None:  # a query whose R-th bound is below its k-th: R cut candidates off
        last = keys[:, -1]
        short = (cand[:, -1] >= 0) & (last <= dist[:, -1])
        stats.extra["bound_short"] = stats.extra.get("bound_short", 0.0) + float(short.sum())
    stats.bytes_read += nbytes
    extra = stats.extra
    extra["rerank_bytes"] = extra.get("rerank_bytes", 0.0) + nbytes
    extra["rerank_rows"] = extra.get("rerank_rows", 0.0) + n
    return IndexResult(ids, dist, stats)


def cold_topk(
    st: SpannState, queries: F32, cand: I64, keys: F32 | None, k: int
) -> tuple[I64, F32, int, int]:
    """`exact_topk` from O_DIRECT reads of the candidates' rows: (ids, distances, rows
    scored, bytes read). With `keys` (lower bounds, ascending), in two reads: the first k
    candidates' rows, then only the rest whose bound is below the k-th exact distance
    among those (the rows the warm rule would score, or a few more)."""
    store = st.store
    assert store is not None
    metric = METRIC_CODE[st.metric]
    take = cand >= 0
    if keys is None or cand.shape[1] <= k:
        rows, nbytes = store.read_rows(cand[take])
        at = np.full(cand.shape, -1, np.int64)
        at[take] = np.arange(len(rows))
        ids, dist, n = exact_topk(queries, cand, at, rows, metric, k)
        return ids, dist, n, nbytes
    first = take.copy()
    first[:, k:] = False
    rows1, nbytes = store.read_rows(cand[first])
    at = np.full(cand.shape, -1, np.int64)
    at[first] = np.arange(len(rows1))
    _, dist1, _ = exact_topk(queries, np.where(first, cand, -1), at, rows1, metric, k)
    more = take & (keys <= dist1[:, -1:])
    more[:, :k] = False
    rows2, got = store.read_rows(cand[more])
    nbytes += got
    at[more] = len(rows1) + np.arange(len(rows2))
    rows = np.concatenate([rows1, rows2]) if len(rows2) else rows1
    ids, dist, n = exact_topk(queries, np.where(first | more, cand, -1), at, rows, metric, k, keys)
    return ids, dist, n, nbytes


def warm_topk(
    st: SpannState,
    queries: F32,
    cand: I64,
    rows: npt.NDArray[np.uint16] | F32,
    k: int,
    keys: F32 | None = None,
) -> tuple[I64, F32, int]:
    """`exact_topk` through the store's map (with `keys`, each query stopping at its first
    bound past its k-th exact distance); a "bits" batch's queries in chunks on the scan
    threads, as its scan (`bitsearch.in_chunks`; the kernel releases the GIL)."""
    metric = METRIC_CODE[st.metric]
    if not st.is_bits:
        return exact_topk(queries, cand, cand, rows, metric, k)
    nq = len(queries)
    ids = np.empty((nq, k), np.int64)
    dist = np.empty((nq, k), np.float32)
    scored = [0]

    def part(lo: int, hi: int) -> None:
        kk = None if keys is None else keys[lo:hi]
        got_ids, got_d, n = exact_topk(
            queries[lo:hi], cand[lo:hi], cand[lo:hi], rows, metric, k, kk
        )
        ids[lo:hi], dist[lo:hi] = got_ids, got_d
        scored.append(n)  # (list.append is atomic across threads)

    bitsearch.in_chunks(nq, part)
    return ids, dist, sum(scored)
