"""End to end: `vecdb bench` on a small synthetic dataset writes every output file."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vecdb.cli.bench import bench

SYSTEMS = "exact,faiss-ivf,hnswlib,hnswlib-m8,vecdb-flat"
CONFIG = {
    "systems": {
        "faiss-ivf": {"sweep": {"nprobe": [1, 8]}},
        "hnswlib": {"sweep": {"ef": [10, 40]}},
        "hnswlib-m8": {"base": "hnswlib", "build": {"M": 8}, "sweep": {"ef": [20]}},
    },
    "anchors": {"exact": {"0.90": 1000.0}},
}


def run(tmp_path: Path, *extra: str) -> tuple[int, str, list[dict[str, object]]]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    args = [
        "--dataset", "synthetic:2000:16", "--systems", SYSTEMS, "--out", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--queries", "40", "--latency-queries", "10",
        "--repeats", "1", "--config", str(config), "--no-progress", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    jsonl = tmp_path / "out" / "results-synthetic-2000-16.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    return result.exit_code, result.output, rows


def test_bench_writes_rows_report_and_plots(tmp_path: Path) -> None:
    """A full run produces JSONL, RESULTS.md and both PNG plots; exact search has recall 1."""
    code, output, rows = run(tmp_path)
    assert code == 0, output
    out = tmp_path / "out"
    for png in ("synthetic-2000-16-qps-1t-cpu.png", "synthetic-2000-16-qps-all-wall.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["system"] for r in rows} == set(SYSTEMS.split(","))
    assert len([r for r in rows if r["system"] == "faiss-ivf"]) == 2
    for r in rows:
        assert r["n"] == 2000 and r["n_queries"] == 40 and r["k"] == 10
        assert r["git_sha"] is None or len(str(r["git_sha"])) == 40
        assert r["qps_1t_cpu"] > 0 and r["qps_all_wall"] > 0 and r["latency_n"] == 10
        assert r["rss_anon_mib"] is not None and r["disk_mib"] > 0
        assert r["build_s"] >= 0 and "memory_error" not in r
    exact = {r["system"]: r for r in rows if r["params"] == {}}
    assert exact["exact"]["recall_at_10"] == 1.0 and exact["exact"]["recall_at_1"] == 1.0
    assert exact["vecdb-flat"]["recall_at_10"] == 1.0
    assert [r["system"] for r in rows][0] == "vecdb-flat"  # ours first
    (m8,) = [r for r in rows if r["system"] == "hnswlib-m8"]  # a config variant of hnswlib
    assert m8["build_params"]["M"] == 8 and m8["params"] == {"ef": 20}
    # The build-memory row: embedded vecdb only, from fresh processes.
    (flat,) = [r for r in rows if r["system"] == "vecdb-flat"]
    assert "build_mem_error" not in flat
    assert flat["build_mem_fresh_anon_mib"] > 0 and flat["build_mem_build_s"] > 0
    assert flat["build_mem_raw_mib"] == round(2000 * 16 * 4 / 2**20, 2)
    assert not any("build_mem_peak_anon_mib" in r for r in rows if not r["is_ours"])
    md = (out / "RESULTS.md").read_text()
    assert "### Build memory (fresh processes" in md and "| vecdb-flat | 0.1 |" in md
    assert "### Build time, vecdb / peer" in md and "| vecdb-flat | " in md
    assert "Command: `vecdb bench --dataset synthetic:2000:16" in md
    assert "| vecdb-flat / exact |" in md
    assert "measured / anchor" in md
    assert "plots/synthetic-2000-16-qps-1t-cpu.png" in md


def test_time_limit_cuts_sweeps_but_keeps_one_setting(tmp_path: Path) -> None:
    """With no time left every system still reports its first setting, marked truncated."""
    code, output, rows = run(tmp_path, "--time-limit", "0", "--no-memory")
    assert code == 0, output
    ivf = [r for r in rows if r["system"] == "faiss-ivf"]
    assert len(ivf) == 1 and ivf[0]["sweep_truncated"] == 1
    assert "cut short by the time limit" in (tmp_path / "out" / "RESULTS.md").read_text()


def test_unknown_system_is_a_clean_error(tmp_path: Path) -> None:
    """A bad --systems value fails with a message and no traceback."""
    result = CliRunner().invoke(bench, ["--systems", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown system 'nope'" in result.output


def test_failing_system_is_reported_and_others_kept(tmp_path: Path) -> None:
    """A system that fails to build gets an error row and a non-zero exit; the rest run."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"systems": {"faiss-ivf": {"build": {"nlist": 0}}}}))
    args = [
        "--dataset", "synthetic:2000:16", "--systems", "exact,faiss-ivf",
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--queries", "20", "--latency-queries", "5", "--repeats", "1",
        "--config", str(config), "--no-progress", "--no-memory",
    ]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    assert result.exit_code != 0 and "systems failed: faiss-ivf" in result.output
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "Failures:" in md and "- faiss-ivf:" in md
    assert "| exact | - | 1.0000 | 1.0000 |" in md


def test_random_1024_dims_end_to_end(tmp_path: Path) -> None:
    """A structureless 1024-d set runs through vecdb and the peers; exact search is exact."""
    args = [
        "--dataset", "random:1500:1024:7", "--systems", "vecdb-flat,exact,faiss-ivf,hnswlib",
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--queries", "20", "--latency-queries", "5", "--repeats", "1", "--threads", "1",
        "--no-progress", "--no-memory",
    ]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    jsonl = tmp_path / "out" / "results-random-1500-1024-7.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert {r["system"] for r in rows} == {"vecdb-flat", "exact", "faiss-ivf", "hnswlib"}
    assert all(r["d"] == 1024 and r["metric"] == "cosine" for r in rows)
    exact = {r["system"]: r["recall_at_10"] for r in rows if r["params"] == {}}
    assert exact == {"vecdb-flat": 1.0, "exact": 1.0}
