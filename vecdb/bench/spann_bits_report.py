"""Markdown of a `vecdb.bench.spann_bits` result file: one table, the float16 scan per
`max_postings` and the bit search's variants and rerank sizes beside it. Reads the result
dict only; measures nothing.
"""

from __future__ import annotations

from typing import Any

from vecdb.index.params import PAGE_SIZE


def report(res: dict[str, Any]) -> str:
    """The run as a markdown table: per max_postings, the float16 scan (the index's answer),
    then per variant and R the bit search's recall, time and bytes beside it. "gain" is the
    median over queries of full / (head + bits) (head timed from Python: it overstates the
    bit path); "gain (kernels)" the same with the head search's kernels alone timed (as the
    single-query path runs them); "gain'" is median full / (median full - median f16 scan + median bits) (the
    f16 scan timed with its Python glue: it flatters the bit path). KB: float16 postings
    as the index reads them (pages); bits: postings as page-aligned blocks of coded
    entries, plus one 2d-byte float16 row per candidate (+ pages: one 4 KiB page each)."""
    lines = [
        f"{res['dataset']}: n={res['n']:,}, d={res['d']}, {res['queries']} queries, "
        f"git {str(res['git'])[:7]}, load {res['load_start']} -> {res['load_end']}",
        "",
        "| P | variant | R | recall@10 | bits us | f16 scan us / bits us | gain | gain (kernels) "
        "| gain' | KB/query | KB/query (rerank pages) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        lines.append(
            f"| {row['max_postings']} | float16 scan ({row['entries_per_query']:,.0f} entries, "
            f"full {row['us_full']:.0f} us, head {row['us_head']:.0f} us, head kernels "
            f"{row['us_head_kernels']:.0f} us) | - "
            f"| {row['recall_exact_f16']:.4f} | - | {row['us_f16scan']:.0f} us | 1 | 1 | 1 "
            f"| {row['index_kb_read_per_query']:,.0f} | - |"
        )
        for v in row["variants"]:
            kb_pages = row["bits_kb_pages_per_query"]
            rerank = v["candidates"] * 2 * res["d"] / 1e3
            gain2 = row["us_full"] / (row["us_full"] - row["us_f16scan"] + v["us_bits"])
            lines.append(
                f"| {row['max_postings']} | {v['centroid']} | {v['R']} | {v['recall']:.4f} "
                f"| {v['us_bits']:.0f} | {v['scan_ratio_f16scan_over_bits']:.2f} "
                f"| {v['qps_gain_est']:.2f} | {v['qps_gain_est_kernels']:.2f} | {gain2:.2f} "
                f"| {kb_pages + rerank:,.0f} "
                f"| {kb_pages + v['candidates'] * PAGE_SIZE / 1e3:,.0f} |"
            )
    return "\n".join(lines)
