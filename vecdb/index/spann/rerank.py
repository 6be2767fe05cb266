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


def search(
    st: SpannState, queries: F32, k: int, sp: SearchParams, visible: Visible | None, inner: Inner
) -> IndexResult:
    """Top-k with the exact rerank of max(k, rerank_k) scan candidates."""
    store = st.store
    assert store is not None
    wide = max(k, candidates(st, sp))
    got = inner(st, queries, wide, _scan_params(sp), visible)
    cand = got.slots
    stats = got.stats
    if isinstance(st.reader, DirectReader):
        ok = cand >= 0
        rows, nbytes = store.read_rows(cand[ok])
        at = np.full(cand.shape, -1, np.int64)
        at[ok] = np.arange(len(rows))
        ids, dist, n = exact_topk(queries, cand, at, rows, METRIC_CODE[st.metric], k)
    else:  # warm: a slot is its row; bytes = the rows' (their pages come through the cache)
        ids, dist, n = warm_topk(st, queries, cand, store.rows(), k)
        nbytes = n * store.row
    stats.bytes_read += nbytes
    extra = stats.extra
    extra["rerank_bytes"] = extra.get("rerank_bytes", 0.0) + nbytes
    extra["rerank_rows"] = extra.get("rerank_rows", 0.0) + n
    return IndexResult(ids, dist, stats)


def warm_topk(
    st: SpannState, queries: F32, cand: I64, rows: npt.NDArray[np.uint16] | F32, k: int
) -> tuple[I64, F32, int]:
    """`exact_topk` through the store's map; a "bits" batch's queries in chunks on the
    scan threads, as its scan (`bitsearch.in_chunks`; the kernel releases the GIL)."""
    metric = METRIC_CODE[st.metric]
    if not st.is_bits:
        return exact_topk(queries, cand, cand, rows, metric, k)
    nq = len(queries)
    ids = np.empty((nq, k), np.int64)
    dist = np.empty((nq, k), np.float32)
    scored = [0]

    def part(lo: int, hi: int) -> None:
        got_ids, got_d, n = exact_topk(queries[lo:hi], cand[lo:hi], cand[lo:hi], rows, metric, k)
        ids[lo:hi], dist[lo:hi] = got_ids, got_d
        scored.append(n)  # (list.append is atomic across threads)

    bitsearch.in_chunks(nq, part)
    return ids, dist, sum(scored)
