"""Quality and cost numbers of one multi-vector setting (research/multivector.md section 5.4).

Owns the definitions: fidelity against exact MaxSim (tie-aware recall@10, nDCG@10 with gain
10 - r for the document at exact rank r, the MaxSim mass ratio, candidate recall),
effectiveness against the pseudo-relevance labels (MRR@10, nDCG@10, recall@10 with one
relevant document per query), latency percentiles and MaxSim work saved. Must not know about
any system.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

K = 10
TIE_TOL = 1e-5  # absolute: "the same exact score" (static GloVe has exact ties)
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def _valid(found: I64, n_docs: int) -> I64:
    out: I64 = found[(found >= 0) & (found < n_docs)]
    return out


def recall_vs_exact(scores: F64, found: I64, k: int = K) -> float:
    """Share of the returned top-k whose exact score reaches the exact k-th score (tie-aware;
    a document returned twice counts once)."""
    kth = np.sort(scores)[::-1][min(k, len(scores)) - 1]
    got = np.unique(_valid(found[:k], len(scores)))
    return float(np.sum(scores[got] >= kth - TIE_TOL)) / k


def ndcg_vs_exact(scores: F64, exact_top: I64, found: I64, k: int = K) -> float:
    """nDCG@k with graded gains from the exact ranking: the document at exact rank r (0-based,
    r < k) has gain k - r, any other document 0."""
    gain = {int(d): k - r for r, d in enumerate(exact_top[:k])}
    disc = [1.0 / math.log2(i + 2) for i in range(k)]
    dcg = sum(gain.get(int(d), 0) * disc[i] for i, d in enumerate(found[:k]))
    ideal = sum((k - r) * disc[r] for r in range(min(k, len(exact_top))))
    return dcg / ideal if ideal else 0.0


def mass_ratio(scores: F64, exact_top: I64, found: I64, k: int = K) -> float:
    """Sum of exact scores of the returned top-k over that of the exact top-k."""
    got = _valid(found[:k], len(scores))
    want = float(scores[exact_top[:k]].sum())
    return float(scores[got].sum()) / want if want else 1.0


def label_metrics(found: I64, relevant: int, k: int = K) -> tuple[float, float, float]:
    """(MRR@k, nDCG@k, recall@k) with the single relevant document `relevant`."""
    hits = np.flatnonzero(found[:k] == relevant)
    if not len(hits):
        return 0.0, 0.0, 0.0
    r = int(hits[0])
    return 1.0 / (r + 1), 1.0 / math.log2(r + 2), 1.0


def candidate_recall(exact_top: I64, candidates: I64 | None, k: int = K) -> float | None:
    """Share of the exact top-k among the documents a system considered (None if unknown)."""
    if candidates is None:
        return None
    return float(np.isin(exact_top[:k], candidates).sum()) / k


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p95 latency in milliseconds."""
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan")}
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}


def work_saved(kept_pairs: float, all_pairs: float) -> float:
    """MaxSim work saved: 1 - kept (query x document token pairs) / all, over the same
    documents."""
    return 1.0 - kept_pairs / all_pairs if all_pairs else 0.0
