"""`vecdb.bench.spann_extra`'s cold part on a small synthetic set: single queries against an
io=direct collection report recall, latency and the bytes each call itself read (per-call
search stats; the index has no running byte counter to diff)."""

from __future__ import annotations

from pathlib import Path

from vecdb.bench import spann_extra


def test_the_cold_part_reports_each_calls_own_reads(tmp_path: Path) -> None:
    out = spann_extra.cold("synthetic:6000:16:7", tmp_path, n_queries=60)
    assert out["io"] == "direct" and out["queries"] == 60
    for m in (32, 48, 64):
        one, many = (out[f"max_postings={m},concurrency={c}"] for c in (1, 16))
        for row in (one, many):
            assert row["recall@10"] > 0.8 and row["p99_ms"] >= row["p50_ms"] > 0
            assert row["kb_read_per_query"] > 0
        assert one["kb_read_per_query"] == many["kb_read_per_query"]  # same queries, same reads
    assert (
        out["max_postings=64,concurrency=1"]["kb_read_per_query"]
        >= out["max_postings=32,concurrency=1"]["kb_read_per_query"]
    )
