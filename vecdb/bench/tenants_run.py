"""The multi-tenant benchmark orchestrator (`vecdb bench --tenants zipf:T[:s]`).

Owns the order of work and the numbers of one tenant run. Per system: build (all threads,
timed), one untimed warm-up pass over every query, then per sweep setting one pass of single
queries on one thread, each timed alone and scored against the exact top-10 over exactly its
tenant's vectors (tie-aware; an id outside the tenant never counts and is counted as a leak);
a system that counts its reads gets one more, untimed, pass for postings and bytes per query.
A pass is summarised per size bucket (recall@10, p50/p99 latency) and as tenant-uniform and
size-weighted averages: a sampled tenant stands for the tenants of its bucket, and in the
size-weighted average also for its size. A sweep stops after the first setting whose recall
reaches `stop_recall` in every bucket. After vecdb-tenants' sweep `vecdb.bench.tenants_ops`
measures grants, revokes, drop_tenant and memory. Rows go to `results-<label>.jsonl` as each
system finishes. Must not format results (see `vecdb.bench.tenants_report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench import metrics
from vecdb.bench.datasets import Dataset, slugify
from vecdb.bench.environment import environment, load_average
from vecdb.bench.run import RunConfig, RunResult, run_systems
from vecdb.bench.systems import Params, expand_sweep
from vecdb.bench.tenants import K, TenantWorkload
from vecdb.bench.tenants_systems import TenantSystem, make_tenant_system

DEFAULT_STOP_RECALL = 0.99  # a sweep stops once every bucket reaches this recall@10

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass
class TenantOptions:
    """The tenant run's settings besides RunConfig."""

    stop_recall: float = DEFAULT_STOP_RECALL
    ops: bool = True  # vecdb-tenants: grant / revoke / drop_tenant costs
    memory: bool = True  # vecdb-tenants: fresh-process memory, vs a shared index, per tenant
    extra: dict[str, Any] = field(default_factory=dict)  # tenants_ops settings from the config


def run_tenants(
    ds: Dataset,
    wl: TenantWorkload,
    cfg: RunConfig,
    opts: TenantOptions,
    log: Callable[[str], None] = print,
    workload_s: float = 0.0,
) -> RunResult:
    """Measure every system of `cfg` on the workload; write the JSONL rows."""
    start = time.perf_counter()
    env = environment(cfg.threads)
    label = cfg.label or f"{ds.name}-tenants"
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = cfg.out_dir / f"results-{slugify(label)}.jsonl"
    jsonl.write_text("")
    sizes = wl.sizes
    common = {
        "run_id": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": ds.name,
        "metric": ds.metric,
        "n": len(ds.base),
        "d": int(ds.base.shape[1]),
        "k": K,
        "tenant_spec": wl.spec.describe(),
        "tenants": wl.spec.tenants,
        "locality": wl.spec.locality,
        "sampled_tenants": len(wl.sampled_tenants()),
        "n_queries": len(wl.queries),
        "bucket_names": wl.bucket_names(),
        "bucket_tenants": np.bincount(_buckets(wl, sizes), minlength=len(wl.spec.edges) + 1)
        .astype(int)
        .tolist(),
        "largest_tenant": int(sizes.max()),
        "grants": int(sum(len(g) for g in wl.grants)),
        "workload_s": round(workload_s, 2),
        "stop_recall": opts.stop_recall,
        **env,
    }
    deadline = None if cfg.time_limit_s is None else start + cfg.time_limit_s

    def one(name: str, budget: float | None, workdir: Path) -> list[dict[str, Any]]:
        return bench_tenant_system(name, ds, wl, cfg, opts, budget, workdir, log)

    rows = run_systems(cfg, common, jsonl, one, deadline, "vecdb-bench-tenants-", log)
    return RunResult(rows, jsonl, env, time.perf_counter() - start)


def bench_tenant_system(
    name: str,
    ds: Dataset,
    wl: TenantWorkload,
    cfg: RunConfig,
    opts: TenantOptions,
    budget_s: float | None,
    workdir: Path,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Build, warm up, sweep; one row per setting (vecdb-tenants: plus its ops columns)."""
    t_start = time.perf_counter()
    sys_cfg = cfg.systems_config.get(name, {})
    system = make_tenant_system(name, ds.metric, int(ds.base.shape[1]), sys_cfg.get("build", {}))
    system.name = name
    sweep = expand_sweep(sys_cfg.get("sweep", system.default_sweep))
    deadline = None if budget_s is None else t_start + budget_s
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        # Pass 1: build with all threads.
        c0, w0 = time.process_time(), time.perf_counter()
        system.build(ds.base, wl, cfg.threads, workdir)
        build = {"build_s": round(time.perf_counter() - w0, 3),
                 "build_cpu_s": round(time.process_time() - c0, 3)}  # fmt: skip
        log(f"{name}: built in {build['build_s']:.1f} s ({system.build_params})")
        # Pass 2: a warm-up pass (caches, lazily compiled kernels), then the sweep.
        system.set_params(sweep[0])
        run_pass(system, wl)
        for j, params in enumerate(sweep):
            if rows and deadline is not None and time.perf_counter() > deadline:
                log(f"{name}: time budget spent; skipped {len(sweep) - j} of {len(sweep)}")
                for row in rows:
                    row["sweep_truncated"] = len(sweep) - j
                break
            rows.append(measure_tenant_setting(system, ds, wl, params))
            r = rows[-1]
            log(f"{name} {params}: recall {r['uniform']['recall']:.4f} uniform, "
                f"p50 {r['uniform']['p50_ms']:.3f} ms")  # fmt: skip
            if min(b["recall"] for b in r["buckets"] if b["queries"]) >= opts.stop_recall:
                for row in rows:
                    row["sweep_stopped"] = len(sweep) - j - 1
                break
        # Pass 3: vecdb-tenants' update costs and memory (they change and reopen the data).
        if name == "vecdb-tenants" and (opts.ops or opts.memory):
            from vecdb.bench.tenants_ops import measure_ops
            from vecdb.bench.tenants_vecdb import VecdbTenants

            assert isinstance(system, VecdbTenants)
            system.close()
            extra = measure_ops(system, ds, wl, cfg, opts, workdir, log)
    finally:
        system.close()
    for row in rows:
        row.update(build)
        row["sampled_only"] = system.sampled_only
        row["system_seconds"] = round(time.perf_counter() - t_start, 1)
    if rows and extra:
        rows[-1]["ops"] = extra
    return rows


def run_pass(
    system: TenantSystem, wl: TenantWorkload, count_io: bool = False
) -> tuple[I64, F64, F64 | None]:
    """Every query once, one call each on one thread: found ids (nq, K), latency ms (nq,),
    and with `count_io`, (nq, 2) postings and bytes read when the system counts them: a
    tenant's queries are consecutive, so the counters are read around each tenant's run of
    queries and each query gets its tenant's mean. A counting pass is not the timed one: a
    stats call (vecdb: milliseconds of index bookkeeping over the whole collection) left
    the next query with cold caches, and only systems with counters paid that (it was the
    p99 of vecdb-tenants' small buckets: 0.34 ms against a p50 of 0.05)."""
    nq = len(wl.queries)
    found = np.full((nq, K), -1, dtype=np.int64)
    lat = np.zeros(nq, dtype=np.float64)
    io: F64 | None = np.zeros((nq, 2), dtype=np.float64) if count_io else None
    tenants = wl.query_tenant
    starts = np.flatnonzero(np.r_[True, tenants[1:] != tenants[:-1]])
    for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), nq], strict=True):
        t = int(tenants[lo])
        before = system.io_counters(t) if io is not None else None
        for i in range(lo, hi):
            t0 = time.perf_counter_ns()
            found[i] = system.search(wl.queries[i], t, K)
            lat[i] = (time.perf_counter_ns() - t0) / 1e6
        after = system.io_counters(t) if before is not None else None
        if io is not None and before is not None and after is not None:
            io[lo:hi] = ((after[0] - before[0]) / (hi - lo), (after[1] - before[1]) / (hi - lo))
        else:
            io = None
    return found, lat, io


def measure_tenant_setting(
    system: TenantSystem, ds: Dataset, wl: TenantWorkload, params: Params
) -> dict[str, Any]:
    """One setting: a timed pass, its recall and leaks, I/O per query, the summary."""
    load_before = load_average()
    system.set_params(params)
    found, lat, _ = run_pass(system, wl)  # timed, no counters read between queries
    io = run_pass(system, wl, count_io=True)[2]  # (untimed use: I/O per query only)
    recall, leaks = tenant_recall(ds, wl, found)
    row: dict[str, Any] = {
        "system": system.name,
        "is_ours": system.is_ours,
        "build_params": system.build_params,
        "params": params,
        "leaks": int(leaks.sum()),
        **summarize(wl, recall, lat, io),
        "load_avg_before": load_before,
    }
    if io is not None:
        row["posting_reads_per_query"] = round(float(io[:, 0].mean()), 3)
        row["bytes_read_per_query"] = round(float(io[:, 1].mean()), 1)
    return row


def tenant_recall(ds: Dataset, wl: TenantWorkload, found: I64) -> tuple[F64, I64]:
    """Per query: tie-aware recall@K among the tenant's own vectors (hits / min(K, size)) and
    how many returned ids lie outside the tenant."""
    nq = len(found)
    valid = (found >= 0) & (found < len(ds.base))
    member = np.zeros_like(valid)
    for i, t in enumerate(wl.query_tenant.tolist()):
        rows = wl.members[t]
        pos = np.searchsorted(rows, found[i]).clip(0, max(0, len(rows) - 1))
        member[i] = valid[i] & (rows[pos] == found[i]) if len(rows) else False
    sizes = wl.sizes[wl.query_tenant]
    kk = np.minimum(K, sizes)
    kth_ids = wl.gt_ids[np.arange(nq), kk - 1][:, None]
    kth = metrics.true_distances(ds.base, wl.queries, kth_ids, ds.metric)[:, 0]
    qn2 = np.sum(wl.queries.astype(np.float64) ** 2, axis=1)
    tol = metrics.RTOL * (np.abs(kth) + 1e-2 * qn2) + 1e-12
    dist = metrics.true_distances(ds.base, wl.queries, found, ds.metric)
    hit = member & (dist <= (kth + tol)[:, None])
    order = np.sort(np.where(hit, found, -1), axis=1)
    distinct = ((order[:, 1:] != order[:, :-1]) & (order[:, 1:] >= 0)).sum(axis=1)
    counts = distinct + (order[:, 0] >= 0)
    return counts / kk, (valid & ~member).sum(axis=1).astype(np.int64)


def _buckets(wl: TenantWorkload, sizes: I64) -> I64:
    return np.searchsorted(np.asarray(wl.spec.edges), sizes, side="left").astype(np.int64)


def query_weights(wl: TenantWorkload) -> tuple[F64, F64]:
    """Per query: its weight in the tenant-uniform and in the size-weighted average. A
    sampled tenant stands for (tenants of its bucket / sampled ones of it), split over its
    queries; the size-weighted weight is that times the tenant's size."""
    sizes = wl.sizes
    all_b = _buckets(wl, sizes)
    sampled = wl.sampled_tenants()
    per_bucket = np.bincount(all_b, minlength=len(wl.spec.edges) + 1)
    sampled_per_bucket = np.bincount(all_b[sampled], minlength=len(per_bucket))
    q_per_tenant = np.bincount(wl.query_tenant, minlength=len(sizes))
    t = wl.query_tenant
    b = all_b[t]
    uniform = per_bucket[b] / np.maximum(1, sampled_per_bucket[b]) / q_per_tenant[t]
    return uniform.astype(np.float64), (uniform * sizes[t]).astype(np.float64)


def weighted_quantile(x: F64, w: F64, qs: Sequence[float]) -> list[float]:
    """Quantiles of x where sample i counts w[i] times (the lower value at a step)."""
    if len(x) == 0:
        return [float("nan")] * len(qs)
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    cw /= cw[-1]
    return [float(x[order][min(len(x) - 1, int(np.searchsorted(cw, q)))]) for q in qs]


def summarize(wl: TenantWorkload, recall: F64, lat: F64, io: F64 | None = None) -> dict[str, Any]:
    """Per bucket (recall, p50, p99, mean latency; with `io` postings read per query: the
    mean, the largest tenant mean, and bytes) and the two weighted averages."""
    b = _buckets(wl, wl.sizes)[wl.query_tenant]
    counts = np.bincount(_buckets(wl, wl.sizes), minlength=len(wl.spec.edges) + 1)
    buckets = []
    for i, name in enumerate(wl.bucket_names()):
        sel = b == i
        entry: dict[str, Any] = {"bucket": name, "tenants": int(counts[i]),
                                 "sampled": int(len(np.unique(wl.query_tenant[sel]))),
                                 "queries": int(sel.sum())}  # fmt: skip
        if sel.any():
            p50, p99 = np.percentile(lat[sel], [50.0, 99.0])
            entry.update(recall=round(float(recall[sel].mean()), 5),
                         min_recall=round(float(recall[sel].min()), 5),
                         p50_ms=round(float(p50), 4), p99_ms=round(float(p99), 4),
                         mean_ms=round(float(lat[sel].mean()), 4))  # fmt: skip
            if io is not None:
                entry.update(postings=round(float(io[sel, 0].mean()), 3),
                             max_tenant_postings=round(float(io[sel, 0].max()), 3),
                             bytes=round(float(io[sel, 1].mean()), 1))  # fmt: skip
        buckets.append(entry)
    w_uniform, w_size = query_weights(wl)
    out: dict[str, Any] = {"buckets": buckets}
    for key, w in (("uniform", w_uniform), ("size_weighted", w_size)):
        p50, p99 = weighted_quantile(lat, w, (0.5, 0.99))
        out[key] = {"recall": round(float(np.average(recall, weights=w)), 5),
                    "mean_ms": round(float(np.average(lat, weights=w)), 4),
                    "p50_ms": round(p50, 4), "p99_ms": round(p99, 4)}  # fmt: skip
    return out
