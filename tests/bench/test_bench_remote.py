"""vecdb measured over gRPC: a `vecdb serve` child process behind the same System contract."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vecdb.cli.bench import bench


def test_flat_over_grpc_is_exact_and_measures_the_server(tmp_path: Path) -> None:
    """vecdb-flat-grpc answers exactly, and its memory row is the server process's."""
    args = [
        "--dataset", "synthetic:2000:16", "--systems", "vecdb-flat-grpc",
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--queries", "20", "--latency-queries", "5", "--repeats", "1", "--threads", "1",
        "--no-progress", "--section", "grpc-smoke",
    ]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    jsonl = tmp_path / "out" / "results-grpc-smoke.jsonl"
    (row,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert row["system"] == "vecdb-flat-grpc" and row["recall_at_10"] == 1.0
    assert "memory_error" not in row and row["rss_anon_mib"] > 0
    assert row["qps_1t_wall"] > 0 and row["disk_mib"] > 0
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "<!-- vecdb-bench:grpc-smoke:begin -->" in md and "## grpc-smoke" in md
    assert (tmp_path / "out" / "plots" / "grpc-smoke-qps-1t-cpu.png").is_file()
