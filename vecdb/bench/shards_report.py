"""The RESULTS.md section of `vecdb bench --shards`: router vs one node, side by side.

Owns the markdown only: one table row per (shard count, workload) with both targets' medians,
the router's difference and ratio, the fan-out overhead per shard (the slope of the no-op
fan-out's extra p50 over the shard counts), the tenant-scoped search three ways (one node,
router, client-side routing straight to the tenant's shard) and the issue 14 targets checked
against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vecdb.bench.report import fmt
from vecdb.bench.shards_run import (
    DIRECT,
    NODE,
    NOOP,
    ROUTER,
    SEARCH,
    SEARCH_EQ,
    TENANT,
    TENANT_ONE,
    TENANTS,
)

LABELS = {
    SEARCH: "ANN search",
    SEARCH_EQ: "ANN search, shards at the node's recall",
    NOOP: "no-op fan-out (Count, empty)",
    TENANT: "tenant-scoped search",
    TENANT_ONE: "tenant-scoped search, shard 0's tenants only",
}
FANOUT_TARGET_MS = 3.0  # issue 14: 3-shard fan-out adds <= 3 ms p50 on loopback
TENANT_TARGET_RATIO = 1.2  # "the same as one node", within this machine's noise


def _pair(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[int, str], dict[str, Mapping[str, Any]]]:
    out: dict[tuple[int, str], dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault((int(r["shards"]), str(r["workload"])), {})[str(r["target"])] = r
    return out


def _ms(r: Mapping[str, Any]) -> str:
    return f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"


def table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = [
        "| shards | workload | one node p50 / p99 ms | router p50 / p99 ms | router - node p50 ms"
        " | router / node p50 | batch QPS node / router | recall@10 node / router | shards touched |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (n, wl), p in sorted(_pair(rows).items()):
        if NODE not in p or ROUTER not in p:
            continue
        a, b = p[NODE], p[ROUTER]
        qps = f"{fmt(a['qps'])} / {fmt(b['qps'])}" if "qps" in a else ""
        rec = f"{a['recall']:.4f} / {b['recall']:.4f}" if "recall" in a else ""
        touched = b.get("shards_touched")
        label = LABELS.get(wl, wl)
        if "shard_max_postings" in b:
            label += f" (max_postings {b['shard_max_postings']})"
        out.append(
            f"| {n} | {label} | {_ms(a)} | {_ms(b)} | {b['p50_ms'] - a['p50_ms']:+.2f} "
            f"| {b['p50_ms'] / a['p50_ms']:.2f} | {qps} | {rec} | {'' if touched is None else touched} |"
        )
    return out


def direct_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Tenant-scoped search: one node, through the router, and straight to the tenant's shard
    (client-side routing), with how many of the direct client's calls went direct."""
    out = [
        "| shards | workload | one node p50 / p99 ms | router p50 / p99 ms | direct p50 / p99 ms "
        "| router / node p50 | direct / node p50 | direct client: calls direct / routes asked "
        "/ stale / unreachable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (n, wl), p in sorted(_pair(rows).items()):
        if wl not in TENANTS or not all(t in p for t in (NODE, ROUTER, DIRECT)):
            continue
        a, b, c = p[NODE], p[ROUTER], p[DIRECT]
        r = c.get("routes") or {}
        calls = " / ".join(
            str(r.get(k, "?")) for k in ("direct", "lookups", "stale", "unreachable")
        )
        out.append(
            f"| {n} | {LABELS[wl]} | {_ms(a)} | {_ms(b)} | {_ms(c)} | {b['p50_ms'] / a['p50_ms']:.2f} "
            f"| {c['p50_ms'] / a['p50_ms']:.2f} | {calls} |"
        )
    return out if len(out) > 2 else []


def fanout_per_shard(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Least-squares slope (ms per shard) of the no-op fan-out's extra p50 over shard counts."""
    pts = [(n, p[ROUTER]["p50_ms"] - p[NODE]["p50_ms"])
           for (n, wl), p in _pair(rows).items() if wl == NOOP and NODE in p and ROUTER in p]  # fmt: skip
    if len(pts) < 2:
        return None
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(v for _, v in pts) / len(pts)
    den = sum((n - mx) ** 2 for n, _ in pts)
    return sum((n - mx) * (v - my) for n, v in pts) / den if den else None


def _extra(p: Mapping[str, Mapping[str, Any]]) -> float | None:
    """Router p50 minus node p50 of one (count, workload) pair, None if a side is missing."""
    return p[ROUTER]["p50_ms"] - p[NODE]["p50_ms"] if NODE in p and ROUTER in p else None


def targets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The issue 14 targets, met or not, from the largest shard count measured."""
    pairs = _pair(rows)
    out = []
    top = max((n for n, _ in pairs), default=0)
    for wl in (NOOP, SEARCH, SEARCH_EQ):
        p = pairs.get((top, wl), {})
        if NODE in p and ROUTER in p:
            extra = p[ROUTER]["p50_ms"] - p[NODE]["p50_ms"]
            ok = "met" if extra <= FANOUT_TARGET_MS else "NOT met"
            out.append(f"- {top}-shard fan-out, {LABELS[wl]}: router adds {extra:+.2f} ms p50 "
                       f"(target <= {FANOUT_TARGET_MS:g} ms: {ok}).")  # fmt: skip
    hop = _extra(pairs.get((min((n for n, _ in pairs), default=0), NOOP), {}))
    for n in sorted({n for n, wl in pairs if wl == TENANT}):
        p = pairs[(n, TENANT)]
        if NODE in p and ROUTER in p:
            ratio = p[ROUTER]["p50_ms"] / p[NODE]["p50_ms"]
            ok = "met" if ratio <= TENANT_TARGET_RATIO else "NOT met"
            line = (f"- tenant-routed queries, {n} shard(s): router / node p50 = {ratio:.2f} "
                    f"(target: the same as one node, read as <= {TENANT_TARGET_RATIO:g}: {ok})")  # fmt: skip
            if hop is not None:
                line += (f"; of its {_extra(p):+.2f} ms, the router hop alone (no-op, fewest "
                         f"shards) is {hop:+.2f} ms")  # fmt: skip
            out.append(line + ".")
        for wl in TENANTS:
            q = pairs.get((n, wl), {})
            if DIRECT in q and NODE in q:
                ratio = q[DIRECT]["p50_ms"] / q[NODE]["p50_ms"]
                ok = "met" if ratio <= TENANT_TARGET_RATIO else "NOT met"
                which = "" if wl == TENANT else ", shard 0's tenants only"
                out.append(f"- tenant-routed queries with client-side routing (`direct_routing="
                           f"True`), {n} shard(s){which}: direct / node p50 = {ratio:.2f} ({ok}; "
                           f"{q[DIRECT]['p50_ms'] - q[NODE]['p50_ms']:+.2f} ms).")  # fmt: skip
    slope = fanout_per_shard(rows)
    if slope is not None:
        out.append(
            f"- Fan-out overhead per extra shard (slope of the no-op's extra p50): {slope:+.2f} ms."
        )
    return out


def section_text(label: str, rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    first = rows[0] if rows else {}
    sha = str(first.get("git_sha") or "unknown") + (
        " (with uncommitted changes)" if first.get("git_dirty") else ""
    )
    out = [
        f"## {label}",
        "",
        f"Command: `{header['command']}`",
        "",
        f"- Run {first.get('run_id', '?')}, git {sha}, {header['seconds']:.0f} s in total; "
        f"{first.get('cpu_model', '?')} x {first.get('cpu_count', '?')} CPUs, shared with other "
        f"work: load average at start {header.get('load_start')}, at end {header.get('load_end')}.",
        f"- Data: the first {first.get('n', 0):,} base vectors of {first.get('dataset', '?')} "
        f"({first.get('d', '?')} dims, {first.get('metric', '?')}), {first.get('n_queries', '?')} "
        f"queries, k={first.get('k', '?')}; exact ground truth on that subset. Index "
        f"{first.get('index')} {first.get('index_params') or '(defaults)'} on the node and on every "
        f"shard; search params {first.get('search_params') or '(defaults)'}.",
        "- Processes on loopback: one `vecdb serve` (the node) and, per shard count, an etcd, N "
        "`vecdb serve --role shard` and one `vecdb serve --role router`, each server with "
        f"{first.get('threads', '?')} thread(s); the client is the remote SDK in the bench process.",
        f"- Each cell is the median of {first.get('rounds', '?')} rounds; within a round the node "
        "and the router alternate (same load). Latency: one call per query, wall, first "
        f"{first.get('latency_queries', '?')} queries. QPS: batches of {first.get('batch', '?')} "
        "queries, wall. Tenant-scoped: "
        f"{first.get('tenants', 0)} tenants of {first.get('tenant_vectors', 0):,} vectors, query i "
        "scoped to tenant i mod T; shards touched = the router's `shards` search stat.",
        "",
        *table(rows),
        "",
        *([*direct, ""] if (direct := direct_table(rows)) else []),
        "Targets (issue 14):",
        "",
        *targets(rows),
    ]
    return "\n".join(out) + "\n"
