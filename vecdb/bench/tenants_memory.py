"""Memory of a (multi-tenant) vecdb database, measured in a fresh process.

Owns the child process of the tenant run's memory rows (`python -m vecdb.bench.tenants_memory
SPEC`): import vecdb, warm its kernels up on a tiny multi-tenant SPANN collection in a scratch
directory, every tenant search path and an unscoped search, the same in the process with
tenants and the one without, so compiled code is in the baseline of both, read
RssAnon, open the database, answer the probe queries (each with its tenant, or without any),
read RssAnon again; with `tiny` also one query for each tiny tenant, and a third reading.
Clustered copies are built by the maintenance worker, so the warm-up asks for them, waits
for the worker (`optimize`) and searches every path again. The warm-up also runs one clustered-copy build of a large tenant's size on random rows
(its first build touches BLAS work buffers once per process). Prints one JSON line. Must not
build the measured database.
"""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any

import numpy as np

from vecdb.allocator import release_free_memory
from vecdb.bench.memory import mib, read_status_kib
from vecdb.bench.tenants import tenant_name
from vecdb.bench.tenants_vecdb import connect
from vecdb.engine.tenant_cluster_build import build
from vecdb.index.tenancy import (
    DEFAULT_TENANT_CLUSTER_CLOSURE,
    DEFAULT_TENANT_CLUSTER_REPLICAS,
    DEFAULT_TENANT_CLUSTER_SIZE,
)

WARM_VECTORS = 3000  # as vecdb.bench.vecdb_system: enough for a SPANN index with splits
# tenant search paths the warm-up takes: the copy, the sub-tree walk, the clustered copy
# (its build included), the global walk
WARM_PATHS: tuple[dict[str, Any], ...] = (
    {},
    {"tenant_copy": 0},
    {"tenant_copy": 0, "tenant_share": 0.0},
    {"tenant_copy": 0, "tenant_share": 0.0, "tenant_cluster_size": 0},
)
WARM_BUILD_ROWS = 40_000  # rows of the warm clustered build (a large tenant's size)
WARM_MANY_BLOCKS = {"tenant_copy": 0, "tenant_share": 0.0, "tenant_cluster_size": 8}


def _warm(dim: int, metric: str) -> None:
    """Compile (or load from numba's cache) every kernel the measured reads can run, in
    both processes alike: a multi-tenant SPANN collection in a scratch directory (a file-
    backed copy is a read-only array: its own kernel signature) searched on each tenant path
    (copy, sub-tree walk, clustered copy, global walk with the bitmap) and without a tenant."""
    x = np.random.default_rng(0).standard_normal((WARM_VECTORS, dim)).astype(np.float32)
    ids = np.arange(WARM_VECTORS, dtype=np.int64)
    half = WARM_VECTORS // 2
    with tempfile.TemporaryDirectory() as tmp, connect(tmp) as client:
        client.create_collection("warm", dim=dim, metric=metric, index="spann",
                                 multi_tenant=True)  # fmt: skip
        for name in ("a", "b"):
            client.create_tenant("warm", name)
        client.upsert("warm", ids=ids[:half], vectors=x[:half], tenant="a")
        client.upsert("warm", ids=ids[half:], vectors=x[half:], tenant="b")
        client.grant("warm", ids[:10], tenant="b")
        client.optimize("warm", wait=True)
        for _ in range(2):  # the second time with the clustered copies the first asked for
            for params in WARM_PATHS:
                client.search("warm", x[:2], k=10, tenant="b", params=params)
            # a clustered copy of many blocks: k-means seeds more than 64 centroids its own way
            client.search("warm", x[:2], k=10, tenant="a", params=WARM_MANY_BLOCKS)
            client.search("warm", x[:2], k=10)
            client.optimize("warm", wait=True)  # (the worker builds the copies asked for)
    # One clustered copy's build at the size of a large tenant: the first one touches
    # runtime work buffers (BLAS, about 0.85 MiB on GloVe-50) that later builds reuse; a
    # one-time cost of the process like compiled code, not memory of the index.
    rows = np.random.default_rng(1).standard_normal((WARM_BUILD_ROWS, dim)).astype(np.float32)
    build(np.arange(WARM_BUILD_ROWS, dtype=np.int64), rows, DEFAULT_TENANT_CLUSTER_SIZE,
          DEFAULT_TENANT_CLUSTER_REPLICAS, DEFAULT_TENANT_CLUSTER_CLOSURE)  # fmt: skip
    del rows
    release_free_memory()


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    tenants = bool(spec["tenants"])
    probe = np.load(spec["probe"])
    queries, owners = probe["queries"], probe["tenants"]
    _warm(int(spec["dim"]), str(spec["metric"]))
    before = read_status_kib()
    params = spec.get("params") or None
    out: dict[str, Any] = {}
    with connect(spec["data_dir"]) as client:
        coll, k = spec["collection"], int(spec["k"])
        opened = read_status_kib()
        for q, t in zip(queries, owners.tolist(), strict=True):
            scope = {"tenant": tenant_name(t)} if tenants else {}
            client.search(coll, q[None, :], k=k, params=params, **scope)
        after = read_status_kib()
        out["rss_anon_open_mib"] = mib(opened["RssAnon"] - before["RssAnon"])
        out["rss_anon_mib"] = mib(after["RssAnon"] - before["RssAnon"])
        out["rss_file_mib"] = mib(after["RssFile"] - before["RssFile"])
        out["rss_anon_baseline_mib"] = mib(before["RssAnon"])
        tiny = int(spec.get("tiny", 0))
        if tiny:
            rows = spec["tiny_rows"]
            base_q = queries[0]
            for i in range(tiny):
                client.search(coll, base_q[None, :], k=k, params=params,
                              tenant=f"tiny{i:06d}")  # fmt: skip
            active = read_status_kib()
            out["rss_anon_active_mib"] = mib(active["RssAnon"] - before["RssAnon"])
            out["tiny_rows"] = len(rows)
        out["peak_rss_mib"] = mib(read_status_kib().get("VmHWM", 0))
    return out


if __name__ == "__main__":
    print(json.dumps(child_main(json.loads(sys.argv[1]))), flush=True)
