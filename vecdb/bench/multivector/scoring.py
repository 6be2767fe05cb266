"""The harness's own MaxSim kernels (numba, cache=True) and the float64 reference.

Owns scoring documents stored as token matrices with offsets: exact MaxSim (sum over query
tokens of the best document-token dot product) over all or some documents; the code-only
score of the paper's 1-byte setting (a lookup table of query x centroid dot products, the same
as decoding every token to its centroid); and Hamming similarity between centroid-id bit
strings (the paper's "binary" mode). `reference_scores` is the plain numpy/float64 definition
every kernel is tested against. Pure functions; no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, prange

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True, inline="always")
def _maxsim_one(q: np.ndarray, tokens: np.ndarray, lo: int, hi: int, best: np.ndarray) -> Any:
    m, dim = q.shape
    for a in range(m):
        best[a] = -np.inf
    for t in range(lo, hi):
        for a in range(m):
            s = np.float32(0.0)
            for j in range(dim):
                s += q[a, j] * tokens[t, j]
            if s > best[a]:
                best[a] = s
    total = np.float32(0.0)
    if hi > lo:
        for a in range(m):
            total += best[a]
    return total


@njit(cache=True, parallel=True)
def _maxsim_docs(q: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray,
                 out: np.ndarray) -> None:  # fmt: skip
    for i in prange(docs.shape[0]):
        best = np.empty(q.shape[0], dtype=np.float32)
        d = docs[i]
        out[i] = _maxsim_one(q, tokens, offsets[d], offsets[d + 1], best)


def maxsim(q: F32, tokens: F32, offsets: I64, docs: I64 | None = None) -> F32:
    """Exact MaxSim of query `q` (m, d) against documents `docs` (default: all), float32."""
    if docs is None:
        docs = np.arange(len(offsets) - 1, dtype=np.int64)
    out = np.empty(len(docs), dtype=np.float32)
    if len(docs):
        _maxsim_docs(np.ascontiguousarray(q, dtype=np.float32), tokens, offsets, docs, out)
    return out


def reference_scores(q: F32, tokens: F32, offsets: I64) -> npt.NDArray[np.float64]:
    """MaxSim of `q` against every document in float64: S = tokens . q^T, the max per document
    (`np.maximum.reduceat` over the offsets), summed over query tokens. Empty documents score
    0."""
    s = tokens.astype(np.float64) @ q.astype(np.float64).T  # (N, m)
    lengths = np.diff(offsets)
    out = np.zeros(len(lengths), dtype=np.float64)
    nonempty = lengths > 0
    if s.shape[0]:
        per_doc = np.maximum.reduceat(s, offsets[:-1][nonempty], axis=0)
        out[nonempty] = per_doc.sum(axis=1)
    return out


@njit(cache=True, parallel=True)
def _lut_docs(lut: np.ndarray, codes: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    m = lut.shape[0]
    for d in prange(out.shape[0]):
        total = np.float32(0.0)
        lo, hi = offsets[d], offsets[d + 1]
        if hi > lo:
            for a in range(m):
                best = np.float32(-np.inf)
                for t in range(lo, hi):
                    v = lut[a, codes[t]]
                    if v > best:
                        best = v
                total += best
        out[d] = total


def code_scores(q: F32, centroids: F32, codes: npt.NDArray[Any], offsets: I64) -> F32:
    """Codes-only MaxSim of every document: each token replaced by its centroid, scored through
    the (m, K) table of query-token x centroid dot products."""
    lut = np.ascontiguousarray(q @ centroids.T, dtype=np.float32)
    out = np.empty(len(offsets) - 1, dtype=np.float32)
    _lut_docs(lut, codes, offsets, out)
    return out


@njit(cache=True, inline="always")
def _popcount(v: np.uint64) -> np.uint64:
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (v * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, parallel=True)
def _id_hamming_docs(qids: np.ndarray, codes: np.ndarray, offsets: np.ndarray,
                     out: np.ndarray) -> None:  # fmt: skip
    for d in prange(out.shape[0]):
        total = 0.0
        lo, hi = offsets[d], offsets[d + 1]
        if hi > lo:
            for a in range(qids.shape[0]):
                best = 0.0
                for t in range(lo, hi):
                    h = _popcount(np.uint64(qids[a]) ^ np.uint64(codes[t]))
                    s = 1.0 / (1.0 + np.float64(h))
                    if s > best:
                        best = s
                total += best
        out[d] = total


def id_hamming_scores(qids: I64, codes: npt.NDArray[Any], offsets: I64) -> F32:
    """The paper's binary mode: every document scored by sum over query tokens of
    max_t 1 / (1 + Hamming(bits of the query token's centroid id, bits of token t's id))."""
    out = np.empty(len(offsets) - 1, dtype=np.float32)
    _id_hamming_docs(np.ascontiguousarray(qids, dtype=np.int64), codes, offsets, out)
    return out


def top_k(scores: npt.NDArray[np.floating], k: int, ids: I64 | None = None) -> tuple[I64, F32]:
    """The `k` best (id, score) pairs, best first (ties by smaller id); padded with -1 / -inf."""
    n = len(scores)
    ids = np.arange(n, dtype=np.int64) if ids is None else ids
    kk = min(k, n)
    part = np.argpartition(-scores, kk - 1)[:kk] if 0 < kk < n else np.arange(n)
    order = part[np.lexsort((ids[part], -scores[part]))]
    out_i = np.full(k, -1, dtype=np.int64)
    out_s = np.full(k, -np.inf, dtype=np.float32)
    out_i[: len(order)] = ids[order]
    out_s[: len(order)] = scores[order]
    return out_i, out_s
