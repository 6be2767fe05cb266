"""The scale row's data: `vecdb bench`'s synthetic set written chunk by chunk to .npy files,
its exact top-k by a chunked exact search, recall@k, and QPS compared at equal recall. Owns
no index and no timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

K = 10
TRUTH_CHUNK = 200_000  # base rows per exact-search block
MAX_POSTINGS = (8, 16, 32, 64)  # the vecdb sweep
F32 = npt.NDArray[np.float32]


def generate(work: Path, n: int, d: int, seed: int) -> tuple[Path, Path]:
    """base.npy (n, d) and queries.npy: `datasets.synthetic(n, d, seed)`'s values, written
    chunk by chunk (the same calls on the same generator, so the same stream)."""
    from vecdb.bench.datasets import n_queries_for, synthetic_chunks

    nq = n_queries_for(n)
    bp, qp = work / "base.npy", work / "queries.npy"
    base = np.lib.format.open_memmap(bp, mode="w+", dtype=np.float32, shape=(n, d))
    queries = np.empty((nq, d), np.float32)
    for lo, rows in synthetic_chunks(n, d, seed):
        m = len(rows)
        nb = max(0, min(m, n - lo))  # rows of this chunk that belong to the base
        base[lo : lo + nb] = rows[:nb]
        queries[max(0, lo - n) : max(0, lo - n) + m - nb] = rows[nb:]
    base.flush()
    del base
    np.save(qp, queries)
    return bp, qp


def exact_truth(base: F32, q: F32, k: int = K) -> npt.NDArray[np.int64]:
    """Exact top-k rows (squared L2) of `base` for each query, chunk by chunk."""
    best_d = np.full((len(q), k), np.inf)
    best_i = np.full((len(q), k), -1, np.int64)
    q64 = q.astype(np.float64)
    for lo in range(0, len(base), TRUTH_CHUNK):
        x = np.ascontiguousarray(base[lo : lo + TRUTH_CHUNK])
        approx = (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
        c = min(2 * k, len(x))
        cand = np.argpartition(approx, c - 1, axis=1)[:, :c]
        diff = x[cand].astype(np.float64) - q64[:, None, :]
        dist = np.einsum("qcd,qcd->qc", diff, diff)
        all_d = np.concatenate([best_d, dist], 1)
        all_i = np.concatenate([best_i, cand + lo], 1)
        order = np.lexsort((all_i, all_d), axis=1)[:, :k]
        best_d = np.take_along_axis(all_d, order, 1)
        best_i = np.take_along_axis(all_i, order, 1)
    return best_i


def recall(found: npt.NDArray[Any], truth: npt.NDArray[np.int64]) -> float:
    hits = [len(set(a.tolist()) & set(b[:K].tolist())) for a, b in zip(found, truth)]
    return float(np.mean(hits)) / K


def at_recall(sweep: dict[str, Any], target: float, key: str) -> float | None:
    """QPS (`key`) at recall `target`, linear between the two sweep points around it."""
    pts = sorted((v["recall@10"], v[key]) for k, v in sweep.items() if k.startswith("nprobe="))
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return float(q0 if r1 == r0 else q0 + (q1 - q0) * (target - r0) / (r1 - r0))
    return None


def compare(res: dict[str, Any]) -> dict[str, Any]:
    """faiss QPS at each vecdb recall, and vecdb / faiss."""
    out: dict[str, Any] = {}
    for m in MAX_POSTINGS:
        v = res.get("warm", {}).get(f"max_postings={m}")
        if v is None or "faiss" not in res:
            continue
        row: dict[str, Any] = {"recall@10": v["recall@10"]}
        for key in ("qps_1thread_cpu", "qps_all_threads_wall"):
            f = at_recall(res["faiss"], v["recall@10"], key)
            row[f"faiss_{key}"] = f
            row[f"vecdb_over_faiss_{key}"] = None if not f else v[key] / f
        out[f"max_postings={m}"] = row
    return out
