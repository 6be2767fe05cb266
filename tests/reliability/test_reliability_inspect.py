"""`vecdb inspect --verify`: one line per file checked, exit 0 when everything is whole and
1 naming the file when something is damaged (a flipped posting block, a cut RocksDB table
file, a snapshot file that no longer matches its sha256). Never writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner
from reliability_data import build, open_db, posting_file

from vecdb.cli.main import main


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
