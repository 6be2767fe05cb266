"""Quality and speed measurements of one search setting: recall, batch QPS and latency.

Owns the definitions every number in RESULTS.md rests on. Recall is tie-aware: a returned id
counts when its true distance (recomputed in float64 from the base vectors) is within a small
tolerance of the k-th exact distance, so equal-distance neighbours may swap. QPS is measured
on process CPU time and on wall time; latency is one search call per query. Must not know
about any particular system (they arrive as callables).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

RTOL = 1e-5  # relative tolerance of "the same distance" in tie-aware recall
Ids = npt.NDArray[np.int64]
BatchSearch = Callable[[npt.NDArray[np.float32], int], Ids]


def true_distances(
    base: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    ids: Ids,
    metric: str,
) -> npt.NDArray[np.float64]:
    """Distances (vecdb's convention) of `ids` (nq, k) to their queries, in float64.
    Invalid ids (negative or out of range) get +inf."""
    ids = np.asarray(ids, dtype=np.int64)
    valid = (ids >= 0) & (ids < len(base))
    out = np.full(ids.shape, np.inf, dtype=np.float64)
    step = max(1, (1 << 22) // max(1, ids.shape[1] * base.shape[1]))
    for lo in range(0, len(ids), step):
        sl = slice(lo, lo + step)
        vec = base[np.where(valid[sl], ids[sl], 0)].astype(np.float64)
        q = queries[sl, None, :].astype(np.float64)
        if metric == "l2":
            d = np.sum((vec - q) ** 2, axis=2)
        elif metric == "ip":
            d = -np.sum(vec * q, axis=2)
        else:
            d = 1.0 - np.sum(vec * q, axis=2)
        out[sl] = np.where(valid[sl], d, np.inf)
    return out


def recall_at_k(
    base: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    metric: str,
    gt_ids: Ids,
    found: Ids,
    k: int,
) -> float:
    """Mean over queries of |distinct found[:, :k] ids at distance <= the k-th exact one| / k."""
    if len(queries) == 0:
        return float("nan")
    found = np.asarray(found, dtype=np.int64)[:, :k]
    kth = true_distances(base, queries, gt_ids[:, k - 1 : k], metric)[:, 0]
    qnorm2 = np.sum(queries.astype(np.float64) ** 2, axis=1)
    tol = RTOL * (np.abs(kth) + 1e-2 * qnorm2) + 1e-12
    dist = true_distances(base, queries, found, metric)
    hit = dist <= (kth + tol)[:, None]
    # A system returning one id twice must not score twice: keep the first occurrence.
    order = np.sort(np.where(hit, found, -1), axis=1)
    distinct = (order[:, 1:] != order[:, :-1]) & (order[:, 1:] >= 0)
    counts = distinct.sum(axis=1) + (order[:, 0] >= 0)
    return float(np.mean(counts / k))


@dataclass
class BatchTiming:
    """Timed batch searches of all queries in one call (medians over repeats)."""

    qps_cpu: float  # queries / process CPU seconds
    qps_wall: float  # queries / wall seconds
    repeats: int

    def as_dict(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_cpu": round(self.qps_cpu, 1),
            f"{prefix}_wall": round(self.qps_wall, 1),
            f"{prefix}_repeats": self.repeats,
        }


def time_batch(
    search: BatchSearch,
    queries: npt.NDArray[np.float32],
    k: int,
    repeats: int,
    budget_s: float,
    cpu_clock: Callable[[], float] = time.process_time,
) -> BatchTiming:
    """Median CPU and wall time of `repeats` batch calls; stops adding repeats past `budget_s`
    once one is done (the caller has already warmed the system up). `cpu_clock` counts the CPU
    of every process doing the work (a remote server's too)."""
    cpu: list[float] = []
    wall: list[float] = []
    start = time.perf_counter()
    while len(wall) < max(1, repeats):
        c0, w0 = cpu_clock(), time.perf_counter()
        search(queries, k)
        cpu.append(cpu_clock() - c0)
        wall.append(time.perf_counter() - w0)
        if time.perf_counter() - start > budget_s:
            break
    nq = len(queries)
    return BatchTiming(
        qps_cpu=nq / max(statistics.median(cpu), 1e-9),
        qps_wall=nq / max(statistics.median(wall), 1e-9),
        repeats=len(wall),
    )


def time_latency(
    search: BatchSearch, queries: npt.NDArray[np.float32], k: int, budget_s: float
) -> dict[str, Any]:
    """p50 / p99 / p99.9 wall latency in ms of one call per query (a (1, d) batch each),
    after one untimed call (a system's single-query path may compile on first use: vecdb's
    "bits" kernel took 12.5 s once, which counted as the only sample of a setting). Stops
    early past `budget_s`; the row records how many queries were timed."""
    lat: list[float] = []
    if len(queries):
        search(queries[:1], k)
    start = time.perf_counter()
    for i in range(len(queries)):
        t0 = time.perf_counter_ns()
        search(queries[i : i + 1], k)
        lat.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - start > budget_s:
            break
    if not lat:
        return {"latency_n": 0}
    p50, p99, p999 = np.percentile(np.asarray(lat), [50.0, 99.0, 99.9])
    return {
        "latency_n": len(lat),
        "latency_p50_ms": round(float(p50), 4),
        "latency_p99_ms": round(float(p99), 4),
        "latency_p999_ms": round(float(p999), 4),
    }
