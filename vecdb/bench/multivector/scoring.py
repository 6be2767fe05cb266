"""The harness's scoring of documents stored as token matrices with offsets, and the float64
reference.

Owns: exact MaxSim (sum over query tokens of the best document-token dot product) over all or
some documents and the code-only score of the paper's 1-byte setting (each token decoded to
its centroid), both through the engine's kernels (`vecdb.kernels.maxsim`), so the baselines
run the product's code; and Hamming similarity between centroid-id bit strings (the paper's
"binary" mode, a score the engine has no kernel for: 1 / (1 + Hamming), with the engine's
popcount). `reference_scores` is the plain numpy/float64 definition every kernel is tested
against. Pure functions; no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from vecdb.kernels.bitpack import code_bits, pack_codes
from vecdb.kernels.hamming import _popcount
from vecdb.kernels.maxsim import centroid_interaction
from vecdb.kernels.maxsim import maxsim as engine_maxsim

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def maxsim(q: F32, tokens: F32, offsets: I64, docs: I64 | None = None) -> F32:
    """Exact MaxSim of query `q` (m, d) against documents `docs` (default: all), float32:
    the engine's kernel (`vecdb.kernels.maxsim.maxsim`); empty documents score 0 as in
    `reference_scores`."""
    if docs is None:
        docs = np.arange(len(offsets) - 1, dtype=np.int64)
    out = np.empty(len(docs), dtype=np.float32)
    if len(docs):
        engine_maxsim(np.ascontiguousarray(q, dtype=np.float32), tokens, offsets, docs, out)
        out[offsets[docs + 1] == offsets[docs]] = 0.0
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


def pack(codes: npt.NDArray[Any], k: int) -> tuple[npt.NDArray[np.uint8], int]:
    """The engine's code stream of `codes` for a codebook of k centroids, and its bits."""
    bits = code_bits(k)
    return pack_codes(codes, bits), bits


def code_scores(
    q: F32, centroids: F32, packed: npt.NDArray[np.uint8], bits: int, offsets: I64
) -> F32:
    """Codes-only MaxSim of every document: each token replaced by its centroid, scored through
    the (K, m) table of centroid x query-token dot products (the engine's centroid
    interaction over every code; `packed` from `pack`)."""
    skq = np.ascontiguousarray((q @ centroids.T).T, dtype=np.float32)
    docs = np.arange(len(offsets) - 1, dtype=np.int64)
    out = np.empty(len(docs), dtype=np.float32)
    centroid_interaction(skq, packed, bits, offsets, docs, out, np.ones(len(centroids), bool))
    return out


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
