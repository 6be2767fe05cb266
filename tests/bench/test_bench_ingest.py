"""The ingest benchmark end to end: a real `vecdb serve` child, tiny data, counts checked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from vecdb.bench import ingest
from vecdb.bench.datasets import load_dataset
from vecdb.bench.ingest_report import section_text


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("ingest")
    ds = load_dataset("synthetic:2000:16", cache_dir=tmp / "cache", metric="cosine")
    cfg = ingest.IngestConfig(
        variants=list(ingest.VARIANTS), threads=1, batch_rows=300, work_dir=tmp
    )
    return {r["variant"]: r for r in ingest.run_ingest_benchmark(ds, cfg, log=lambda m: None)}


def test_bulk_counts_every_batch_and_vector(rows: dict[str, dict]) -> None:
    """2,000 vectors in batches of 300: 7 batches, 7 acks, 2,000 acknowledged and stored."""
    r = rows["bulk"]
    assert "error" not in r, r.get("error")
    load = r["phases"]["load"]
    assert (load["vectors"], load["batches"], load["acks"], load["acked_vectors"]) == (
        2000, 7, 7, 2000,
    )  # fmt: skip
    assert r["acks_ok"] and r["count"] == 2000 and r["count_ok"]
    assert abs(r["vectors_per_s"] * load["seconds"] - 2000) < 2000 * 0.01
    assert 0 < r["max_gap_s"] <= load["seconds"] and r["p99_gap_s"] <= r["max_gap_s"]
    assert r["optimize_s"] == r["phases"]["optimize"]["seconds"]


def test_online_measures_the_second_half(rows: dict[str, dict]) -> None:
    """online streams 1,000 + 1,000 with an optimize between; the second half is measured."""
    r = rows["online"]
    assert "error" not in r, r.get("error")
    assert r["measured_phase"] == "load_second_half"
    assert r["phases"]["load_first_half"]["acked_vectors"] == 1000
    assert r["phases"]["load_second_half"]["acked_vectors"] == 1000
    assert r["phases"]["load_second_half"]["acks"] == 4 and r["count"] == 2000


def test_churn_deletes_and_reupserts_a_fifth(rows: dict[str, dict]) -> None:
    """churn deletes 400 ids and streams them again; the collection ends with all 2,000."""
    r = rows["churn"]
    assert "error" not in r, r.get("error")
    assert r["phases"]["delete"]["vectors"] == 400
    assert r["phases"]["reupsert"]["acked_vectors"] == 400 and r["count"] == 2000


def test_posting_samples_are_kept_for_every_moment(rows: dict[str, dict]) -> None:
    """Every sample (time, posting bytes, server RssAnon) is in the row; maxima agree with them."""
    for r in rows.values():
        series = r["series"]
        n = len(series["t_s"])
        assert n == r["samples"] >= 2
        assert len(series["posting_bytes"]) == n == len(series["server_anon_kib"])
        assert max(series["posting_bytes"]) > 0  # SPANN wrote its posting file
        raw = 2000 * 16 * 4
        assert r["posting_max_x_raw"] == round(max(series["posting_bytes"]) / raw, 3)
        assert r["server_anon_max_mib"] > 0 and r["server_vmhwm_mib"] > 0


def test_cli_writes_jsonl_and_results_section(tmp_path: Path) -> None:
    """`python -m vecdb.bench.ingest` writes its JSONL and its own RESULTS.md section."""
    md = tmp_path / "RESULTS.md"
    md.write_text("# notes kept\n")
    code = ingest.main(
        ["--dataset", "synthetic:600:8", "--cache-dir", str(tmp_path / "c"), "--index", "flat",
         "--threads", "1", "--out", str(tmp_path), "--results-md", str(md),
         "--work-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    (row,) = [json.loads(x) for x in (tmp_path / "results-ingest-synthetic-600-8.jsonl").open()]
    assert row["variant"] == "bulk" and row["count"] == 600 and row["acks_ok"]
    text = md.read_text()
    assert (
        text.startswith("# notes kept")
        and "<!-- vecdb-bench:ingest-synthetic-600-8:begin -->" in text
    )
    assert "| bulk | load | 600 |" in text


def _watch(values: dict[str, list[float]]) -> tuple[int, str | None]:
    """(kill calls, reason) of a watchdog over a sampler holding `values`, bound 2e9 bytes."""

    class FakeServer:
        killed = 0

        def kill(self) -> None:
            self.killed += 1

    class FakeSampler:
        pass

    sampler = FakeSampler()
    sampler.values = values  # type: ignore[attr-defined]
    server = FakeServer()
    dog = ingest._Watchdog(server, sampler, 2e9, deadline=float("inf"))  # type: ignore[arg-type]
    with dog:
        for _ in range(40):
            if server.killed:
                break
            time.sleep(0.05)
    return server.killed, dog.reason


def test_watchdog_kills_the_server_when_posting_files_run_away() -> None:
    """Past the posting-size bound the watchdog kills the server and says why."""
    killed, reason = _watch({"posting_bytes": [10.0, 3e9]})
    assert killed == 1 and reason is not None and "posting files" in reason


def test_a_wide_collection_counts_its_rerank_store(tmp_path: Path) -> None:
    """At 256 dimensions the default index keeps a rerank store beside its 1-bit postings: the
    store's allocated bytes are sampled, and the disk bound's figure is postings + store."""
    ds = load_dataset("synthetic:2400:256", cache_dir=tmp_path / "cache", metric="cosine")
    cfg = ingest.IngestConfig(variants=["bulk"], threads=1, batch_rows=800, work_dir=tmp_path)
    (r,) = ingest.run_ingest_benchmark(ds, cfg, log=lambda m: None)
    assert "error" not in r, r.get("error")
    series = r["series"]
    assert max(series["store_bytes"]) >= 2400 * 256 * 2  # float16 rows of every vector
    both = [p + s for p, s in zip(series["posting_bytes"], series["store_bytes"], strict=True)]
    raw = 2400 * 256 * 4
    assert r["disk_max_x_raw"] == round(max(both) / raw, 3) > r["posting_max_x_raw"]
    text = section_text([r], "cmd", cfg.interval_s)
    assert f"| {r['disk_max_x_raw']:.2f}x |" in text


def test_watchdog_counts_the_rerank_store() -> None:
    """Postings under the bound but postings + store over it: the server is killed."""
    killed, reason = _watch({"posting_bytes": [10.0, 1e9], "store_bytes": [0.0, 1.5e9]})
    assert killed == 1 and reason is not None and "rerank store" in reason
    assert _watch({"posting_bytes": [10.0, 1e9], "store_bytes": [0.0, 0.5e9]})[0] == 0
