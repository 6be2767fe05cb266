"""The scale-row benchmark at a small size, so its code path cannot rot: the chunked generator
gives `vecdb bench`'s synthetic values, the chunked exact search agrees with the exact kernel,
and a whole run (real embedded database, real faiss, fresh child processes) reports every
part and leaves no work directory behind."""

from __future__ import annotations

import argparse
import json
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from vecdb.bench import scale_row, scale_row_data
from vecdb.bench.datasets import synthetic
from vecdb.kernels.scan import exact_topk


@pytest.mark.parametrize("n", [270_000, (1 << 18) - 500])  # a chunk edge in the base / queries
def test_generate_matches_the_synthetic_dataset(tmp_path: Path, n: int) -> None:
    base_path, q_path = scale_row_data.generate(tmp_path, n, 4, 7)
    base, queries, _ = synthetic(n, 4, 7)
    assert np.array_equal(np.load(base_path, mmap_mode="r"), base)
    assert np.array_equal(np.load(q_path), queries)


def test_exact_truth_agrees_with_the_exact_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale_row_data, "TRUTH_CHUNK", 700)  # many chunks, one partial
    rng = np.random.default_rng(3)
    base = rng.standard_normal((5_000, 12)).astype(np.float32)
    q = rng.standard_normal((40, 12)).astype(np.float32)
    expected, _ = exact_topk(q, base, "l2", scale_row_data.K)
    assert np.array_equal(scale_row_data.exact_truth(base, q), expected)


def test_qps_at_a_recall_is_interpolated_between_sweep_points() -> None:
    sweep = {
        "nprobe=1": {"recall@10": 0.5, "qps": 1000.0},
        "nprobe=2": {"recall@10": 0.9, "qps": 600.0},
        "nlist": 4,
    }
    assert scale_row_data.at_recall(sweep, 0.7, "qps") == pytest.approx(800.0)
    assert scale_row_data.at_recall(sweep, 0.95, "qps") is None  # beyond the sweep: no number


def _args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    base = dict(n=20_000, dim=16, seed=7, out=tmp_path / "row.json", workdir=tmp_path / "w",
                timeout=900.0, no_faiss=False, faiss_quantizer="flat", engine=[])  # fmt: skip
    return argparse.Namespace(**(base | kw))


def test_a_small_run_reports_every_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDB_BUILD_CHILD_MIB", "0")  # the bulk build in a child, sampled too
    res = scale_row.run(_args(tmp_path, engine=["bulk_build_bytes=1073741824"]))
    assert res["engine_settings"] == ["bulk_build_bytes=1073741824"]
    assert all(len(res[step]["load_average_at_end"]) == 3 for step in ("build", "warm", "faiss"))
    assert json.loads((tmp_path / "row.json").read_text()) == res
    assert list((tmp_path / "w").iterdir()) == []  # the work directory is gone
    build, warm = res["build"], res["warm"]
    assert build["build_s"] == pytest.approx(build["ingest_s"] + build["optimize_s"])
    assert build["build_peak_anon_mib"] > 0 and build["disk_peak_mib"] > 0
    assert build["build_child_peak_anon_mib"] > 0  # the child's RssAnon was seen
    assert warm["io"] == "mmap" and warm["posting_file_mib"] > 0
    for m in scale_row_data.MAX_POSTINGS:
        row = warm[f"max_postings={m}"]
        assert row["recall@10"] > 0.9
        assert row["qps_1thread_cpu"] > 0 and row["qps_all_threads_wall"] > 0
    for m in scale_row.COLD_POSTINGS:
        for conc in (1, 16):
            cold = res[f"cold:{m}:{conc}"]
            assert cold["recall@10"] > 0.9 and cold["p99_ms"] >= cold["p50_ms"] > 0
            assert cold["resident_mib_after_drop"] == 0  # the drop worked: a cold start
            assert cold["resident_kb_per_query"] > 0
    faiss = res["faiss"]
    assert faiss["nlist"] == 512 and faiss["nprobe=128"]["recall@10"] > 0.99
    assert set(res["vecdb_vs_faiss"]) == {f"max_postings={m}" for m in scale_row_data.MAX_POSTINGS}


def test_too_little_free_disk_aborts_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9, 10**6))
    with pytest.raises(SystemExit, match="GiB free"):
        scale_row.run(_args(tmp_path))
    assert list((tmp_path / "w").iterdir()) == []
    assert not (tmp_path / "row.json").exists()
