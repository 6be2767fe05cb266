"""Search with an exact rerank: the posting scan's candidates re-scored from the rerank store.

With a store (`rerank` != "none") and `rerank_k` > 0, a search asks the posting scan
(`search.search` with `rerank_k=0`) for max(k, rerank_k) candidates per query, scored from
the compact codes, then computes exact distances for them from the store's rows
(`kernels.rerank`) and keeps the k nearest. Warm (mmap reader) the rows are read through the
store's map; cold (direct reader) the candidates' sectors are read with O_DIRECT, and the call's
stats count those bytes in `bytes_read` (and `rerank_bytes`, `rerank_rows` in `extra`).
Candidates come out of a scan that already applied `visible` and the versions, so nothing
else is filtered here. A "bits" index (1-bit postings, `bitsearch`) always has a store:
`rerank_k` not given is the index's calibrated value there (`calibrate`; 100 without one), and a warm batch's rerank
runs in query chunks on the scan threads; one warm query's search and rerank run in one
kernel call instead (`single.search_one_bits`). With `rerank_eps` > 0 ("bits" only) the scan
keys candidates by lower bounds of their distances (the estimate less eps standard
deviations of its error), the rerank stops at the first bound past the k-th exact distance,
and a query whose R-th bound is still below that distance (R too few: `rescore`) is
searched again with 4x, then 16x R (`widen`); stats count `bound_widened` and `bound_short`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.base import IndexResult, Visible
from vecdb.index.params import MAX_RERANK_K, SearchParams, rerank_candidates
from vecdb.index.spann import bitsearch
from vecdb.index.spann.postings import DirectReader
from vecdb.index.spann.state import SpannState
from vecdb.kernels.posting import METRIC_CODE
from vecdb.kernels.rerank import exact_topk, rows_at

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
# A query whose R candidates were too few for the bound (`rescore`) is searched again with
# BOUND_WIDEN x R, at most BOUND_ROUNDS times: R up to 16x rerank_k (MAX_RERANK_K at most)
BOUND_WIDEN, BOUND_ROUNDS = 4, 2
Inner = Callable[[SpannState, F32, int, SearchParams, "Visible | None"], IndexResult]


def candidates(st: SpannState, sp: SearchParams) -> int:
    """The call's `rerank_k` on this index (`params.rerank_candidates`; for "bits" the
    value the last bulk build calibrated, `calibrate`)."""
    return rerank_candidates(sp, st.params.vector_dtype, st.rerank_k)


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
    inner scan's distances are lower bounds (`bitscan.scan_blocks`), each query's rerank
    stops at the first past its k-th exact distance (cold: the rows of the first k
    candidates are read, then those of the rest whose bound is below the k-th exact
    distance among them), and a query whose R candidates were too few is searched again
    with more (`widen`)."""
    wide = max(k, candidates(st, sp))
    got = inner(st, queries, wide, _scan_params(sp), visible)
    res, short = rescore(st, queries, got, k, eps)
    return widen(st, queries, k, sp, visible, inner, eps, res, short, wide)


def rescore(
    st: SpannState, queries: F32, got: IndexResult, k: int, eps: float
) -> tuple[IndexResult, npt.NDArray[np.bool_]]:
    """The exact top k of a scan's candidates (`got`, keys = lower bounds when eps > 0)
    and, per query, whether its R candidates were too few for the bound: its R-th bound
    is not above its k-th exact distance, so a candidate R cut off could still enter
    (never with eps = 0)."""
    store = st.store
    assert store is not None
    cand = got.slots
    stats = got.stats
    keys = got.distances if eps > 0 else None
    if isinstance(st.reader, DirectReader):
        ids, dist, n, nbytes = cold_topk(st, queries, cand, keys, k)
    else:  # warm: a slot is its row; bytes = the rows' (their pages come through the cache)
        ids, dist, n = warm_topk(st, queries, cand, store.rows(), k, keys)
        nbytes = n * store.row
    short = np.zeros(len(cand), bool)
    if keys is not None and cand.shape[1]:
        short = (cand[:, -1] >= 0) & (keys[:, -1] <= dist[:, -1])
    stats.bytes_read += nbytes
    extra = stats.extra
    extra["rerank_bytes"] = extra.get("rerank_bytes", 0.0) + nbytes
    extra["rerank_rows"] = extra.get("rerank_rows", 0.0) + n
    return IndexResult(ids, dist, stats), short


def widen(
    st: SpannState,
    queries: F32,
    k: int,
    sp: SearchParams,
    visible: Visible | None,
    inner: Inner,
    eps: float,
    res: IndexResult,
    short: npt.NDArray[np.bool_],
    wide: int,
) -> IndexResult:
    """Search the `short` queries of `res` again with BOUND_WIDEN x the candidates, up to
    BOUND_ROUNDS times (and MAX_RERANK_K candidates), replacing their rows; counts the
    queries searched again (`bound_widened`) and those still short (`bound_short`). The
    widened scans' reads add to the call's stats."""
    stats = res.stats
    rounds = 0
    while short.any() and rounds < BOUND_ROUNDS and wide < MAX_RERANK_K:
        rounds += 1
        wide = min(MAX_RERANK_K, wide * BOUND_WIDEN)
        at = np.flatnonzero(short)
        got = inner(st, queries[at], wide, _scan_params(sp), visible)
        sub, sub_short = rescore(st, queries[at], got, k, eps)
        res.slots[at], res.distances[at] = sub.slots, sub.distances
        sub.stats.queries = 0  # (answered once)
        stats.add(sub.stats)
        stats.extra["bound_widened"] = stats.extra.get("bound_widened", 0.0) + len(at)
        short = np.zeros_like(short)
        short[at[sub_short]] = True
    if eps > 0:
        stats.extra["bound_short"] = float(short.sum())
    return res


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
    at = np.full(cand.shape, -1, np.int64)  # row of each read candidate (-1: not read)

    def read(mask: npt.NDArray[np.bool_], first: int) -> tuple[npt.NDArray[Any], int]:
        rows, nbytes = store.read_rows(cand[mask])
        at[mask] = first + np.arange(len(rows))
        return rows, nbytes

    if keys is None or cand.shape[1] <= k:
        rows, nbytes = read(take, 0)
        ids, dist, n = exact_topk(queries, cand, at, rows, metric, k)
        return ids, dist, n, nbytes
    head = take.copy()
    head[:, k:] = False
    rows1, nbytes = read(head, 0)
    _, dist1, _ = exact_topk(queries, cand, at, rows1, metric, k)  # (unread: at = -1)
    more = take & (keys <= dist1[:, -1:])
    more[:, :k] = False
    rows2, got = read(more, len(rows1))
    rows = np.concatenate([rows1, rows2]) if len(rows2) else rows1
    ids, dist, n = exact_topk(queries, cand, at, rows, metric, k, keys)
    return ids, dist, n, nbytes + got


def warm_topk(
    st: SpannState,
    queries: F32,
    cand: I64,
    rows: npt.NDArray[np.uint16] | F32,
    k: int,
    keys: F32 | None = None,
) -> tuple[I64, F32, int]:
    """`exact_topk` through the store's mmap, a candidate's row from the store's slot -> row
    map in row order "head" (with `keys`, each query stopping at its first
    bound past its k-th exact distance); a "bits" batch's queries in chunks on the scan
    threads, as its scan (`bitsearch.in_chunks`; the kernel releases the GIL)."""
    metric = METRIC_CODE[st.metric]
    assert st.store is not None
    at = rows_at(cand, st.store.row_map())  # (row order "slot": cand itself)
    if not st.is_bits:
        return exact_topk(queries, cand, at, rows, metric, k)
    nq = len(queries)
    ids = np.empty((nq, k), np.int64)
    dist = np.empty((nq, k), np.float32)
    scored = [0]

    def part(lo: int, hi: int) -> None:
        kk = None if keys is None else keys[lo:hi]
        got_ids, got_d, n = exact_topk(queries[lo:hi], cand[lo:hi], at[lo:hi], rows, metric, k, kk)
        ids[lo:hi], dist[lo:hi] = got_ids, got_d
        scored.append(n)  # (list.append is atomic across threads)

    bitsearch.in_chunks(nq, part)
    return ids, dist, sum(scored)
