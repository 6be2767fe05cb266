"""`vecdb snapshot create|list|restore|delete` through the SDK: on a data directory, and on a
real `vecdb serve` child process on an ephemeral loopback port (with an API key)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vecdb
from vecdb.bench.server_process import ServerProcess
from vecdb.cli.main import main
from vecdb.engine import Database

ROOT = Path(__file__).resolve().parents[2]
KEY = "snap-key"


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


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `vecdb serve` child process on 127.0.0.1:<ephemeral> requiring the admin key KEY;
    yields its address. The CLI under test gets the key from --api-key, not the env."""
    monkeypatch.setenv("VECDB_API_KEY", KEY)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    srv = ServerProcess(tmp_path / "served", threads=1)
    monkeypatch.delenv("VECDB_API_KEY")
    try:
        yield srv.address
    finally:
        srv.stop()


def _points(c: vecdb.Client) -> list[tuple[object, bytes, object]]:
    records, nxt = c.scroll("c", limit=10_000, with_vectors=True)
    assert nxt is None
    return [(r.id, r.vector.tobytes() if r.vector is not None else b"", r.payload) for r in records]


def test_snapshot_cycle_against_a_server(served: str) -> None:
    """create / list / restore / delete over gRPC: the restore brings back exactly the points
    (vectors bit for bit, payloads) the snapshot holds, and the text and JSON outputs agree."""
    rng = np.random.default_rng(4)
    with vecdb.connect(served, api_key=KEY) as c:
        c.create_collection("c", dim=4, metric="l2")
        c.upsert("c", list(range(50)), rng.standard_normal((50, 4)).astype(np.float32),
                 [{"i": i} for i in range(50)])  # fmt: skip
        before = _points(c)
    key = ["--target", served, "--api-key", KEY]
    code, out = _cli("create", "c", *key, "--json")
    assert code == 0, out
    created = json.loads(out)
    assert created["collection"] == "c" and created["bytes"] > 0 and created["seq"] > 0
    with vecdb.connect(served, api_key=KEY) as c:
        c.delete("c", filter={"i": {"$lt": 25}})
        c.set_payload("c", [30], {"changed": True})
        c.upsert("c", [999], np.ones((1, 4), np.float32))
        assert _points(c) != before
    code, out = _cli("list", "c", *key, "--json")
    assert code == 0 and [s["name"] for s in json.loads(out)] == [created["name"]], out
    code, out = _cli("list", "c", *key)
    assert code == 0 and out.startswith(created["name"] + "  seq "), out
    code, out = _cli("restore", "c", created["name"], *key)
    assert code == 0 and out.strip() == f"restored 'c' from snapshot '{created['name']}'", out
    with vecdb.connect(served, api_key=KEY) as c:
        assert _points(c) == before
        assert c.count("c") == 50
    code, out = _cli("delete", "c", created["name"], *key)
    assert code == 0 and "deleted snapshot" in out, out
    code, out = _cli("list", "c", *key, "--json")
    assert code == 0 and json.loads(out) == []


def test_snapshot_errors_against_a_server_are_one_line(served: str) -> None:
    """Unknown snapshot, bad name, unknown collection and a missing key: one line, exit 1."""
    with vecdb.connect(served, api_key=KEY) as c:
        c.create_collection("c", dim=4, metric="l2", index="flat")
    key = ["--target", served, "--api-key", KEY]
    code, out = _cli("restore", "c", "nope", *key)
    assert code == 1 and out.strip() == (
        "vecdb snapshot: NotFound: snapshot 'nope' of collection 'c' does not exist"
    )
    code, out = _cli("delete", "c", "../x", *key)
    assert code == 1 and "InvalidArgument: snapshot name '../x' is invalid" in out
    code, out = _cli("create", "nope", *key)
    assert code == 1 and out.strip() == "vecdb snapshot: NotFound: collection 'nope' does not exist"
    code, out = _cli("list", "c", "--target", served)
    assert code == 1 and out.startswith("vecdb snapshot: Unauthenticated: ") and len(
        out.strip().splitlines()) == 1, out  # fmt: skip
