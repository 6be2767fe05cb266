"""The multi-vector scale row at a tiny size, so its code path cannot rot: batches keep both
caps, a whole run (fresh child processes, the real embedded database, the exact numba kernel)
reports every part with sane values and leaves no work directory behind, and a step past the
deadline is killed and reported."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.bench.multivector import scale_row
from vecdb.bench.options import engine_settings


def test_batches_keep_the_document_and_token_caps() -> None:
    sizes = np.array([5, 30, 30, 1, 1, 1, 60, 2, 2, 2], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    got = scale_row.batches(offsets, batch_docs=4, cap=61)
    assert got[0][0] == 0 and got[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))  # consecutive, nothing skipped
    for lo, hi in got:
        assert 1 <= hi - lo <= 4
        assert offsets[hi] - offsets[lo] <= 61 or hi - lo == 1
    assert scale_row.batches(offsets, batch_docs=200, cap=1) == [(i, i + 1) for i in range(10)]
    assert scale_row.batches(offsets, batch_docs=200) == [(0, 10)]  # the engine's cap: 65,536


def _run(tmp_path: Path, docs: int, tokens: int, engine: list[str]) -> dict[str, Any]:
    out = tmp_path / "row.json"
    argv = ["--docs", str(docs), "--tokens", str(tokens), "--dim", "32", "--queries", "5",
            "--out", str(out), "--workdir", str(tmp_path / "w"), "--timeout", "300",
            "--batch-docs", "64", *(f"--engine={e}" for e in engine)]  # fmt: skip
    assert scale_row.main(argv) == 0
    assert list((tmp_path / "w").iterdir()) == []  # the work directory is gone
    res: dict[str, Any] = json.loads(out.read_text())
    return res


@pytest.mark.parametrize(
    ("docs", "tokens", "exact", "engine"),
    [
        # 5,400 tokens: trained, and 300 documents go through the pipeline; engine settings
        # passed to the build's database (the writes never pause 30 s: trained at optimize)
        (300, 16, False, ["bulk_build_bytes=0", "idle_seconds=30"]),
        (80, 64, True, []),  # trained too, but no more than the pipeline scores in full: exact
    ],
)
def test_a_small_run_reports_every_part(
    tmp_path: Path, docs: int, tokens: int, exact: bool, engine: list[str]
) -> None:
    res = _run(tmp_path, docs, tokens, engine)
    data, build, search = res["data"], res["build"], res["search"]
    assert res["engine_settings"] == (engine or "defaults")
    # one codebook, trained by optimize (5,400 tokens are far below the first training's bytes)
    assert build["trainings_during_ingest"] == 0 and build["index"]["generation"] == 1
    assert data["docs"] == docs and data["queries"] == 5
    assert build["batches"] == -(-docs // 64)  # the token cap does not bind here
    assert build["index"]["tokens"] == data["tokens"] == build["index"]["encoded_tokens"]
    assert build["index"]["trained"] and build["index"]["K"] > 0
    assert set(build["index"]["bytes_per_token"]) >= {"raw", "codes", "residuals", "signs"}
    assert build["ingest_s"] > 0 and build["optimize_s"] > 0
    ms = build["upsert_ms"]  # each call timed: within the ingest's seconds
    assert 0 < ms["p50"] <= ms["p99"] <= ms["max"] <= 1000 * build["ingest_s"]
    assert build["build_s"] == pytest.approx(build["ingest_s"] + build["optimize_s"])
    assert build["count"] == docs and build["index_state"] == "ready"
    assert build["disk_peak_mib"] > 0 and build["disk_at_rest_mib"] > 0
    assert build["build_peak_anon_mib"] > 0
    for n in (1, 2):
        row, base = search[f"threads={n}"], res["exact"][f"threads={n}"]
        assert 0.0 <= row["recall@10"] <= 1.0
        assert 0 < row["p50_ms"] <= row["p95_ms"] and base["p50_ms"] > 0
        assert row["exact_share"] == (1.0 if exact else 0.0)
        if exact:  # every document scored exactly: the exact top-10, ties allowed
            assert row["recall@10"] == 1.0 and row["docs_scored_per_query"] == docs
        else:
            assert row["recall@10"] >= 0.5 and row["docs_scored_per_query"] < docs
        assert row["kb_read_per_query"] > 0
        assert res["x_exact"][f"threads={n}"] > 0


def test_a_step_past_the_deadline_is_killed(tmp_path: Path) -> None:
    t = time.perf_counter()
    got = scale_row._child(
        "data", tmp_path, time.time() + 1.0,
        ["--docs", "400000", "--tokens", "1", "--dim", "4", "--queries", "5"],  # ~10 s, small
    )  # fmt: skip
    assert "killed" in got and time.perf_counter() - t < 10
    assert scale_row._child("data", tmp_path, time.time() - 1, [])["skipped"]


def test_engine_settings_are_numbers_by_name() -> None:
    assert engine_settings([]) is None
    got = engine_settings(["idle_seconds=0.5", "bulk_build_bytes=1024", "x = 1e3"])
    assert got == {"idle_seconds": 0.5, "bulk_build_bytes": 1024, "x": 1000.0}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        engine_settings(["idle_seconds"])
    with pytest.raises(SystemExit, match="idle_seconds expects a number, got 'soon'"):
        engine_settings(["idle_seconds=soon"])


def test_engine_settings_reach_the_build_database(tmp_path: Path) -> None:
    """`--engine` goes to the build step's own process and database: an unknown setting fails
    that step, named by the engine, and the search after it is skipped."""
    out = tmp_path / "row.json"
    argv = ["--docs", "20", "--tokens", "8", "--dim", "16", "--queries", "2", "--out", str(out),
            "--workdir", str(tmp_path / "w"), "--timeout", "300", "--engine", "no_such=1"]  # fmt: skip
    scale_row.main(argv)
    res = json.loads(out.read_text())
    assert "no_such" in json.dumps(res["build"]) and "build_s" not in res["build"]
    assert "skipped" in res["search"]
