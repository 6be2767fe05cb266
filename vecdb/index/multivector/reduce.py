"""Token reduction: pooling near-duplicates and pruning by salience, at index and query time.

This module owns which tokens of a document the compressed tiers keep, and which query tokens
a search scores. Pooling (`pool` > 0) averages a document's tokens whose cosine reaches the
threshold (greedy, `vecdb.kernels.pooling`), renormalising for cosine; pruning
(`doc_prune` < 1) keeps the top share of each document's tokens by salience: the client's
weights when given, else the centroid IDF of the token's code (tokens of crowded cells behave
like stopwords); query pruning (`query_keep` < 1) keeps the top share of query tokens by the
IDF of their nearest centroid. Every document and query keeps at least one token. The raw
store keeps every token, so exact MaxSim is unaffected. Pure numpy.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from vecdb.kernels.pooling import pool_labels

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def sizes_of(offsets: I64) -> I64:
    out: I64 = np.diff(offsets)
    return out


def offsets_of(sizes: npt.ArrayLike) -> I64:
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, np.int64))]).astype(np.int64)


def pool(
    tokens: F32, offsets: I64, weights: F32, threshold: float, unit: bool
) -> tuple[F32, I64, F32]:
    """Pooled tokens, their offsets and summed weights (NaN weights stay NaN); `unit` (the
    collection's metric is cosine) renormalises the merged tokens."""
    labels, groups = pool_labels(tokens, offsets, threshold)
    new_off = offsets_of(groups)
    doc_of = np.repeat(np.arange(len(groups)), sizes_of(offsets))
    target = new_off[doc_of] + labels
    out = np.zeros((int(new_off[-1]), tokens.shape[1]), np.float32)
    np.add.at(out, target, tokens)
    w = np.zeros(len(out), np.float32)
    np.add.at(w, target, np.nan_to_num(weights, nan=0.0))
    w[np.bincount(target, weights=np.isnan(weights), minlength=len(out)) > 0] = np.nan
    if unit:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out, new_off, w


def prune(offsets: I64, salience: F32, share: float) -> npt.NDArray[np.bool_]:
    """Mask of the tokens kept: per document the ceil(share x n) most salient (at least 1)."""
    keep = np.zeros(int(offsets[-1]), bool)
    for doc in range(len(offsets) - 1):
        lo, hi = int(offsets[doc]), int(offsets[doc + 1])
        n = hi - lo
        want = max(1, math.ceil(share * n))
        if want >= n:
            keep[lo:hi] = True
        else:
            top = np.argpartition(-salience[lo:hi], want - 1)[:want]
            keep[lo + top] = True
    return keep


def salience(weights: F32, codes: I64, idf: F32) -> F32:
    """Client weights where given, centroid IDF elsewhere."""
    fallback = idf[codes]
    out: F32 = np.where(np.isnan(weights), fallback, weights).astype(np.float32)
    return out


def query_tokens(q: F32, nearest: I64, idf: F32, share: float) -> npt.NDArray[np.int64]:
    """Rows of q kept by query pruning (ascending), by the IDF of each row's nearest centroid."""
    m = len(q)
    want = max(1, math.ceil(share * m))
    if want >= m:
        return np.arange(m, dtype=np.int64)
    top = np.argpartition(-idf[nearest], want - 1)[:want]
    return np.sort(top).astype(np.int64)
