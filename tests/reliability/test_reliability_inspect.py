"""`vecdb inspect --verify`: one line per file checked, exit 0 when everything is whole and
1 naming the file when something is damaged (a flipped posting block, a cut RocksDB table
file, a snapshot file that no longer matches its sha256). Never writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from reliability_data import build, open_db, posting_file

from vecdb.cli.main import main
from vecdb.storage.manifest import read_manifest, write_manifest


def verify(path: Path) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["inspect", str(path), "--verify"])
    return out.exit_code, out.output


def listing(path: Path) -> dict[str, int]:
    """Files and their mtimes, but rocksdict's own config (rewritten by every open, even a
    read-only one: rocksdict's behaviour, not ours)."""
    return {
        str(p): p.stat().st_mtime_ns
        for p in path.rglob("*")
        if p.is_file() and p.name != "rocksdict-config.json"
    }


def test_verify_passes_a_whole_directory_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build(path, n=500)
    with open_db(path) as db:
        db.create_snapshot("c")
    before = listing(path)
    code, text = verify(path)
    assert code == 0, text
    assert "0 damaged" in text and "postings" in text and "kv" in text and "snapshots" in text
    assert listing(path) == before  # read-only
    out = CliRunner().invoke(main, ["inspect", str(path), "--verify", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["ok"] is True


def test_verify_names_each_damaged_file_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build(path, n=500)
    with open_db(path) as db:
        snap = db.create_snapshot("c").name
    pf = posting_file(path)
    with open(pf, "r+b") as f:  # a byte inside the first block after the header page
        f.seek(4096 + 200)
        b = f.read(1)
        f.seek(4096 + 200)
        f.write(bytes([b[0] ^ 1]))
    rows = next((path / "snapshots" / "c" / snap).glob("rows.bin"))
    with open(rows, "ab") as f:
        f.write(b"x")
    sst = max((path / "kv").glob("*.sst"), key=lambda p: p.stat().st_size)
    os.truncate(sst, sst.stat().st_size // 2)
    code, text = verify(path)
    assert code == 1, text
    damaged = [line for line in text.splitlines() if line.startswith("DAMAGED")]
    assert any(snap in line for line in damaged), text
    assert any("kv" in line for line in damaged), text
    assert any("postings" in line and "CRC" in line for line in damaged), text


def documents(path: Path) -> None:
    """A data directory with a trained, an untrained and a multi-tenant document collection
    (each checkpointed) and a dense one."""
    rng = np.random.default_rng(4)

    def docs(n: int) -> list[np.ndarray]:
        return [rng.standard_normal((int(rng.integers(3, 9)), 8)).astype(np.float32)
                for _ in range(n)]  # fmt: skip

    with open_db(path) as db:
        db.create_collection("trained", dim=8, kind="multivector")
        db.upsert_documents("trained", list(range(300)), docs(300))
        db.optimize("trained")
        db.create_collection("raw", dim=8, kind="multivector")
        db.upsert_documents("raw", list(range(20)), docs(20))
        db.optimize("raw")
        db.create_collection("shared", dim=8, kind="multivector", multi_tenant=True)
        db.create_tenant("shared", "acme")
        db.upsert_documents("shared", list(range(50)), docs(50), tenant="acme")
        db.optimize("shared")
        db.create_collection("dense", dim=8, metric="l2", index="spann")
        db.upsert("dense", list(range(300)), rng.standard_normal((300, 8)).astype(np.float32))
        db.optimize("dense")


def test_verify_passes_document_collections(tmp_path: Path) -> None:
    """Document indexes are checked as document indexes: a whole directory holding them is
    0 damaged, exit 0 (each was reported DAMAGED as a SPANN manifest of the wrong magic)."""
    path = tmp_path / "db"
    documents(path)
    code, text = verify(path)
    assert code == 0, text
    assert "0 damaged" in text and "raw.1.bin" in text and "state" in text


def test_verify_names_a_damaged_document_index_file(tmp_path: Path) -> None:
    """A cut raw row file and a flipped byte in a state file are named, exit 1."""
    path = tmp_path / "db"
    documents(path)
    with open_db(path) as db:
        cids = {c: db.collections[c].core.directory for c in ("trained", "raw")}
    raw = next(cids["raw"].glob("raw.*.bin"))
    os.truncate(raw, raw.stat().st_size - 8 * 4)  # the last row's bytes
    state = next(cids["trained"].glob("state.*.bin"))
    with open(state, "r+b") as f:
        f.seek(state.stat().st_size - 10)
        b = f.read(1)
        f.seek(state.stat().st_size - 10)
        f.write(bytes([b[0] ^ 1]))
    code, text = verify(path)
    assert code == 1, text
    damaged = [line for line in text.splitlines() if line.startswith("DAMAGED")]
    assert len(damaged) == 2, text
    assert any(raw.name in line and "rows" in line for line in damaged), text
    assert any(state.name in line and "CRC" in line for line in damaged), text


def test_a_newer_data_format_is_named_not_described(tmp_path: Path) -> None:
    """A directory a newer vecdb wrote (data format 2) is not described as if this build
    could read it: one line naming the format, exit 1, nothing written."""
    path = tmp_path / "db"
    build(path, n=100)
    body = read_manifest(path / "MANIFEST.json")
    write_manifest(path / "MANIFEST.json", {**body, "data_format": 2})
    before = listing(path)
    out = CliRunner().invoke(main, ["inspect", str(path)])
    assert out.exit_code == 1, out.output
    assert "data format 2 is not supported" in out.output and "Traceback" not in out.output
    code, text = verify(path)
    assert code == 1 and "data format 2 is not supported" in text, text
    assert listing(path) == before
