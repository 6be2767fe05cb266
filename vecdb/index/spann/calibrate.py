"""A "bits" index's own `rerank_k`: how many 1-bit candidates its searches re-rank by default.

How far a 1-bit estimate can rank a true neighbour depends on the data: on text embeddings
(MiniLM-384) the 50 best estimates hold 0.995 of what re-ranking can find; on
structureless 1024-d vectors 100 candidates find 0.60 of the exact top 10 and 1,000 are
needed (bench/RESULTS.md, "random-1024-bits"). A fixed default is right for one and silently wrong for the other.

So after a bulk build (`build.build`) the index measures it. A sample of the built vectors
is searched as queries at the default search parameters: once with MAX_RERANK_K candidates
(the reference: as good as re-ranking can make these postings), then with each of STEPS;
the index keeps the smallest whose top 10 holds CALIBRATE_RECALL of the reference's on
average (each query's own vector left out of both lists), or the largest step if none does.
The value is kept in the state file's info (a checkpoint writes it, an open reads it), shown
by `stats` as `rerank_k_default` with the agreement it reached (`rerank_k_calibration`), and a
request's own `rerank_k` overrides it. An index built before this, or grown by inserts only,
has none: DEFAULT_BITS_RERANK_K (`params.rerank_candidates` picks the value a search uses).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from vecdb.index.params import MAX_RERANK_K, SearchParams
from vecdb.index.spann.search import search
from vecdb.index.spann.state import SpannState

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

SAMPLE = 200  # queries drawn from the built vectors
MIN_VECTORS = 2_000  # smaller builds keep the default (few postings: every step agrees)
# rerank_k values tried, smallest first, and the mean share of the reference's top K the
# chosen one must find. MiniLM-384 (390,000), agreement by R over two samples: 30 0.97-0.98,
# 40 0.988-0.993, 50 0.994-0.996, 100 0.9995-1.0; at recall@10 0.95, R = 50 (22 postings)
# answered 1.14x the 1-thread QPS of R = 100 (20 postings) warm and 1.26x cold with 16 in
# flight (71 device reads a query instead of 119), R = 30 and 40 no better than 50
# (bench/RESULTS.md, "a calibrated rerank_k of 50"): 0.99 picks 50 there
STEPS = (50, 100, 200, 500, 1_000, 2_000)
CALIBRATE_RECALL = 0.99
K = 10


def calibrate(st: SpannState, slots: I64, vectors: F32) -> tuple[int, float]:
    """(rerank_k, agreement) for the "bits" index `st` just built from (slots, vectors):
    see the module docstring. Searches like any reader (the index is published)."""
    n = len(slots)
    if not st.is_bits or st.store is None or n < MIN_VECTORS:
        return 0, 1.0
    rng = np.random.default_rng(st.params.seed + 1)
    pick = np.sort(rng.choice(n, size=min(SAMPLE, n), replace=False))
    queries = np.ascontiguousarray(vectors[pick], np.float32)
    own = slots[pick]
    base = SearchParams.parse(None)

    def top(rerank_k: int) -> list[set[int]]:
        sp = dataclasses.replace(base, rerank_k=rerank_k)
        got = search(st, queries, K + 1, sp, None).slots
        out = []
        for row, me in zip(got.tolist(), own.tolist(), strict=True):
            out.append(set([s for s in row if s >= 0 and s != me][:K]))
        return out

    ref = top(MAX_RERANK_K)
    agreement = 0.0
    for step in STEPS:
        got = top(step)
        agreement = float(
            np.mean([len(g & r) / max(1, len(r)) for g, r in zip(got, ref, strict=True)])
        )
        if agreement >= CALIBRATE_RECALL:
            return step, agreement
    return STEPS[-1], agreement
