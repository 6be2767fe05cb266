"""vecdb-tenants' update costs and memory in the multi-tenant benchmark.

Owns what the tenant run measures on vecdb besides search, after the sweep and on the same
database (closed by the caller first):

1. Memory: RssAnon growth of a fresh process that opens the database and answers the
   sampled queries (`vecdb.bench.tenants_memory`), against a fresh process doing the same on
   one ordinary SPANN collection of the same vectors without tenants (built here, in its own
   directory). Then `tiny` more tenants, each granted one existing vector, are added and the
   fresh process runs again: the growth over the first, per tiny tenant, is their marginal
   memory, idle (the same queries) and active (one more query for each tiny tenant).
2. Grants and revokes: `grant(ids=[one id], tenant)` of `single_ops` (row, tenant) pairs the
   tenant could not see yet, one call each, then `revoke` of the same pairs: p50/p99 ms; and
   one call granting (then revoking) `batch_ids` ids to one tenant.
3. drop_tenant of the largest tenant of the "<= 10k" bucket (or the largest one) while a
   foreground thread searches another tenant in a loop: the drop call's wall time, the
   cleanup's (until `get_tenant` no longer reports the tenant as dropping), and the
   foreground's latency before and during the drop (p50 / p99 / max).

Must not format results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import Dataset
from vecdb.bench.engine_features import optimize_and_wait
from vecdb.bench.memory import run_json_child
from vecdb.bench.run import RunConfig
from vecdb.bench.tenants import K, TenantWorkload, tenant_name
from vecdb.bench.tenants_vecdb import COLLECTION, DATA_DIR, VecdbTenants, chunks, connect
from vecdb.bench.vecdb_system import upsert_batch_rows

DEFAULTS = {"single_ops": 200, "batch_ids": 1000, "tiny": 1000, "drop_timeout_s": 300.0}
FOREGROUND_BASELINE_S = 1.0  # foreground searches timed before the drop starts

I64 = npt.NDArray[np.int64]


def measure_ops(
    system: VecdbTenants,
    ds: Dataset,
    wl: TenantWorkload,
    cfg: RunConfig,
    opts: Any,
    workdir: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every number above, as one dict (errors of a part are kept in the dict, not raised)."""
    o = {**DEFAULTS, **opts.extra}
    out: dict[str, Any] = {}
    probe = workdir / "probe.npz"
    np.savez(probe, queries=wl.queries, tenants=wl.query_tenant)
    data = workdir / DATA_DIR
    params = system.params
    if opts.memory:
        try:
            out["memory"] = _memory(system, ds, wl, cfg, data, probe, params, int(o["tiny"]), log)
        except Exception as exc:  # one column group; keep the rest
            out["memory_error"] = f"{type(exc).__name__}: {exc}"
    if opts.ops:
        with connect(str(data)) as client:
            try:
                out.update(_grants(client, wl, int(o["single_ops"]), int(o["batch_ids"])))
            except Exception as exc:
                out["grant_error"] = f"{type(exc).__name__}: {exc}"
            try:
                out["drop"] = _drop(client, wl, params, float(o["drop_timeout_s"]))
            except Exception as exc:
                out["drop_error"] = f"{type(exc).__name__}: {exc}"
        log(f"vecdb-tenants ops: {out.get('grant_single_ms')} grant ms, drop {out.get('drop')}")
    return out


def _child(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    import json

    return run_json_child(["vecdb.bench.tenants_memory", json.dumps(spec)], threads, 900.0,
                          "tenant memory subprocess")  # fmt: skip


def _memory(
    system: VecdbTenants,
    ds: Dataset,
    wl: TenantWorkload,
    cfg: RunConfig,
    data: Path,
    probe: Path,
    params: dict[str, Any],
    tiny: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    spec = {"data_dir": str(data), "collection": COLLECTION, "probe": str(probe),
            "params": params, "dim": int(ds.base.shape[1]), "metric": ds.metric, "k": K,
            "tenants": True}  # fmt: skip
    with_tenants = _child(spec, cfg.threads)
    # The same vectors in one ordinary SPANN collection, no tenants.
    shared_dir = data.parent / "shared-data"
    with connect(str(shared_dir)) as client:
        client.create_collection(COLLECTION, dim=system.dim, metric=system.metric,
                                 index=system.build_params["index"],
                                 index_params=system.build_params["index_params"])  # fmt: skip
        step = upsert_batch_rows(system.dim)
        for ids in chunks(np.arange(len(ds.base), dtype=np.int64), step):
            client.upsert(COLLECTION, ids=ids, vectors=ds.base[ids])
        optimize_and_wait(client, COLLECTION)
    plain = {k: v for k, v in params.items() if not k.startswith("tenant_")}  # tenant walk's
    shared = _child({**spec, "data_dir": str(shared_dir), "tenants": False, "params": plain},
                    cfg.threads)  # fmt: skip
    out: dict[str, Any] = {"with_tenants": with_tenants, "shared_no_tenants": shared}
    if shared.get("rss_anon_mib"):
        out["ratio"] = round(with_tenants["rss_anon_mib"] / shared["rss_anon_mib"], 3)
    # Marginal memory of tiny tenants: `tiny` more, each granted one existing vector.
    if tiny > 0:
        rng = np.random.default_rng([wl.spec.seed, 7])
        rows = rng.choice(wl.n, size=tiny, replace=tiny > wl.n)
        with connect(str(data)) as client:
            for i, r in enumerate(rows.tolist()):
                name = f"tiny{i:06d}"
                client.create_tenant(COLLECTION, name)
                client.grant(COLLECTION, [r], tenant=name)
            optimize_and_wait(client, COLLECTION)
        more = _child({**spec, "tiny": tiny, "tiny_rows": rows.tolist()}, cfg.threads)
        out["with_tiny"] = more
        per = 1024 * 1024 / tiny
        out["tiny_tenants"] = tiny
        out["marginal_bytes_per_tiny_idle"] = round(
            (more["rss_anon_mib"] - with_tenants["rss_anon_mib"]) * per, 1
        )
        if more.get("rss_anon_active_mib") is not None:
            out["marginal_bytes_per_tiny_active"] = round(
                (more["rss_anon_active_mib"] - with_tenants["rss_anon_mib"]) * per, 1
            )
    log(f"vecdb-tenants memory: {out}")
    return out


def _pairs(wl: TenantWorkload, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n (row, tenant) pairs where the tenant cannot see the row, distinct."""
    out: set[tuple[int, int]] = set()
    while len(out) < n:
        r, t = int(rng.integers(wl.n)), int(rng.integers(wl.spec.tenants))
        rows = wl.members[t]
        i = int(np.searchsorted(rows, r))
        if i >= len(rows) or rows[i] != r:
            out.add((r, t))
    return sorted(out)


def _ms_stats(xs: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.asarray(xs), [50.0, 99.0])
    return {"n": len(xs), "p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4),
            "max_ms": round(max(xs), 4)}  # fmt: skip


def _grants(client: Any, wl: TenantWorkload, single: int, batch: int) -> dict[str, Any]:
    rng = np.random.default_rng([wl.spec.seed, 11])
    pairs = _pairs(wl, single, rng)
    timings: dict[str, list[float]] = {"grant": [], "revoke": []}
    for op in ("grant", "revoke"):
        call = getattr(client, op)
        for r, t in pairs:
            t0 = time.perf_counter_ns()
            call(COLLECTION, [r], tenant=tenant_name(t))
            timings[op].append((time.perf_counter_ns() - t0) / 1e6)
    out: dict[str, Any] = {"grant_single_ms": _ms_stats(timings["grant"]),
                           "revoke_single_ms": _ms_stats(timings["revoke"])}  # fmt: skip
    small = int(np.argmin(wl.sizes))
    rows = np.setdiff1d(rng.choice(wl.n, size=min(batch, wl.n), replace=False), wl.members[small])
    for op in ("grant", "revoke"):
        start = time.perf_counter()
        getattr(client, op)(COLLECTION, rows, tenant=tenant_name(small))
        out[f"{op}_batch_ms"] = round((time.perf_counter() - start) * 1e3, 3)
    out["batch_ids"] = len(rows)
    return out


def _drop(
    client: Any, wl: TenantWorkload, params: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Drop one mid-sized tenant while another is searched in a loop."""
    from vecdb.errors import NotFound

    sizes = wl.sizes
    edges = wl.spec.edges
    mid = np.flatnonzero(sizes <= edges[-1])
    victim = int(mid[np.argmax(sizes[mid])]) if len(mid) else int(np.argmax(sizes))
    sampled = [t for t in wl.sampled_tenants().tolist() if t != victim]
    fg = sampled[len(sampled) // 2]
    qs = wl.queries[wl.query_tenant == fg]
    lat: list[tuple[float, float]] = []  # (start time, ms)
    stop = threading.Event()

    def foreground() -> None:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            client.search(COLLECTION, qs[i % len(qs)][None, :], k=K, tenant=tenant_name(fg),
                          params=params or None)  # fmt: skip
            lat.append((t0, (time.perf_counter() - t0) * 1e3))
            i += 1

    thread = threading.Thread(target=foreground, daemon=True)
    thread.start()
    time.sleep(FOREGROUND_BASELINE_S)
    t_drop = time.perf_counter()
    client.drop_tenant(COLLECTION, tenant_name(victim))
    call_s = time.perf_counter() - t_drop
    state = "dropping"
    while time.perf_counter() - t_drop < timeout_s:
        try:
            state = client.get_tenant(COLLECTION, tenant_name(victim)).state
        except NotFound:
            state = "gone"
        if state != "dropping":
            break
        time.sleep(0.02)
    cleanup_s = time.perf_counter() - t_drop
    stop.set()
    thread.join()
    before = [ms for t0, ms in lat if t0 < t_drop]
    during = [ms for t0, ms in lat if t0 >= t_drop]
    return {
        "tenant_vectors": int(sizes[victim]),
        "owned": int((wl.owner == victim).sum()),
        "call_ms": round(call_s * 1e3, 3),
        "cleanup_s": round(cleanup_s, 3),
        "final_state": state,
        "foreground_before": _ms_stats(before) if before else None,
        "foreground_during": _ms_stats(during) if during else None,
    }
