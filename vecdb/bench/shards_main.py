"""`vecdb bench --shards 1,2,3`: one node vs a router over N shards, from options to report.

Owns the run's configuration (the config's "shards" object, validated here), the order
(dataset and exact ground truth, etcd, one node loaded once, then per shard count a fresh
cluster loaded with the same points and index settings and measured against the node), the
JSONL rows and the RESULTS.md section `shards-<dataset>`. Processes: `shards_cluster`;
measurements: `shards_run`; the command line: `vecdb.cli.bench`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdb.bench.datasets import load_dataset
from vecdb.bench.environment import environment, load_average
from vecdb.bench.report import replace_section
from vecdb.bench.server_process import ServerProcess
from vecdb.bench.shards_cluster import Cluster, EtcdProcess
from vecdb.bench.shards_report import section_text
from vecdb.bench.shards_run import (
    DIRECT,
    NODE,
    NOOP,
    ROUTER,
    SEARCH,
    SEARCH_EQ,
    TENANT,
    TENANT_ONE,
    Workload,
    batch_recall,
    compare,
    exact_topk,
    load,
    matched_max_postings,
    shards_touched,
    wait_ready,
)  # fmt: skip
from vecdb.client import connect
from vecdb.client.base import Client
from vecdb.errors import InvalidArgument

MAX_SHARDS = 16  # loopback processes on one machine
# `vecdb bench` options that, given on the command line, override the config's "shards" keys
CLI_OPTIONS = {"n_queries": "queries", "latency_queries": "latency_queries", "repeats": "rounds",
               "threads": "threads"}  # fmt: skip


@dataclass(frozen=True)
class ShardOptions:
    """The config's "shards" object; every key optional."""

    base_limit: int = 0  # first N base vectors loaded; 0: all of them
    queries: int = 1000  # queries for batch QPS and recall
    latency_queries: int = 300  # of which timed one call each
    k: int = 10
    batch: int = 100  # queries per batch call
    rounds: int = 3  # alternating rounds; rows hold medians
    threads: int = 1  # BLAS / numba threads of every server process
    upsert_batch: int = 2000
    index: str = "spann"  # the same index settings on the node and on every shard
    index_params: dict[str, Any] | None = None
    search_params: dict[str, Any] | None = None
    tenants: int = 24  # tenants of the tenant run (0: none)
    tenant_vectors: int = 2000  # vectors each tenant owns

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], overrides: Mapping[str, Any]) -> ShardOptions:
        if not isinstance(cfg, Mapping):
            raise InvalidArgument(f"config shards must be an object, got {cfg!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise InvalidArgument(
                f"config shards.{unknown[0]}: unknown key; known: {', '.join(known)}"
            )
        opts = cls(**{**cfg, **overrides})
        if opts.base_limit < 0:
            raise InvalidArgument(
                "config shards.base_limit must be >= 0", field="shards.base_limit"
            )
        for name in ("queries", "latency_queries", "k", "batch", "rounds",
                     "threads", "upsert_batch", "tenant_vectors"):  # fmt: skip
            if int(getattr(opts, name)) < 1:
                raise InvalidArgument(f"config shards.{name} must be >= 1", field=f"shards.{name}")
        if opts.tenants < 0:
            raise InvalidArgument("config shards.tenants must be >= 0", field="shards.tenants")
        return opts


def parse_counts(spec: str) -> tuple[int, ...]:
    """`--shards 1,2,3` -> (1, 2, 3): distinct shard counts in [1, MAX_SHARDS]."""
    try:
        counts = tuple(dict.fromkeys(int(p) for p in spec.split(",") if p.strip()))
    except ValueError:
        counts = ()
    if not counts or not all(1 <= n <= MAX_SHARDS for n in counts):
        raise InvalidArgument(
            f"--shards {spec!r}: expected a comma list of shard counts in [1, {MAX_SHARDS}]",
            field="shards",
        )
    return counts


def _setup(
    client: Client, ds_metric: str, data: dict[str, Any], o: ShardOptions
) -> dict[str, float]:
    """Create and load the three collections; seconds to load and to optimize."""
    dim = data["base"].shape[1]
    idx, params = o.index, o.index_params
    client.create_collection("ann", dim, ds_metric, index=idx, index_params=params)
    client.create_collection("empty", dim, ds_metric, index=idx, index_params=params)
    for name in ("ann", "empty"):
        wait_ready(client, name)
    out = {"load_s": load(client, "ann", data["base"], 0, o.upsert_batch)}
    if o.tenants:
        client.create_collection(
            "tenants", dim, ds_metric, index=idx, index_params=params, multi_tenant=True
        )
        wait_ready(client, "tenants")
        for i, t in enumerate(data["tenants"]):
            client.create_tenant("tenants", t)
            rows = data["base"][i * o.tenant_vectors : (i + 1) * o.tenant_vectors]
            load(client, "tenants", rows, i * o.tenant_vectors, o.upsert_batch, tenant=t)
    t0 = time.perf_counter()
    for name in ("ann", *(["tenants"] if o.tenants else [])):
        client.optimize(name, wait=True)
    out["optimize_s"] = time.perf_counter() - t0
    return out


def one_shard_tenants(direct: Client, tenant_run: Workload) -> list[Workload]:
    """`tenant_run` again with only the tenants homed on shard 0 (their routes learnt through
    `direct`, a client with direct_routing=True; one Count each), as TENANT_ONE."""
    for t in tenant_run.tenants:
        direct.count(tenant_run.collection, tenant=t)
    routes = direct._direct.table.routes  # type: ignore[attr-defined]
    home0 = [t for t in tenant_run.tenants
             if (r := routes.get((tenant_run.collection, t), (None, 0))[0]) and r.shard == 0]  # fmt: skip
    return [dataclasses.replace(tenant_run, name=TENANT_ONE, tenants=home0)] if home0 else []


def bench_shards(
    command: str,
    dataset: str,
    spec: str,
    config: Mapping[str, Any],
    o: Mapping[str, Any],
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], Path, list[Path]]:
    """Run the comparison for every shard count; write the JSONL and the RESULTS.md section."""
    counts = parse_counts(spec)
    given = {CLI_OPTIONS[k]: v for k, v in o.get("overrides", {}).items()}
    opts = ShardOptions.from_config(config.get("shards", {}), given)
    load_start, t_start = load_average(), time.perf_counter()
    ds = load_dataset(dataset, o["cache_dir"], o["metric"])
    base = ds.base[: opts.base_limit or len(ds.base)]
    queries = ds.queries[: opts.queries]
    if opts.tenants * opts.tenant_vectors > len(base):
        raise InvalidArgument("config shards: tenants x tenant_vectors exceeds base_limit")
    log(f"{ds.name}: {len(base):,} of {len(ds.base):,} x {base.shape[1]}, {len(queries)} "
        f"queries, shard counts {counts}; exact ground truth ...")  # fmt: skip
    gt = exact_topk(base, queries, opts.k, ds.metric)
    tenants = [f"t{i:03d}" for i in range(opts.tenants)]
    data = {"base": base, "tenants": tenants}
    workloads = [
        Workload(SEARCH, "ann", queries, opts.k, opts.search_params, gt=gt),
        Workload(NOOP, "empty", queries, opts.k, None),
        *([Workload(TENANT, "tenants", queries, opts.k, opts.search_params, tenants)]
          if tenants else []),
    ]  # fmt: skip
    env = {**environment(opts.threads), "run_id": uuid.uuid4().hex[:8]}
    common = {"dataset": ds.name, "n": len(base), "d": int(base.shape[1]), "metric": ds.metric,
              "n_queries": len(queries), **dataclasses.asdict(opts), **env}  # fmt: skip
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="vecdb-bench-shards-"))
    etcd = node = None
    try:
        etcd = EtcdProcess(workdir)
        node = ServerProcess(workdir / "node", opts.threads)
        with connect(node.address) as nc:
            log("one node: loading ...")
            node_setup = _setup(nc, ds.metric, data, opts)
            search = workloads[0]
            node_recall = batch_recall(nc, "ann", queries, opts.k, opts.search_params, gt,
                                       opts.batch)  # fmt: skip
            for n in counts:
                log(f"{n} shard(s) + router: starting and loading ...")
                cluster = Cluster(etcd, n, workdir / f"cluster-{n}", opts.threads)
                try:
                    with connect(cluster.address) as rc, \
                            connect(cluster.address, direct_routing=True) as dc:  # fmt: skip
                        setup = _setup(rc, ds.metric, data, opts)
                        touched = (
                            shards_touched(rc, "tenants", queries[0], tenants[0])
                            if tenants
                            else None
                        )
                        runs, m = list(workloads), None
                        if opts.index == "spann":  # the only index with max_postings
                            m, got = matched_max_postings(rc, search, node_recall, opts.batch)
                            log(f"  shards' max_postings {m}: router recall {got:.4f} "
                                f"(node {node_recall:.4f})")  # fmt: skip
                            runs.append(dataclasses.replace(
                                search, name=SEARCH_EQ,
                                router_params={**(opts.search_params or {}), "max_postings": m}))  # fmt: skip
                        if tenants and n > 1:
                            runs += one_shard_tenants(dc, workloads[-1])
                        res = compare({NODE: nc, ROUTER: rc, DIRECT: dc}, runs, opts.rounds,
                                      opts.latency_queries, opts.batch, log)  # fmt: skip
                        routes = dict(dc._direct.table.counters)  # type: ignore[attr-defined]
                finally:
                    cluster.stop()
                    shutil.rmtree(workdir / f"cluster-{n}", ignore_errors=True)
                for (target, wl), r in res.items():
                    extra: dict[str, Any] = {"setup": node_setup if target == NODE else setup}
                    if target == DIRECT:  # how many calls went direct, and why others not
                        extra["routes"] = routes
                    if wl == TENANT and target == ROUTER:
                        extra["shards_touched"] = touched
                    if wl == SEARCH_EQ and target == ROUTER:
                        extra["shard_max_postings"] = m
                    rows.append(
                        {**common, "shards": n, "target": target, "workload": wl, **r, **extra}
                    )
    finally:
        if node is not None:
            node.stop()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    header = {"command": command, "seconds": time.perf_counter() - t_start,
              "load_start": load_start, "load_end": load_average()}  # fmt: skip
    out_dir: Path = o["out_dir"]
    out_dir.mkdir(parents=True, exist_ok=True)
    label = o["section"] or f"shards-{ds.slug}"
    jsonl = out_dir / f"results-{label}.jsonl"
    with open(jsonl, "w") as f:
        for row in rows:
            f.write(json.dumps({**row, **header}) + "\n")
    md: Path = o["results_md"] or out_dir / "RESULTS.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    old = md.read_text() if md.is_file() else ""
    md.write_text(replace_section(old, label, section_text(label, rows, header)))
    return rows, jsonl, [md]
