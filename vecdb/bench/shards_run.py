"""The measurements of `vecdb bench --shards`: one node and a router side by side.

Owns what is timed and how: loading the same points into one `vecdb serve` and into a cluster
(through the remote SDK, as a user would), exact ground truth on the loaded subset, and rounds
that alternate the two targets so both see the same machine load. Per round: single-query
latency (p50 / p99 of one call per query), batch QPS (wall), a no-op fan-out (Count on an
empty collection: the cost of the router hop and of asking every shard), and tenant-scoped
queries (routed to the tenant's one shard; also by a third target, `DIRECT`: a client of the
same router with `direct_routing=True`, which asks the tenant's shard itself; and again with
only the tenants homed on shard 0, `TENANT_ONE`, so that every call reaches the same shard
process as every node call reaches the node, instead of a third of them each); and the ANN search again with the shards'
`max_postings` lowered until the router's recall is the node's (`matched_max_postings`):
every shard searching a third of the data with the node's settings reads a larger share of
it and returns a higher recall, so only the matched row compares equal work. Rows carry the
median over rounds; the
orchestration and the report are `vecdb.bench.shards_main`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.client.base import Client
from vecdb.errors import NotFound, Unavailable
from vecdb.index.params import DEFAULT_MAX_POSTINGS

F32 = npt.NDArray[np.float32]
SEARCH = "search_ann"
SEARCH_EQ = "search_ann_equal_recall"  # SEARCH, the router's shards at the node's recall
NOOP = "noop_count"
TENANT = "search_tenant"
TENANT_ONE = "search_tenant_one_shard"  # TENANT with the tenants homed on shard 0 only
TENANTS = (TENANT, TENANT_ONE)
NODE, ROUTER = "one node", "router"  # the two targets compared
DIRECT = "direct"  # the router's address with client-side routing (TENANTS only)
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Workload:
    """What one target is asked, every round."""

    name: str  # SEARCH | NOOP | TENANT
    collection: str
    queries: F32  # single-query latency uses the first `latency_queries`, batches all
    k: int
    params: dict[str, Any] | None
    tenants: Sequence[str] = ()  # TENANT: query i is scoped to tenants[i % len]
    gt: npt.NDArray[np.int64] | None = None  # exact top-k ids for recall (SEARCH*)
    router_params: dict[str, Any] | None = None  # the router's, where they differ (SEARCH_EQ)

    def params_for(self, target: str) -> dict[str, Any] | None:
        return self.router_params if target == ROUTER and self.router_params else self.params


def load(client: Client, collection: str, base: F32, ids_from: int, batch: int,
         tenant: str | None = None) -> float:  # fmt: skip
    """Upsert `base` with ids ids_from..; seconds taken."""
    t0 = time.perf_counter()
    for lo in range(0, len(base), batch):
        ids = np.arange(ids_from + lo, ids_from + min(lo + batch, len(base)), dtype=np.int64)
        client.upsert(collection, ids, base[lo : lo + batch], tenant=tenant)
    return time.perf_counter() - t0


def wait_ready(client: Client, collection: str) -> None:
    """Wait until `collection` answers Count (every shard has applied the catalog change)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            client.count(collection)
            return
        except (NotFound, Unavailable):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def exact_topk(base: F32, queries: F32, k: int, metric: str) -> npt.NDArray[np.int64]:
    """Ids of the exact top-k of each query (cosine data is unit-norm: inner product)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for lo in range(0, len(queries), 256):
        q = queries[lo : lo + 256]
        if metric == "l2":
            score = (base * base).sum(1)[None, :] - 2.0 * (q @ base.T)
        else:
            score = -(q @ base.T)
        part = np.argpartition(score, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(score, part, 1).argsort(1, kind="stable")
        out[lo : lo + 256] = np.take_along_axis(part, order, 1)
    return out


def recall(ids: npt.NDArray[np.int64], gt: npt.NDArray[np.int64]) -> float:
    """Mean fraction of the exact top-k found."""
    k = gt.shape[1]
    hits = sum(len(set(a[:k].tolist()) & set(b.tolist())) for a, b in zip(ids, gt, strict=True))
    return hits / float(gt.size)


def _percentiles(lat_ms: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(lat_ms), [50.0, 99.0])
    return float(p50), float(p99)


def _one_round(client: Client, w: Workload, params: dict[str, Any] | None,
               latency_queries: int, batch: int) -> dict[str, float]:  # fmt: skip
    """Latency of one call per query, then batch QPS (and recall) of one pass over all."""
    call: Callable[[int], Any]
    if w.name == NOOP:
        call = lambda i: client.count(w.collection)  # noqa: E731
    elif w.name in TENANTS:
        call = lambda i: client.search(  # noqa: E731
            w.collection, w.queries[i], w.k, params=params, tenant=w.tenants[i % len(w.tenants)]
        )
    else:
        call = lambda i: client.search(w.collection, w.queries[i], w.k, params=params)  # noqa: E731
    for i in range(min(20, len(w.queries))):  # warm the channel and the caches
        call(i)
    lat = []
    for i in range(min(latency_queries, len(w.queries))):
        t0 = time.perf_counter_ns()
        call(i)
        lat.append((time.perf_counter_ns() - t0) / 1e6)
    p50, p99 = _percentiles(lat)
    out: dict[str, float] = {"p50_ms": p50, "p99_ms": p99, "latency_n": float(len(lat))}
    if w.name not in (SEARCH, SEARCH_EQ):
        return out
    client.search(w.collection, w.queries[:batch], w.k, params=params)  # warm the batch path
    start = time.perf_counter()
    found = _batches(client, w.collection, w.queries, w.k, params, batch)
    out["qps"] = len(w.queries) / (time.perf_counter() - start)
    if w.gt is not None:
        out["recall"] = recall(found, w.gt)
    return out


def _batches(client: Client, collection: str, queries: F32, k: int,
             params: dict[str, Any] | None, batch: int) -> npt.NDArray[np.int64]:  # fmt: skip
    """Every query's top-k ids, searched `batch` queries per call."""
    return np.concatenate([
        client.search(collection, queries[lo : lo + batch], k, params=params).ids
        for lo in range(0, len(queries), batch)
    ])  # fmt: skip


def batch_recall(client: Client, collection: str, queries: F32, k: int,
                 params: dict[str, Any] | None, gt: npt.NDArray[np.int64], batch: int) -> float:  # fmt: skip
    return recall(_batches(client, collection, queries, k, params, batch), gt)


def matched_max_postings(client: Client, w: Workload, want: float,
                         batch: int) -> tuple[int, float]:  # fmt: skip
    """The smallest `max_postings` among 1/4, 1/3, 1/2, 2/3, 3/4 and all of the workload's
    (its params' or the default) whose recall through `client` reaches `want`, and that
    recall; the workload's own value if none below it does."""
    assert w.gt is not None
    top = int((w.params or {}).get("max_postings", DEFAULT_MAX_POSTINGS))
    got = 0.0
    for m in sorted({max(1, round(top * f)) for f in (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1)}):
        got = batch_recall(client, w.collection, w.queries, w.k,
                           {**(w.params or {}), "max_postings": m}, w.gt, batch)  # fmt: skip
        if got >= want:
            return m, got
    return top, got


def compare(
    targets: Mapping[str, Client],
    workloads: Sequence[Workload],
    rounds: int,
    latency_queries: int,
    batch: int,
    log: Callable[[str], None],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Median over `rounds` of every (target, workload); targets alternate order each round."""
    seen: dict[tuple[str, str], list[dict[str, float]]] = {}
    names = list(targets)
    for r in range(rounds):
        for w in workloads:
            for t in names if r % 2 == 0 else names[::-1]:
                if t == DIRECT and w.name not in TENANTS:
                    continue  # client-side routing changes tenant calls only
                res = _one_round(targets[t], w, w.params_for(t), latency_queries, batch)
                seen.setdefault((t, w.name), []).append(res)
                log(f"  round {r + 1}/{rounds} {w.name:<14} {t:<10} "
                    + " ".join(f"{k}={v:.4g}" for k, v in res.items()))  # fmt: skip
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, results in seen.items():
        row: dict[str, Any] = {"rounds": len(results)}
        for field in results[0]:
            values = [res[field] for res in results]
            row[field] = round(statistics.median(values), 4)
            if field in ("p50_ms", "qps"):
                row[f"{field}_all"] = [round(v, 4) for v in values]
        out[key] = row
    return out


def shards_touched(client: Client, collection: str, query: F32, tenant: str | None) -> int | None:
    """How many shards one search touched: the router's `shards` search stat (a single node
    reports none)."""
    stats = client.search(collection, query, 10, tenant=tenant, with_stats=True).stats or {}
    return int(stats["shards"]) if "shards" in stats else None
