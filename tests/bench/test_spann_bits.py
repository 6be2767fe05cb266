"""`vecdb.bench.spann_bits` on a small synthetic set: its float16 reference is the index's own
answer, and a rerank of every candidate gives it back, for every centroid variant."""

from __future__ import annotations

import argparse
from pathlib import Path

import numba

from vecdb.bench import spann_bits, spann_bits_report


def test_the_bit_search_reranking_everything_matches_the_float16_scan(tmp_path: Path) -> None:
    args = argparse.Namespace(
        dataset="synthetic:6000:16:7", n=0, queries=40, index=str(tmp_path / "idx"),
        postings=[8, 16], rerank=[5, 100_000], seed=0,
    )  # fmt: skip
    threads = numba.get_num_threads()
    res = spann_bits.run(args)
    assert numba.get_num_threads() == threads  # timed at 1 thread, the caller's count restored
    assert res["n"] == 6000 and res["d"] == 16 and len(res["rows"]) == 2
    for row in res["rows"]:
        exact = row["recall_exact_f16"]
        assert exact == row["recall_index_batch"] == row["recall_full_single"]
        assert exact == row["recall_f16scan"] and exact > 0.5
        assert {v["centroid"] for v in row["variants"]} == set(spann_bits.VARIANTS)
        for v in row["variants"]:
            assert v["bits_bytes_per_entry"] < v["f16_bytes_per_entry"]
            assert v["us_bits"] > 0 and v["candidates"] <= v["R"]
            if v["R"] == 100_000:  # every distinct candidate reranked exactly
                assert abs(v["recall"] - exact) <= 0.01
                assert v["candidates"] <= row["entries_per_query"]
            else:
                assert v["recall"] <= exact + 0.01
    assert spann_bits_report.report(res).count("\n") > 2 * 3 * 2
