"""The filtered-search benchmark: payload, exact filtered ground truth, recall, the real run
of every system through `vecdb bench --filter-selectivity`, and its RESULTS.md section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from oracles import METRICS, assert_topk, distances

from vecdb.bench import filtered
from vecdb.bench.datasets import load_dataset
from vecdb.bench.filtered import (
    FilterCase,
    filter_cases,
    filtered_topk,
    parse_selectivities,
    payload_columns,
)
from vecdb.bench.filtered_run import FilterOptions, filtered_recall
from vecdb.cli.bench import bench
from vecdb.errors import InvalidArgument

SYSTEMS = "vecdb-flat,vecdb-spann,exact,faiss-ivf,hnswlib"
SELECTIVITIES = "0.5,0.1,0.01"
CONFIG = {
    "systems": {
        "vecdb-spann": {"sweep": {"max_postings": [4, 64]}},
        # nprobe = nlist probes every list: faiss IVF is then exact on the matching rows.
        "faiss-ivf": {"build": {"nlist": 16}, "sweep": {"nprobe": [1, 16]}},
        "hnswlib": {"sweep": {"ef": [10, 40]}},
    },
    "filter": {"seed": 3, "stop_recall": 1.0},
}


def test_selectivities_must_be_one_over_a_whole_number() -> None:
    """0.5, 0.1, 0.001 parse; 0.3, 0, 2, text and repeats are errors naming the option."""
    assert parse_selectivities("0.5, 0.1,0.001") == [0.5, 0.1, 0.001]
    for bad in ("0.3", "0", "2", "abc", "0.1,0.1", "", "nan"):
        with pytest.raises(InvalidArgument, match="--filter-selectivity"):
            parse_selectivities(bad)


def test_payload_fields_are_balanced_seeded_and_not_row_order() -> None:
    """Field sX takes each of 0..X-1 equally often, the same for a seed, unlike row % X."""
    cols = payload_columns(1000, [0.5, 0.01], seed=7)
    assert set(cols) == {"s2", "s100"}
    assert np.bincount(cols["s100"]).tolist() == [10] * 100
    assert np.bincount(cols["s2"]).tolist() == [500, 500]
    again = payload_columns(1000, [0.01], seed=7)
    np.testing.assert_array_equal(again["s100"], cols["s100"])  # one stream per field
    assert not np.array_equal(cols["s100"], np.arange(1000) % 100)
    assert not np.array_equal(payload_columns(1000, [0.01], seed=8)["s100"], cols["s100"])


@pytest.mark.parametrize("metric", METRICS)
def test_filtered_ground_truth_is_the_exact_topk_of_the_matching_rows(metric: str) -> None:
    """filtered_topk equals a float64 brute force over the subset, tie-aware, padded."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((500, 7)).astype(np.float32)
    queries = rng.standard_normal((20, 7)).astype(np.float32)
    if metric == "cosine":  # the benchmark's cosine data arrives unit-norm
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = np.flatnonzero(rng.random(500) < 0.1).astype(np.int64)
    ids, dist = filtered_topk(base, queries, metric, rows, 10)
    oracle = distances(base[rows], queries, metric)
    for i in range(len(queries)):
        assert_topk(ids[i].tolist(), dist[i], rows.tolist(), oracle[i], 10)
    few, few_d = filtered_topk(base, queries, metric, rows[:3], 10)  # fewer rows than k
    assert (few[:, 3:] == -1).all() and np.isinf(few_d[:, 3:]).all()
    assert set(few[0, :3].tolist()) == set(rows[:3].tolist())


def _case(base: np.ndarray, queries: np.ndarray, mask: np.ndarray) -> FilterCase:
    rows = np.flatnonzero(mask).astype(np.int64)
    gt_ids, gt_dist = filtered_topk(base, queries, "l2", rows, 10)
    return FilterCase(0.5, "s2", 2, {"s2": 0}, mask, gt_ids, gt_dist)


def test_recall_never_counts_an_id_that_fails_the_filter(tmp_path: Path) -> None:
    """A closer non-matching id scores nothing and is counted as non-matching."""
    ds = load_dataset("synthetic:400:4", tmp_path)
    mask = np.arange(len(ds.base)) % 2 == 0
    case = _case(ds.base, ds.queries, mask)
    exact = filtered_recall(ds, case, case.gt_ids)
    assert exact["recall_at_10"] == 1.0 and exact["non_matching"] == 0
    unfiltered = ds.gt_ids[:, :10]  # the unfiltered top-10: about half fail the filter
    got = filtered_recall(ds, case, unfiltered)
    fails = int((~mask[unfiltered]).sum())
    assert fails > 0 and got["non_matching"] == fails
    assert got["recall_at_10"] <= 1.0 - fails / unfiltered.size + 1e-9


def test_filtered_ground_truth_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second call with the same dataset, queries and seed reads the cache."""
    ds = load_dataset("synthetic:600:8", tmp_path)
    _cols, first = filter_cases(ds, [0.1], seed=2)

    def fail(*_a: Any, **_k: Any) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr(filtered, "filtered_topk", fail)
    _cols, second = filter_cases(ds, [0.1], seed=2)
    np.testing.assert_array_equal(first[0].gt_ids, second[0].gt_ids)
    with pytest.raises(AssertionError, match="recomputed"):
        filter_cases(ds, [0.1], seed=3)  # another payload: another ground truth
    with pytest.raises(InvalidArgument, match="fewer than 10"):
        filter_cases(ds, [0.01], seed=2)  # 6 of 600 points match


def test_filter_options_are_validated() -> None:
    """The config's filter object: bad types or bounds name the key."""
    opts = FilterOptions.from_config([0.1], {"payload_index": True, "seed": 4})
    assert opts.payload_index and opts.seed == 4 and opts.stop_recall == 0.999
    for bad, key in (({"payload_index": "yes"}, "payload_index"), ({"seed": -1}, "seed"),
                     ({"stop_recall": 2}, "stop_recall"), ({"payload_indexes": 1}, "payload_indexes")):  # fmt: skip
        with pytest.raises(InvalidArgument, match=f"filter.{key}"):
            FilterOptions.from_config([0.1], bad)


def _run(tmp_path: Path, *extra: str) -> tuple[int, str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    args = [
        "--dataset", "synthetic:3000:16", "--filter-selectivity", SELECTIVITIES,
        "--systems", SYSTEMS, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
        "--queries", "50", "--latency-queries", "5", "--repeats", "1", "--threads", "2",
        "--config", str(config), "--no-progress", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    return result.exit_code, result.output


def test_filtered_bench_runs_every_system_and_writes_its_section(tmp_path: Path) -> None:
    """Every system at every selectivity: no result breaks the filter, exact systems (and IVF
    probing every list) reach recall 1, and RESULTS.md gets the section with its command."""
    md = tmp_path / "out" / "RESULTS.md"
    md.parent.mkdir()
    md.write_text("# notes\n\nhand-written\n")
    code, output = _run(tmp_path)
    assert code == 0, output
    jsonl = tmp_path / "out" / "results-synthetic-3000-16-filtered.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert not [r for r in rows if "error" in r]
    seen = {(r["system"], r["selectivity"]) for r in rows}
    assert seen == {(s, x) for s in SYSTEMS.split(",") for x in (0.5, 0.1, 0.01)}
    for r in rows:
        assert r["non_matching"] == 0, r
        assert r["n_matching"] == round(3000 * r["selectivity"])
        assert r["filter"] == {f"s{round(1 / r['selectivity'])}": 0}
        assert 0.0 <= r["recall_at_10"] <= 1.0 and r["qps_1t_cpu"] > 0 and r["qps_all_wall"] > 0
        assert r["n_queries"] == 50 and r["filter_seed"] == 3 and r["payload_index"] is False
    for r in rows:
        if r["system"] in ("vecdb-flat", "exact") or r["params"] == {"nprobe": 16}:
            assert r["recall_at_10"] == 1.0 and r["recall_at_1"] == 1.0, r
    assert len([r for r in rows if r["system"] == "faiss-ivf"]) == 6  # stop_recall 1.0
    text = md.read_text()
    assert text.startswith("# notes\n\nhand-written\n")
    assert "<!-- vecdb-bench:synthetic-3000-16-filtered:begin -->" in text
    assert f"--filter-selectivity {SELECTIVITIES}" in text
    assert "### QPS at recall@10 >= 0.95" in text
    for name in SYSTEMS.split(","):
        assert f"| 1% | 30 | {name} |" in text
    png = tmp_path / "out" / "plots" / "synthetic-3000-16-filtered-qps-1t-cpu.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filtered_bench_rejects_a_bad_selectivity(tmp_path: Path) -> None:
    """A selectivity that is not 1/X stops the command with a message naming the option."""
    code, output = _run(tmp_path, "--filter-selectivity", "0.3")
    assert code != 0 and "--filter-selectivity: 0.3 is not 1/X" in output
