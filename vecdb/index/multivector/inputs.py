"""What the multi-vector index accepts as input, and token ranges of documents.

This module owns the checks of `build` / `add` arguments (doc ids, doc-major tokens, offsets,
per-token weights) and of queries, raising `ValueError` (the engine validates users' input
before it gets here), the gathering of documents' token ranges from a row store, and the
cutting of a run of documents into steps of bounded tokens (`doc_steps`). No state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.kernels.unique import sorted_unique

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def ranges(offsets: I64, docs: I64) -> I64:
    """Token indices of the given documents, back to back."""
    sizes = offsets[docs + 1] - offsets[docs]
    if len(sizes) == 0 or sizes.sum() == 0:
        return np.zeros(0, np.int64)
    starts = np.repeat(offsets[docs] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    out: I64 = starts + np.arange(int(sizes.sum()), dtype=np.int64)
    return out


def doc_steps(sizes: I64, tokens: int, docs: int = 0) -> list[tuple[int, int]]:
    """Consecutive ranges [lo, hi) of documents (of `sizes` tokens) holding at most `tokens`
    tokens each (or one document that holds more: a document is never split) and, with
    `docs` > 0, at most `docs` documents; a range is never empty."""
    ends = np.cumsum(sizes)
    out: list[tuple[int, int]] = []
    lo = 0
    while lo < len(sizes):
        base = int(ends[lo - 1]) if lo else 0
        hi = int(np.searchsorted(ends, base + tokens, "right"))
        hi = max(lo + 1, min(hi, lo + docs) if docs > 0 else hi)
        out.append((lo, hi))
        lo = hi
    return out


def gather(raw: Any, offsets: I64, docs: I64) -> F32:
    """The float32 tokens of `docs` from a row store, back to back."""
    rows, _local = raw.gather(offsets, docs)
    return np.asarray(rows, np.float32)


def checked(
    dim: int, doc_ids: npt.ArrayLike, tokens: F32, offsets: npt.ArrayLike, weights: F32 | None
) -> tuple[I64, F32, I64, F32]:
    ids = np.asarray(doc_ids, np.int64).ravel()
    toks = np.ascontiguousarray(tokens, np.float32)
    offs = np.asarray(offsets, np.int64).ravel()
    if toks.ndim != 2 or toks.shape[1] != dim:
        raise ValueError(f"tokens must be (N, {dim}), got {toks.shape}")
    if len(offs) != len(ids) + 1 or offs[0] != 0 or offs[-1] != len(toks):
        raise ValueError("offsets must be (D+1,) from 0 to the token count")
    if np.any(np.diff(offs) < 1):
        raise ValueError("every document needs at least one token")
    if len(sorted_unique(ids)) != len(ids):
        raise ValueError("doc_ids must be unique")
    w = (
        np.full(len(toks), np.nan, np.float32)
        if weights is None
        else np.asarray(weights, np.float32)
    )
    if w.shape != (len(toks),):
        raise ValueError(f"weights must be ({len(toks)},), got {w.shape}")
    return ids, toks, offs, w


def queries_of(dim: int, queries: Sequence[F32] | F32) -> list[F32]:
    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        queries = [queries]
    out = [np.ascontiguousarray(q, np.float32) for q in queries]
    for q in out:
        if q.ndim != 2 or q.shape[1] != dim:
            raise ValueError(f"each query must be (m, {dim}), got {q.shape}")
    return out
