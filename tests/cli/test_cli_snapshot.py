"""`vecdb snapshot create|list|restore|delete` on a data directory through the SDK."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from vecdb.cli.main import main
from vecdb.engine import Database


def _cli(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["snapshot", *args])
    return out.exit_code, out.output


def test_snapshot_cycle_on_a_local_directory(tmp_path: Path) -> None:
    """create, list, restore (contents come back) and delete, with JSON and text output."""
    db_dir = str(tmp_path / "db")
    with Database(db_dir) as db:
        db.create_collection("c", dim=4, metric="l2", index="flat")
        db.upsert("c", [1, 2, 3], np.eye(3, 4, dtype=np.float32))
    code, out = _cli("create", "c", "--target", db_dir, "--json")
    assert code == 0, out
    created = json.loads(out)
    assert created["collection"] == "c" and created["bytes"] > 0
    with Database(db_dir) as db:
        db.delete("c", [1, 2])
    code, out = _cli("list", "c", "--target", db_dir)
    assert code == 0 and out.startswith(created["name"]), out
    code, out = _cli("restore", "c", created["name"], "--target", db_dir)
    assert code == 0 and "restored 'c'" in out, out
    with Database(db_dir) as db:
        assert db.count("c") == 3
    code, out = _cli("delete", "c", created["name"], "--target", db_dir)
    assert code == 0, out
    code, out = _cli("list", "c", "--target", db_dir, "--json")
    assert code == 0 and json.loads(out) == []


def test_snapshot_errors_are_one_line(tmp_path: Path) -> None:
    """Unknown names, bad names, missing arguments and ambiguous targets: no traceback."""
    db_dir = str(tmp_path / "db")
    with Database(db_dir) as db:
        db.create_collection("c", dim=4, metric="l2", index="flat")
    code, out = _cli("restore", "c", "nope", "--target", db_dir)
    assert code == 1 and out.strip() == (
        "vecdb snapshot: NotFound: snapshot 'nope' of collection 'c' does not exist"
    )
    code, out = _cli("delete", "c", "../x", "--target", db_dir)
    assert code == 1 and "InvalidArgument: snapshot name '../x' is invalid" in out
    code, out = _cli("restore", "c", "--target", db_dir)
    assert code == 2 and "needs the SNAPSHOT name" in out
    code, out = _cli("create", "c", "--target", "localhost")
    assert code == 1 and "ambiguous" in out and "Traceback" not in out
    code, out = _cli("frobnicate", "c")
    assert code == 2 and "'create', 'list', 'restore', 'delete'" in out
