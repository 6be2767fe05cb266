"""Exact MaxSim ground truth of a tier, cached next to its data.

Owns the (n_queries, n_docs) float64 matrix of exact MaxSim scores (`scoring.reference_scores`,
float64 over chunks of documents), written once per prepared tier as `truth.npy` with the
tier's checksum beside it, and the exact ranking derived from it. Every fidelity metric reads
scores from here, so a returned document's exact score is a lookup.
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from vecdb.bench.multivector.embed import MVData
from vecdb.bench.multivector.scoring import reference_scores, top_k

F64 = npt.NDArray[np.float64]


def exact_scores(data: MVData) -> F64:
    """Exact MaxSim of every query against every document, float64, cached."""
    path, stamp = data.directory / "truth.npy", data.directory / "truth.json"
    checksum = data.meta.get("checksum")
    if path.is_file() and stamp.is_file():
        if json.loads(stamp.read_text()).get("checksum") == checksum:
            cached: F64 = np.load(path)
            if cached.shape == (data.n_queries, data.n_docs):
                return cached
    out = np.empty((data.n_queries, data.n_docs), dtype=np.float64)
    for j in range(data.n_queries):
        out[j] = reference_scores(data.query(j), data.tokens, data.offsets)
    data.directory.mkdir(parents=True, exist_ok=True)
    np.save(data.directory / "truth.tmp.npy", out)
    (data.directory / "truth.tmp.npy").replace(path)
    stamp.write_text(json.dumps({"checksum": checksum}))
    return out


def exact_ranking(scores: F64, k: int) -> npt.NDArray[np.int64]:
    """(n_queries, k) document ids of the exact top-k, best first (ties by smaller id)."""
    return (
        np.stack([top_k(row, k)[0] for row in scores])
        if len(scores)
        else np.zeros((0, k), np.int64)
    )
