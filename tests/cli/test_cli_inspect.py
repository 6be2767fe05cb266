"""`vecdb inspect` describes a data directory read-only, even while it is in use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from vecdb.cli.main import main
from vecdb.engine import Database
from vecdb.engine.recovery import collection_dir


def _fill(path: Path) -> Database:
    db = Database(path)
    db.create_collection("alpha", dim=3, metric="l2")
    db.create_collection("beta", dim=5, metric="cosine", id_type="str")
    db.upsert("alpha", [1, 2, 3], np.ones((3, 3), np.float32))
    db.upsert("beta", ["x"], np.ones((1, 5), np.float32))
    db.delete("alpha", [2])
    return db


def test_inspect_reports_collections_and_counts(tmp_path: Path) -> None:
    """The JSON output lists each collection with its config and live count."""
    _fill(tmp_path / "db").close()
    out = CliRunner().invoke(main, ["inspect", str(tmp_path / "db"), "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    by_name = {c["name"]: c for c in info["collections"]}
    assert by_name["alpha"]["count"] == 2 and by_name["alpha"]["dim"] == 3
    assert by_name["beta"]["count"] == 1 and by_name["beta"]["id_type"] == "str"
    assert info["data_format"] == 1 and info["seq"] > 0


def test_inspect_works_while_the_directory_is_open(tmp_path: Path) -> None:
    """A running database holds the lock; inspect still reads and changes nothing."""
    db = _fill(tmp_path / "db")
    try:
        out = CliRunner().invoke(main, ["inspect", str(tmp_path / "db")])
        assert out.exit_code == 0, out.output
        assert "alpha: 2 points" in out.output
        db.upsert("alpha", [9], np.ones((1, 3), np.float32))  # still writable afterwards
    finally:
        db.close()


def test_inspect_rejects_a_directory_that_is_not_vecdb(tmp_path: Path) -> None:
    """A plain directory gets a clear error, not a traceback."""
    out = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert out.exit_code != 0
    assert "not a vecdb data directory" in out.output


def test_inspect_reports_allocated_beside_apparent_bytes(tmp_path: Path) -> None:
    """A sparse file in an index directory: apparent size counts the hole, allocated does
    not; the text output shows both."""
    _fill(tmp_path / "db").close()
    index_dir = collection_dir(tmp_path / "db", 1)  # alpha's (flat: no files of its own)
    index_dir.mkdir(parents=True, exist_ok=True)
    sparse = index_dir / "postings.9.bin"
    with open(sparse, "wb") as f:
        f.seek(64 * 2**20)  # a 64 MiB hole
        f.write(b"x")
    info = json.loads(CliRunner().invoke(main, ["inspect", str(tmp_path / "db"), "--json"]).output)
    alpha = {c["name"]: c for c in info["collections"]}["alpha"]
    assert alpha["index_bytes"] >= 64 * 2**20
    assert alpha["index_allocated_bytes"] < 2**20
    assert info["allocated_bytes"] < info["bytes_on_disk"] - 60 * 2**20
    text = CliRunner().invoke(main, ["inspect", str(tmp_path / "db")]).output
    assert "MiB allocated on disk" in text and "MiB apparent" in text
    assert "alpha: 2 points" in text and "index files 0.0 MiB allocated (64.0 MiB apparent)" in text
