"""The multi-vector search pipeline and exact MaxSim over the raw store.

This module owns how one query becomes a top-k of documents, in numbered passes:
1. query-token pruning (opt-in) by the IDF of each token's nearest centroid;
2. centroid scores S = C Q^T (K x lanes, `probe_token_cells`), the top-`nprobe` cells per
   query token and the codes over tau in one pass over S, their live documents (with a
   `probe_keep` cut, each scored from the postings alone: `probe_scores`, WARP's candidate
   score; by default for k <= 10, whose 16 cells per token make that score rank well);
   nprobe widened (at least doubled, to where the candidates found say enough would be),
   up to ADAPT_MAX x, while fewer than max(k, ndocs / 4) are found;
3. keep the `probe_keep` best by that score; centroid interaction with pruning
   (codes whose best query score is under tau skip), keep `ndocs`; then with every code,
   keep max(k, ndocs / 4) (PLAID);
4. optional asymmetric sign-bit prefilter (float query x sign bits), keep `hamming_keep`;
5. rerank the survivors with one tier (residual LUT, int8, float16 or exact float32), top-k;
   `codes` (the centroid interaction itself) and `signs` (float query x sign bits) rank
   without a rerank tier, for comparison;
6. the best `refine` (by k: 16 for k <= 10; unset, none after `codes` / `signs`) of that
   rerank scored exactly from the raw store, top-k: what the codes get wrong is mostly the
   order near the k-th document.
Before the first training every search is exact. Scores are MaxSim (higher is better); rows
are padded with -1 / -inf. Reads the `View` and the row stores; changes nothing.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.index.multivector.params import MVSearchParams, plaid_defaults
from vecdb.index.multivector.reduce import query_tokens
from vecdb.index.multivector.view import CellLists, View
from vecdb.kernels.bitpack import sign_lut
from vecdb.kernels.maxsim import (
    best_of,
    centroid_interaction,
    centroid_scores,
    gather_cells,
    lanes,
    lut_maxsim,
    maxsim,
    probe_cells,
    probe_scores,
    probe_token_cells,
    residual_maxsim,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

ADAPT_MAX = 16  # at most this x nprobe cells per token when candidates run short
ADAPT_MARGIN = 1.25  # a widening aims this much past the candidates the second pass keeps
EXACT_BLOCK_TOKENS = 32_768  # raw tokens per BLAS block of an exhaustive exact search
# A search whose live documents hold no more raw tokens than this scores them all exactly
# (trained or not): about what the pipeline costs there, with no coding error.
EXACT_TOKENS = 4_096
STAT_KEYS = (
    "queries",
    "candidates",
    "docs_scored",
    "tokens_scored",
    "maxsim_work_saved",
    "bytes_read",
    "exact",
    "nprobe",
    "docs_refined",
)


class Rows(Protocol):
    """A row store (`rowfile.RowFile` or `rowfile.MemRows`)."""

    width: int

    def rows(self, lo: int, hi: int) -> npt.NDArray[Any]: ...

    def gather(self, offsets: I64, docs: I64) -> tuple[npt.NDArray[Any], I64]: ...


def top(docs: I64, scores: F32, k: int) -> tuple[I64, F32]:
    """The k best (highest score) of docs, best first; ties by document number."""
    if len(docs) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        docs, scores = docs[part], scores[part]
    order = np.lexsort((docs, -scores))
    return docs[order], scores[order]


def exact_scores(q: F32, raw: Rows, v: View, docs: I64) -> F32:
    """Exact MaxSim of q against the raw tokens of `docs`, in the order of `docs` (when docs
    names every document, in any order, storage order is scored in BLAS blocks and segmented
    maxima, then permuted)."""
    out = np.empty(len(docs), np.float32)
    if len(docs) == 0:
        return out
    if len(docs) == v.docs and len(q):  # exhaustive: contiguous blocks, one GEMM each
        # the candidates (distinct document numbers) are all of them, not necessarily 0..D-1
        # in order: score in storage order, then hand each candidate its own score
        full = np.empty(v.docs, np.float32)
        sizes = np.diff(v.raw_off)
        lo = 0
        while lo < len(docs):
            hi = int(np.searchsorted(v.raw_off, v.raw_off[lo] + EXACT_BLOCK_TOKENS, "right"))
            hi = min(len(docs), max(hi - 1, lo + 1))
            a, b = int(v.raw_off[lo]), int(v.raw_off[hi])
            sim = q @ np.asarray(raw.rows(a, b), np.float32).T
            starts = (v.raw_off[lo:hi] - a).astype(np.int64)
            ok = sizes[lo:hi] > 0
            best = np.full((len(q), hi - lo), -np.inf, np.float32)
            if ok.any():
                best[:, ok] = np.maximum.reduceat(sim, starts[ok], axis=1)
            full[lo:hi] = best.sum(axis=0)
            lo = hi
        return full[docs]
    # a subset (a filter, a tenant, the survivors of a rerank): each document's rows read in
    # place through the store's offsets (a gathered copy cost as much as the scoring)
    rows = np.asarray(raw.rows(0, int(v.raw_off[-1])), np.float32)
    maxsim(q, rows, v.raw_off, np.ascontiguousarray(docs, np.int64), out)
    return out


Arrays = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]
]  # stamp, slot, mark


class Scratch:
    """One batch's scratch: the seen-stamps and slots of `probe_scores` and `gather_cells`
    (arrays of a `ScratchPool`, never refilled), the next unused mark, and the live document
    numbers (made on first use)."""

    def __init__(
        self, arrays: Arrays, live: npt.NDArray[np.bool_],
        lists: Callable[[], CellLists | None] | None = None,
    ) -> None:  # fmt: skip
        self.arrays = arrays
        self.stamp, self.slot, self._marks = arrays
        self._live = live
        self._make_lists = lists  # the restricted set's own cell lists, asked for once
        self.lists: CellLists | None = None  # ... what that gave (after `postings`)
        self._live_docs: npt.NDArray[np.int64] | None = None
        self._every: npt.NDArray[np.bool_] | None = None
        self._count: int | None = None
        self._alive: int | None = None
        self._allowed: npt.NDArray[np.bool_] | None = None
        self._few_tokens: bool | None = None

    def alive_count(self, v: View) -> int:
        """How many of the view's documents are alive (counted once a batch)."""
        if self._alive is None:
            self._alive = int(np.count_nonzero(v.alive))
        return self._alive

    def postings(self, v: View) -> tuple[I64, npt.NDArray[np.integer], npt.NDArray[np.bool_]]:
        """(indptr, documents, cells the probe may pick) of the lists a search walks: the
        restricted set's own (only its cells, and the cells of documents added since the
        CSR was built, which the delta holds), else the shared ones (every cell). The own
        lists are asked for on the batch's first probe, so a search that probes nothing
        (a set small enough to be taken whole) never makes them."""
        if self._make_lists is not None:
            self.lists, self._make_lists = self._make_lists(), None
        if self.lists is None:
            return v.indptr, v.cell_docs, self.every(len(v.indptr) - 1)
        if self._allowed is None:
            self._allowed = self.lists.used
            if len(v.delta_cells):
                self._allowed = self._allowed.copy()
                self._allowed[v.delta_cells] = True
        return self.lists.indptr, self.lists.cell_docs, self._allowed

    def next_mark(self) -> int:
        mark = int(self._marks[0])
        self._marks[0] += 1
        return mark

    @property
    def live_docs(self) -> npt.NDArray[np.int64]:
        """Numbers of the live documents (computed once a batch, when a search needs them)."""
        if self._live_docs is None:
            self._live_docs = np.flatnonzero(self._live)
        return self._live_docs

    @property
    def count(self) -> int:
        """How many documents are live (counted once a batch, without listing them)."""
        if self._count is None:
            self._count = len(self._live_docs) if self._live_docs is not None else int(
                np.count_nonzero(self._live))  # fmt: skip
        return self._count

    def few_tokens(self, v: View) -> bool:
        """Whether the live documents hold at most EXACT_TOKENS raw tokens (counted once a
        batch, and only when there are no more documents than that)."""
        if self._few_tokens is None:
            self._few_tokens = self.count <= EXACT_TOKENS and (
                int(_sizes(v.raw_off, self.live_docs).sum()) <= EXACT_TOKENS
            )
        return self._few_tokens

    def every(self, k: int) -> npt.NDArray[np.bool_]:
        """All-true code flags of length k (the unpruned interaction), made once a batch."""
        if self._every is None or len(self._every) != k:
            self._every = np.ones(k, np.bool_)
        return self._every


class ScratchPool:
    """An index's stamp and slot arrays, reused by its searches: one set per search running at
    once, each stamped with ever-increasing marks (its counter travels with it), so a stale
    stamp never reads as seen and nothing is refilled. A fresh pair per batch cost two
    documents-long fills per query (2.6 ms a call at a million documents, measured alone);
    the pool belongs to the index, so the memory goes with it."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[Arrays] = queue.SimpleQueue()

    def take(self, docs: int) -> Arrays:
        """A free set at least `docs` long (a new one, its stamps all -1, when none is or it
        is too short: grown by a quarter more)."""
        try:
            got = self._free.get_nowait()
        except queue.Empty:
            got = None
        if got is None or len(got[0]) < docs:
            size = docs if got is None else max(docs, len(got[0]) * 5 // 4)
            got = (np.full(size, -1, np.int64), np.empty(size, np.int64), np.zeros(1, np.int64))
        return got

    def give(self, arrays: Arrays) -> None:
        """Return a set taken by `take` once its search is done."""
        self._free.put(arrays)


def search_one(
    q: F32, k: int, p: MVSearchParams, v: View, live: npt.NDArray[np.bool_], raw: Rows,
    tier: Rows | None, scratch: Scratch,
) -> tuple[I64, F32, dict[str, float]]:  # fmt: skip
    """Top-k (documents, scores) of one prepared query and what it cost."""
    m = len(q)
    st = dict.fromkeys(STAT_KEYS, 0.0)
    st["queries"] = 1.0
    codec = v.codec
    # Untrained; or a visible set (a filter, a tenant) no larger than what the default
    # pipeline scores in full anyway (96 documents for k <= 10), or holding few tokens
    # (EXACT_TOKENS): every one of them scored exactly costs about the same, and probing
    # cells could miss some of them
    if codec is None or scratch.count <= max(k, plaid_defaults(k)[2] // 4) or scratch.few_tokens(v):
        live_docs = scratch.live_docs
        scores = exact_scores(q, raw, v, live_docs)
        tokens = float(_sizes(v.raw_off, live_docs).sum())
        st.update(candidates=len(live_docs), docs_scored=len(live_docs), exact=1.0,
                  tokens_scored=tokens, bytes_read=tokens * raw.width)  # fmt: skip
        d, s = top(live_docs, scores, k)
        return d, s, st
    nprobe, tau, ndocs, probe_keep = p.resolve(k)
    # Pass 1: query-token pruning.
    if p.query_keep < 1.0:
        sim = q @ codec.centroids.T  # (m, K)
        q = q[query_tokens(q, sim.argmax(axis=1), codec.idf, p.query_keep)]
    # Centroid scores (K, lanes): straight into the layout the kernels read (a row per
    # centroid, the query tokens padded with zeros to the kernels' 16 lanes, so no transposed
    # or padded copy is made; padded lanes score 0 everywhere and add nothing).
    width = lanes(len(q))
    skq = centroid_scores(codec.scoring, q)
    # Pass 2: probe cells, gather their live documents (and their probe scores); while fewer
    # than the second pass keeps are found, probe twice as many cells (up to ADAPT_MAX x).
    second = max(k, ndocs // 4)
    keep = np.empty(codec.k, np.bool_)  # codes whose best query score reaches tau
    psc = None
    # A restricted set (a filter, a small tenant) of no more documents than the centroid
    # interaction keeps: every one of them is a candidate, without probing cells among
    # the other documents (a small tenant's probe widened to ~120 cells a token). `keep`
    # stays unset: only the pruned interaction of more than ndocs candidates reads it.
    small = scratch.count <= ndocs and scratch.count < scratch.alive_count(v)
    cells = np.zeros(0, np.int64)
    cap = min(codec.k, nprobe * ADAPT_MAX)
    indptr = v.indptr  # (no cells probed when small: nothing read from any lists)
    if not small:  # the lists the probe walks (a small tenant's own, made here if due)
        indptr, cell_docs, allowed = scratch.postings(v)
        if scratch.lists is not None:  # past its own cells a tenant's probe finds no more
            cap = min(cap, max(1, scratch.lists.cells + len(v.delta_cells)))
    nprobe = min(nprobe, cap)
    while not small:
        if probe_keep:  # each token's cells, and the documents' probe scores
            cells, topv, topi = probe_token_cells(skq, len(q), nprobe, tau, keep, allowed)
            cand, psc = probe_scores(
                skq, topv, topi, indptr, cell_docs, live, scratch.stamp,
                scratch.next_mark(), scratch.slot,
            )  # fmt: skip
        else:
            cells = probe_cells(skq, len(q), nprobe, tau, keep, allowed)
            cand = gather_cells(cells, indptr, cell_docs, live, scratch.stamp, scratch.next_mark())
        extra = np.zeros(0, np.int64)  # documents of the delta: never cut by the probe score
        if len(v.delta_cells):
            extra = v.delta_docs[np.isin(v.delta_cells, cells)]
            extra = np.setdiff1d(extra[live[extra]], cand)
        found = len(cand) + len(extra)
        if found >= second or nprobe >= cap:
            break
        # Widen at once to where the candidates found so far say `second` would be (their
        # count grows about in proportion to the cells probed; a margin of ADAPT_MARGIN),
        # at least doubling: a narrow filter or a small tenant needs one more pass, not four
        want = math.ceil(nprobe * ADAPT_MARGIN * second / max(1, found))
        nprobe = min(cap, max(2 * nprobe, want))
    if small:
        cand, extra, nprobe = scratch.live_docs, np.zeros(0, np.int64), 0
    st["bytes_read"] += 8.0 * float((indptr[cells + 1] - indptr[cells]).sum())
    st["nprobe"] = float(nprobe)
    st["candidates"] = float(len(cand) + len(extra))
    if len(cand) + len(extra) < k:  # too few near the query (a narrow filter): every live one
        cand, extra = scratch.live_docs, np.zeros(0, np.int64)
        st["candidates"] = float(len(cand))
    elif psc is not None and len(cand) > probe_keep:  # Pass 3: the probe-score cut
        cand, _ = best_of(cand, psc, probe_keep)
    if len(extra):
        cand = np.concatenate([cand, extra])
    bits = v.bits
    every = scratch.every(codec.k)
    # Centroid interaction, pruned then full.
    if len(cand) > ndocs:
        sc = np.empty(len(cand), np.float32)
        centroid_interaction(skq, v.codes, bits, v.enc_off, cand, sc, keep)
        st["bytes_read"] += float(_sizes(v.enc_off, cand).sum()) * bits / 8
        cand, _ = best_of(cand, sc, ndocs)
    if len(cand) > second:
        sc = np.empty(len(cand), np.float32)
        centroid_interaction(skq, v.codes, bits, v.enc_off, cand, sc, every)
        cand, _ = best_of(cand, sc, second)
    # Pass 4: sign-bit prefilter.
    if p.hamming_keep and codec.sign_bits and len(cand) > max(k, p.hamming_keep):
        sc = np.empty(len(cand), np.float32)
        lut_maxsim(sign_lut(q), v.signs, v.enc_off, cand, sc)
        st["bytes_read"] += float(_sizes(v.enc_off, cand).sum() * v.signs.shape[1])
        cand, _ = best_of(cand, sc, max(k, p.hamming_keep))
    # Pass 5: rerank.
    rerank = p.rerank or default_rerank(v)
    sc = np.empty(len(cand), np.float32)
    if rerank == "exact":
        sc = exact_scores(q, raw, v, cand)
        st["bytes_read"] += float(_sizes(v.raw_off, cand).sum() * raw.width)
        scored = _sizes(v.raw_off, cand)
    elif rerank == "codes":  # the full centroid interaction is the ranking (HPC-ColPali)
        centroid_interaction(skq, v.codes, bits, v.enc_off, cand, sc, every)
        st["bytes_read"] += float(_sizes(v.enc_off, cand).sum()) * bits / 8
        scored = _sizes(v.enc_off, cand)
    elif rerank == "signs":  # float query x sign bits (Vespa's unpacked binary)
        lut_maxsim(sign_lut(q), v.signs, v.enc_off, cand, sc)
        st["bytes_read"] += float(_sizes(v.enc_off, cand).sum() * v.signs.shape[1])
        scored = _sizes(v.enc_off, cand)
    elif rerank == "residual":
        _needs(codec.residual_bits > 0, "residual", "residual_bits > 0")
        lut = codec.lut(q, width)  # padded as skq: the kernel copies neither
        residual_maxsim(lut, v.residuals, v.enc_off, cand, sc, skq, v.codes, bits)
        scored = _sizes(v.enc_off, cand)
        st["bytes_read"] += float(scored.sum()) * (v.residuals.shape[1] + bits / 8)
    else:
        _needs(tier is not None and codec.tier == rerank, rerank, f"rerank_tier={rerank!r}")
        assert tier is not None
        rows, local = tier.gather(v.enc_off, cand)
        qq = q * codec.scales if rerank == "int8" else q
        rows = rows if rerank == "int8" else np.asarray(rows, np.float32)
        maxsim(np.ascontiguousarray(qq, np.float32), rows, local, np.arange(len(cand)), sc)
        st["bytes_read"] += float(local[-1] * tier.width)
        scored = _sizes(v.enc_off, cand)
    st["docs_scored"] = float(len(cand))
    st["tokens_scored"] = float(scored.sum())
    full = float(_sizes(v.raw_off, cand).sum()) * m
    st["maxsim_work_saved"] = 1.0 - float(scored.sum()) * len(q) / full if full else 0.0
    # Pass 6: the rerank's best (`refine`, by k) scored exactly from the raw store (counted
    # apart: docs_refined and their bytes; the counters above describe the rerank).
    refine = p.refined(k, rerank)
    if refine:
        cand, _ = best_of(cand, sc, refine)
        sc = exact_scores(q, raw, v, cand)
        st["bytes_read"] += float(_sizes(v.raw_off, cand).sum() * raw.width)
        st["docs_refined"] = float(len(cand))
    d, s = top(cand, sc, k)
    return d, s, st


def _sizes(offsets: I64, docs: I64) -> I64:
    """Tokens of each of `docs` (not np.diff over every document: a query reads a few)."""
    return offsets[docs + 1] - offsets[docs]


def _needs(ok: bool, rerank: str, what: str) -> None:
    if not ok:
        raise InvalidArgument(
            f"params.rerank={rerank!r} needs a collection built with {what}",
            field="params.rerank",
        )


def uses_blas(p: MVSearchParams, v: View) -> bool:
    """Whether a search with `p` may run a BLAS product big enough to wake BLAS's thread
    pool (the exact scan, the exact rerank, query-token pruning's centroid scores), which
    callers then hold to one thread. The residual pipeline runs no such product (its
    centroid scores are a numba kernel, its byte tables P GEMMs of 256 x per x lanes, under
    OpenBLAS's multithreading threshold), and holding the limit costs ~30 us a call."""
    return v.codec is None or p.query_keep < 1.0 or (p.rerank or default_rerank(v)) == "exact"


def default_rerank(v: View) -> str:
    """The best tier stored: the rerank tier if any, else residuals, else exact."""
    codec = v.codec
    if codec is None:
        return "exact"
    if codec.tier != "none":
        return codec.tier
    return "residual" if codec.residual_bits else "exact"


def search_batch(
    queries: Sequence[F32], k: int, p: MVSearchParams, v: View, live: npt.NDArray[np.bool_],
    raw: Rows, tier: Rows | None, pool: ScratchPool,
    lists: Callable[[], CellLists | None] | None = None,
) -> tuple[I64, F32, dict[str, float]]:  # fmt: skip
    """Top-k of every query: document numbers (nq, k) padded -1, scores padded -inf, and
    stats summed over the queries (`maxsim_work_saved` averaged); scratch from `pool`;
    `lists`: gives the restricted set's own cell lists (`view.cell_lists`), probed instead
    of the shared ones; called at most once, and only if a search probes."""
    nq = len(queries)
    ids = np.full((nq, k), -1, np.int64)
    scores = np.full((nq, k), -np.inf, np.float32)
    total = dict.fromkeys(STAT_KEYS, 0.0)
    scratch = Scratch(pool.take(v.docs), live, lists)
    try:
        for i, q in enumerate(queries):
            d, s, st = search_one(q, k, p, v, live, raw, tier, scratch)
            ids[i, : len(d)] = d
            scores[i, : len(s)] = s
            for key, val in st.items():
                total[key] += val
    finally:
        pool.give(scratch.arrays)
    if nq:
        total["maxsim_work_saved"] /= nq
        total["exact"] /= nq
        total["nprobe"] /= nq
    return ids, scores, total
