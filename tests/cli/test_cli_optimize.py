"""`vecdb optimize` asks for a collection's index work and follows it to ready."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from vecdb.cli.main import main
from vecdb.engine import Database


def _fill(path: Path, n: int = 300) -> None:
    with Database(path, settings={"idle_seconds": 3600}) as db:
        db.create_collection("c", dim=6, metric="cosine")
        db.upsert("c", list(range(n)), np.random.default_rng(0).standard_normal((n, 6)))


def test_optimize_a_local_directory_until_ready(tmp_path: Path) -> None:
    _fill(tmp_path / "db")
    out = CliRunner().invoke(main, ["optimize", "c", "--target", str(tmp_path / "db"), "--quiet"])
    assert out.exit_code == 0, out.output
    with Database(tmp_path / "db") as db:
        info = db.get_collection("c")
        assert (info.indexed, info.buffered) == (300, 0)
    listed = CliRunner().invoke(main, ["inspect", str(tmp_path / "db")])
    assert "c: 300 points, all indexed" in listed.output


def test_optimize_reports_progress_and_the_result(tmp_path: Path) -> None:
    _fill(tmp_path / "db")
    out = CliRunner().invoke(main, ["optimize", "c", "--target", str(tmp_path / "db")])
    assert out.exit_code == 0, out.output
    assert "c: ready, 300 points indexed" in out.output


def test_optimize_an_unknown_collection_is_a_clear_error(tmp_path: Path) -> None:
    _fill(tmp_path / "db", 3)
    out = CliRunner().invoke(main, ["optimize", "nope", "--target", str(tmp_path / "db")])
    assert out.exit_code == 1
    assert "collection 'nope' does not exist" in out.output


def test_inspect_counts_points_not_yet_indexed(tmp_path: Path) -> None:
    _fill(tmp_path / "db", 40)
    out = CliRunner().invoke(main, ["inspect", str(tmp_path / "db")])
    assert "c: 40 points, 40 not yet indexed" in out.output


def test_optimize_counts_documents_of_a_document_collection(tmp_path: Path) -> None:
    """On a kind="multivector" collection the result counts documents, not points."""
    rng = np.random.default_rng(1)
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as db:
        db.create_collection("d", dim=4, metric="cosine", kind="multivector")
        db.upsert_documents("d", [1, 2, 3], [rng.standard_normal((3, 4)) for _ in range(3)])
    out = CliRunner().invoke(main, ["optimize", "d", "--target", str(tmp_path / "db")])
    assert out.exit_code == 0, out.output
    assert "d: ready, 3 documents indexed" in out.output


def test_a_failed_jobs_reason_is_found_through_a_router_too() -> None:
    """The reason printed for a failed index job: a node's own, else each failed shard's by
    address (a router's stats nest them under "shards"; before, the reason was empty)."""
    from vecdb.cli.optimize import job_error

    assert job_error({"index_status": {"error": "disk full"}}) == "disk full"
    routed = {"total": {"count": 3}, "shards": {
        "127.0.0.1:7710": {"index_status": {"error": None}},
        "127.0.0.1:7720": {"index_status": {"error": "disk full"}},
    }}  # fmt: skip
    assert job_error(routed) == "127.0.0.1:7720: disk full"
    assert job_error({"index_status": {}}) == "(no reason reported)"
