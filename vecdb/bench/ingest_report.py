"""The ingest benchmark's RESULTS.md section (`vecdb.bench.ingest` runs it and owns the
protocol; this module only formats its rows)."""

from __future__ import annotations

from typing import Any

from vecdb.bench.cells import fmt

# Targets of issue 8, printed beside the numbers (the lead judges them).
TARGETS = (
    "70,000 x 1024 random (cosine): >= 10,000 vectors/s end to end, no acknowledgement gap "
    "> 1 s; GloVe-50: >= 50,000 vectors/s; posting files <= 4x the raw vector bytes at every "
    "sample of a bulk load, an online load and a churn (with a rerank store, as bits postings "
    "have from 256 dimensions, postings and store together)."
)


def cell(x: Any, digits: int = 0) -> str:
    """A table cell as `cells.fmt` writes it, with a bool as yes / NO."""
    if isinstance(x, bool):
        return "yes" if x else "NO"
    return fmt(x, digits)


def section_text(rows: list[dict[str, Any]], command: str, sample_interval_s: float) -> str:
    """The RESULTS.md section of one invocation (the server sampled every
    `sample_interval_s`)."""
    first = rows[0]
    sha = first.get("git_sha") or "unknown"
    if first.get("git_dirty"):
        sha += " (with uncommitted changes)"
    head = (
        "| variant | measured phase | vectors | batch rows | vectors/s | longest ack gap s "
        "| p99 gap s | all acked | optimize s | posting max MiB | posting max / raw "
        "| store max MiB | postings + store max / raw "
        "| server VmHWM MiB | server max RssAnon MiB | count ok |"
    )
    lines = [
        f"## ingest {first['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        f"- Run {first.get('run_id')}, git {sha}; {first.get('cpu_model')} x "
        f"{first.get('cpu_count')} CPUs; server threads {first.get('server_threads')}; index "
        f"{first.get('index')}.",
        f"- Data: {first['n']:,} x {first['d']} ({first['raw_mib']:,.1f} MiB raw float32), "
        f"metric {first['metric']}. Streamed with the SDK's upsert_stream to a `vecdb serve` "
        "child on 127.0.0.1; posting files and the server's RssAnon sampled every "
        f"{1000 * sample_interval_s:.0f} ms (every sample is in the JSONL row's `series`).",
        f"- Targets: {TARGETS}",
        "",
        head,
        "|---" * (head.count("|") - 1) + "|",
    ]
    for r in rows:
        ph = r.get("phases", {}).get(r.get("measured_phase", ""))
        if ph is None:
            lines.append(f"| {r['variant']} | failed (see below) |" + " - |" * 14)
            continue
        cells = [
            r["variant"],
            r["measured_phase"],
            cell(ph.get("vectors")),
            cell(r["batch_rows"]),
            cell(r["vectors_per_s"]),
            cell(r["max_gap_s"], 3),
            cell(r["p99_gap_s"], 3),
            cell(r["acks_ok"]),
            cell(r["optimize_s"], 1),
            cell(r["posting_max_mib"], 1),
            cell(r["posting_max_x_raw"], 2) + "x",
            cell(r.get("store_max_mib"), 1),
            cell(r.get("disk_max_x_raw"), 2) + "x",
            cell(r.get("server_vmhwm_mib"), 1),
            cell(r["server_anon_max_mib"], 1),
            cell(r["count_ok"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Phases (seconds; posting max / raw within the phase, + store where one is):", ""]
    for r in rows:
        parts = [
            f"{k} {p['seconds']:.1f} s"
            + (f" ({p['vectors_per_s']:,.0f}/s)" if p.get("vectors_per_s") else "")
            + (f" {p['posting_max_x_raw']:.2f}x" if "posting_max_x_raw" in p else "")
            + (
                f" ({p['disk_max_x_raw']:.2f}x with the store)"
                if p.get("disk_max_x_raw", 0) > p.get("posting_max_x_raw", 0)
                else ""
            )
            for k, p in r.get("phases", {}).items()
        ]
        lines.append(f"- {r['variant']}: " + "; ".join(parts) if parts else f"- {r['variant']}: -")
    errors = [f"- {r['variant']}: {r['error']}" for r in rows if "error" in r]
    if errors:
        lines += ["", "Failures:", "", *errors]
    return "\n".join(lines) + "\n"
