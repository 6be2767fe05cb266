"""Turns a tenant run's JSONL rows into its RESULTS.md section, a summary JSON and a plot.

Owns the presentation of `vecdb bench --tenants`: at equal recall (0.90 and 0.95), per size
bucket and system, the setting with the lowest p50 latency whose recall@10 in that bucket
reaches the target (no interpolation), with vecdb-tenants' p50 over the system's; the
tenant-uniform and size-weighted averages of each system's fastest setting reaching the
target in every bucket; every setting; vecdb-tenants' memory, grant / revoke and drop_tenant
numbers; one PNG with a recall-vs-p50 panel per bucket. The section goes between the markers
of `vecdb.bench.report`, so a rerun replaces only it. Must not measure anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vecdb.bench.cells import Row, by_system
from vecdb.bench.datasets import slugify
from vecdb.bench.report import (
    fmt,
    fmt_params,
    provenance_lines,
    relative_path,
    replace_section,
    run_notes,
)

TARGETS = (0.90, 0.95)
OURS = "vecdb-tenants"


def _bucket(row: Row, i: int) -> dict[str, Any]:
    b: dict[str, Any] = row["buckets"][i]
    return b


def best_in_bucket(rs: Sequence[Row], i: int, target: float) -> Row | None:
    """The setting with the lowest p50 in bucket i among those with recall >= target there."""
    ok = [r for r in rs if _bucket(r, i).get("recall", -1.0) >= target]
    return min(ok, key=lambda r: _bucket(r, i)["p50_ms"]) if ok else None


def best_everywhere(rs: Sequence[Row], target: float) -> Row | None:
    """The setting with the lowest uniform mean latency reaching target in every bucket."""
    ok = [r for r in rs
          if all(b.get("recall", 1.0) >= target for b in r["buckets"] if b["queries"])]  # fmt: skip
    return min(ok, key=lambda r: r["uniform"]["mean_ms"]) if ok else None


def bucket_table(rows: Sequence[Row], target: float) -> list[str]:
    """Markdown lines: per bucket and system, p50/p99 of the fastest setting at >= target."""
    systems = by_system(rows)
    if not systems:
        return ["(no results)"]
    first = next(iter(systems.values()))[0]
    lines = [f"| bucket | tenants (sampled) | system | recall@10 | p50 ms | p99 ms | setting "
             f"| {OURS} p50 / this | postings / query (largest tenant mean) |", "|---" * 9 + "|"]  # fmt: skip
    for i, b in enumerate(first["buckets"]):
        if not b["queries"]:
            lines.append(
                f"| {b['bucket']} | {b['tenants']} (0) | (no tenants) | - | - | - | - | - |"
            )
            continue
        ours = best_in_bucket(systems.get(OURS, []), i, target)
        for name, rs in systems.items():
            hit = best_in_bucket(rs, i, target)
            cells = [b["bucket"], f"{b['tenants']} ({b['sampled']})", name]
            if hit is None:
                top = max(_bucket(r, i).get("recall", 0.0) for r in rs)
                cells += [f"never (best {top:.4f})", "-", "-", "-", "-", "-"]
            else:
                hb = _bucket(hit, i)
                ratio = "-"
                if ours is not None and hb["p50_ms"]:
                    ratio = f"{_bucket(ours, i)['p50_ms'] / hb['p50_ms']:.3g}x"
                io = (
                    "-"
                    if hb.get("postings") is None
                    else f"{hb['postings']:.2f} ({hb['max_tenant_postings']:.2f})"
                )
                cells += [f"{hb['recall']:.4f}", fmt(hb["p50_ms"], 3), fmt(hb["p99_ms"], 3),
                          fmt_params(hit["params"]), ratio, io]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def average_table(rows: Sequence[Row], target: float) -> list[str]:
    """Markdown lines: per system, the averages of its fastest setting at >= target in
    every bucket."""
    cols = ["system", "setting", "uniform recall", "uniform p50 / p99 / mean ms",
            "size-weighted recall", "size-weighted p50 / p99 / mean ms", "postings / query",
            "KiB read / query", "leaks"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for name, rs in by_system(rows).items():
        hit = best_everywhere(rs, target)
        if hit is None:
            lines.append(f"| {name} | never in every bucket | - | - | - | - | - | - | - |")
            continue
        u, s = hit["uniform"], hit["size_weighted"]
        kib = hit.get("bytes_read_per_query")
        cells = [name, fmt_params(hit["params"]), f"{u['recall']:.4f}",
                 f"{u['p50_ms']:.3f} / {u['p99_ms']:.3f} / {u['mean_ms']:.3f}",
                 f"{s['recall']:.4f}", f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f} / {s['mean_ms']:.3f}",
                 fmt(hit.get("posting_reads_per_query"), 2),
                 "-" if kib is None else fmt(kib / 1024, 1), str(hit["leaks"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def settings_table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: every measured setting, recall / p50 per bucket."""
    systems = by_system(rows)
    if not systems:
        return []
    names = [b["bucket"] for b in next(iter(systems.values()))[0]["buckets"]]
    cols = ["system", "params", *[f"{n}: recall / p50 ms" for n in names], "uniform recall",
            "size-weighted recall", "postings / query", "leaks", "build s"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for name, rs in systems.items():
        for r in rs:
            cells = [name, fmt_params(r["params"])]
            for b in r["buckets"]:
                cells.append(f"{b['recall']:.4f} / {b['p50_ms']:.3f}" if b["queries"] else "-")
            cells += [f"{r['uniform']['recall']:.4f}", f"{r['size_weighted']['recall']:.4f}",
                      fmt(r.get("posting_reads_per_query"), 2), str(r["leaks"]),
                      fmt(r.get("build_s"), 1)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def ops_lines(rows: Sequence[Row]) -> list[str]:
    """Markdown lines of vecdb-tenants' memory, grant / revoke and drop numbers."""
    ops = next((r["ops"] for r in rows if r.get("ops")), None)
    if ops is None:
        return ["(not measured)"]
    out: list[str] = []
    mem = ops.get("memory")
    if mem:
        w, s = mem["with_tenants"], mem["shared_no_tenants"]
        out += [
            "| index | RssAnon growth MiB (open + probe queries) | after open only | RssFile MiB |",
            "|---|---|---|---|",
            f"| {OURS} | {w['rss_anon_mib']} | {w['rss_anon_open_mib']} | {w['rss_file_mib']} |",
            f"| one shared SPANN, no tenants | {s['rss_anon_mib']} | {s['rss_anon_open_mib']} "
            f"| {s['rss_file_mib']} |",
            "",
            f"- with tenants / without: **{mem.get('ratio', '-')}x**.",
        ]
        if "tiny_tenants" in mem:
            out.append(
                f"- marginal memory per tiny tenant ({mem['tiny_tenants']:,} more tenants, one "
                f"granted vector each): {fmt(mem.get('marginal_bytes_per_tiny_idle'))} bytes "
                f"idle, {fmt(mem.get('marginal_bytes_per_tiny_active'))} bytes after one query "
                "each (RssAnon of fresh processes; the resolution is one 4 KiB page over all of "
                "them)."
            )
    elif ops.get("memory_error"):
        out.append(f"- memory: failed: {ops['memory_error']}")
    if "grant_single_ms" in ops:
        g, v = ops["grant_single_ms"], ops["revoke_single_ms"]
        out += [
            f"- grant of one id: p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms ({g['n']} calls); "
            f"revoke of one id: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms.",
            f"- one call granting {ops['batch_ids']:,} ids to one tenant: "
            f"{ops['grant_batch_ms']} ms; revoking them: {ops['revoke_batch_ms']} ms.",
        ]
    elif ops.get("grant_error"):
        out.append(f"- grant / revoke: failed: {ops['grant_error']}")
    d = ops.get("drop")
    if d:
        fb, fd = d.get("foreground_before") or {}, d.get("foreground_during") or {}
        out.append(
            f"- drop_tenant of a tenant of {d['tenant_vectors']:,} vectors ({d['owned']:,} "
            f"owned): the call {d['call_ms']} ms, cleanup done after {d['cleanup_s']} s "
            f"(state {d['final_state']}); foreground search of another tenant p50 / p99 / "
            f"max before {fb.get('p50_ms')} / {fb.get('p99_ms')} / {fb.get('max_ms')} ms, "
            f"during {fd.get('p50_ms')} / {fd.get('p99_ms')} / {fd.get('max_ms')} ms "
            f"({fd.get('n', 0)} searches)."
        )
    elif ops.get("drop_error"):
        out.append(f"- drop_tenant: failed: {ops['drop_error']}")
    return out


def plot(rows: Sequence[Row], title: str, path: Path) -> None:
    """One panel per bucket: recall@10 vs p50 latency (log), each system's frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = by_system(rows)
    first = next(iter(systems.values()))[0] if systems else {"buckets": []}
    shown = [i for i, b in enumerate(first["buckets"]) if b["queries"]]
    cols = min(max(1, len(shown)), 2)
    nrows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4.2 * nrows), dpi=100, squeeze=False)
    for ax, i in zip(axes.flat, shown, strict=False):
        for j, (name, rs) in enumerate(systems.items()):
            pts = sorted((_bucket(r, i)["recall"], _bucket(r, i)["p50_ms"]) for r in rs)
            front = [p for p in pts if not any(o[0] >= p[0] and o[1] < p[1] for o in pts)]
            ours = bool(rs[0].get("is_ours"))
            ax.plot([p[0] for p in front], [p[1] for p in front], marker="os^vD<>*"[j % 8],
                    linewidth=2.5 if name == OURS else 1.2,
                    label=name + (" (ours)" if ours else ""))  # fmt: skip
        for t in TARGETS:
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
        b = first["buckets"][i]
        ax.set_yscale("log")
        ax.set_title(f"tenants of {b['bucket']} vectors ({b['tenants']}, {b['sampled']} sampled)")
        ax.set_xlabel("recall@10 within the tenant (tie-aware)")
        ax.set_ylabel("p50 latency, ms (1 thread, one query per call)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary(rows: Sequence[Row]) -> dict[str, Any]:
    """The tables' numbers as JSON: per target, per system, per bucket the chosen setting."""
    out: dict[str, Any] = {}
    for target in TARGETS:
        per: dict[str, Any] = {}
        for name, rs in by_system(rows).items():
            buckets = []
            for i, b in enumerate(rs[0]["buckets"]):
                hit = best_in_bucket(rs, i, target) if b["queries"] else None
                buckets.append({"bucket": b["bucket"], **({} if hit is None else {
                    "params": hit["params"], **_bucket(hit, i)})})  # fmt: skip
            every = best_everywhere(rs, target)
            per[name] = {"buckets": buckets, "every_bucket": None if every is None else {
                k: every.get(k) for k in ("params", "uniform", "size_weighted",
                                          "posting_reads_per_query", "bytes_read_per_query")}}  # fmt: skip
        out[f"{target:.2f}"] = per
    out["ops"] = next((r["ops"] for r in rows if r.get("ops")), None)
    return out


def section_text(rows: Sequence[Row], header: Mapping[str, Any], plot_path: Path,
                 md_dir: Path) -> str:  # fmt: skip
    """The markdown of one tenant run's section."""
    first = next((r for r in rows if "error" not in r), rows[0] if rows else {})
    sampled = sorted({r["system"] for r in rows if r.get("sampled_only")})
    bt = dict(zip(first.get("bucket_names", []), first.get("bucket_tenants", []), strict=False))
    out = [
        f"## {header['label']}",
        "",
        *provenance_lines(first, header),
        f"- Data: {header['dataset']}, {first.get('n', 0):,} base x {first.get('d', '?')} dims, "
        f"metric {first.get('metric', '?')}, k=10. Tenants: {first.get('tenant_spec', '?')}; "
        f"largest tenant {first.get('largest_tenant', 0):,} vectors, {first.get('grants', 0):,} "
        f"extra grants; tenants per bucket {bt}. Workload built in "
        f"{first.get('workload_s', '?')} s.",
        f"- Queries: {first.get('n_queries', 0):,} held-out vectors near the data of "
        f"{first.get('sampled_tenants', 0)} sampled tenants (up to a fixed number per bucket), "
        "one query per call on one thread, timed alone after a warm-up pass; recall@10 "
        "against the exact top-10 over exactly the tenant's vectors (owned + granted), "
        "tie-aware; an id outside the tenant never counts (column leaks). Averages: "
        "tenant-uniform (each sampled tenant stands for its bucket's tenants) and "
        "size-weighted (times the tenant's size).",
        "- Systems built for the sampled tenants only: "
        + (", ".join(sampled) if sampled else "none")
        + ". Each sweep stops after the first "
        f"setting reaching recall {first.get('stop_recall', '?')} in every bucket.",
        "",
    ]
    for target in TARGETS:
        out += [f"### Per size bucket at recall@10 >= {target:.2f} (lowest p50 reaching it)",
                "", *bucket_table(rows, target), ""]  # fmt: skip
    for target in TARGETS:
        out += [f"### Averages at recall@10 >= {target:.2f} in every bucket", "",
                *average_table(rows, target), ""]  # fmt: skip
    out += [f"### {OURS}: memory, grants, revokes, drop_tenant", "", *ops_lines(rows), ""]
    out += ["### Every setting", "", *settings_table(rows)]
    out += run_notes(
        rows,
        Path(relative_path(plot_path, md_dir)).as_posix(),
        "recall@10 vs p50 latency per tenant-size bucket",
    )
    return "\n".join(out) + "\n"


def write_tenant_report(
    rows: Sequence[Row], results_md: Path, out_dir: Path, header: Mapping[str, Any]
) -> list[Path]:
    """Write the plot, the summary JSON and this run's RESULTS.md section."""
    slug = slugify(str(header["label"]))
    path = out_dir / "plots" / f"{slug}-latency.png"
    plot(rows, f"{header['dataset']}: recall@10 vs p50 latency per tenant size", path)
    summary_path = out_dir / f"summary-{slug}.json"
    summary_path.write_text(json.dumps(summary(rows), indent=1))
    body = section_text(rows, header, path, results_md.parent)
    results_md.parent.mkdir(parents=True, exist_ok=True)
    old = results_md.read_text() if results_md.is_file() else ""
    results_md.write_text(replace_section(old, slug, body))
    return [path, summary_path, results_md]
