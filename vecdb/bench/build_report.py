"""The build rows of a run's RESULTS.md section: the build-memory table (see
`vecdb.bench.build_memory`) and vecdb's build time over each peer's."""

from __future__ import annotations

from collections.abc import Sequence

from vecdb.bench.cells import Row, by_system, fmt


def build_memory_table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: the build-memory row of each system that has one (see
    `vecdb.bench.build_memory`); empty if none has."""
    cols = [
        "system", "raw MiB", "build s (fresh process)", "(a) peak RssAnon MiB", "(a) / raw",
        "build child peak MiB", "VmHWM MiB", "disk peak MiB (filesystem growth)",
        "(b) after build MiB", "(b) / raw", "(b) after malloc_trim MiB",
        "(c) fresh open MiB", "(b) / (c)", "baseline RssAnon MiB", "samples, max gap ms",
    ]  # fmt: skip
    lines = []
    for name, rs in by_system(rows).items():
        r = rs[0]
        if "build_mem_peak_anon_mib" not in r:
            continue
        cells = [
            name,
            fmt(r.get("build_mem_raw_mib"), 1),
            fmt(r.get("build_mem_build_s"), 1),
            fmt(r.get("build_mem_peak_anon_mib"), 1),
            fmt(r.get("build_mem_peak_x_raw"), 2) + "x",
            fmt(r.get("build_mem_children_peak_anon_mib"), 1),
            fmt(r.get("build_mem_vmhwm_mib"), 1),
            fmt(r.get("build_mem_disk_peak_mib"), 1),
            fmt(r.get("build_mem_after_anon_mib"), 1),
            fmt(r.get("build_mem_after_x_raw"), 2) + "x",
            fmt(r.get("build_mem_after_trim_anon_mib"), 1),
            fmt(r.get("build_mem_fresh_anon_mib"), 1),
            fmt(r.get("build_mem_after_over_fresh"), 2),
            fmt(r.get("build_mem_baseline_anon_mib"), 1),
            f"{r.get('build_mem_samples', '-')}, {fmt(r.get('build_mem_max_gap_ms'), 0)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|", *lines]


def build_time_table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: each vecdb system's build time over each peer's, same run and threads."""
    groups = by_system(rows)
    ours = [n for n, rs in groups.items() if rs[0].get("is_ours") and rs[0].get("build_s")]
    peers = [n for n, rs in groups.items() if not rs[0].get("is_ours") and rs[0].get("build_s")]
    if not ours or not peers:
        return []
    head = "| vecdb system | build s | warm-up s | "
    lines = [head + " | ".join(f"/ {p}" for p in peers) + " |"]
    lines.append("|---" * (len(peers) + 3) + "|")
    lines.append(
        "| (peer build s) | - | - | "
        + " | ".join(fmt(groups[p][0]["build_s"], 1) for p in peers)
        + " |"
    )
    for a in ours:
        ta = float(groups[a][0]["build_s"])
        warm = fmt(groups[a][0].get("warmup_s"), 1)
        cells = [f"{ta / float(groups[p][0]['build_s']):.2f}x" for p in peers]
        lines.append(f"| {a} | {ta:,.1f} | {warm} | " + " | ".join(cells) + " |")
    return lines
