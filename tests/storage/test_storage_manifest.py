"""Manifests are published by rename, carry magic + version + CRC, and fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vecdb.engine import Database
from vecdb.errors import FormatError
from vecdb.storage.manifest import read_manifest, write_bytes_atomic, write_manifest


def test_manifest_round_trip(tmp_path: Path) -> None:
    """What is written is what is read back."""
    write_manifest(tmp_path / "m.json", {"a": 1, "b": [1, 2]})
    assert read_manifest(tmp_path / "m.json") == {"a": 1, "b": [1, 2]}


def test_interrupted_write_leaves_previous_manifest(tmp_path: Path) -> None:
    """A crash before the rename leaves only a .tmp; readers still see the old manifest."""
    path = tmp_path / "m.json"
    write_manifest(path, {"generation": 1})
    # Simulate the crash: the new version was half-written to the tmp file, never renamed.
    (tmp_path / "m.json.tmp").write_bytes(b'{"magic": "vecdb-manifest", "form')
    assert read_manifest(path) == {"generation": 1}


def test_database_open_removes_stale_tmp(tmp_path: Path) -> None:
    """Opening a data directory deletes leftovers of interrupted publishes."""
    Database(tmp_path).close()
    stale = tmp_path / "MANIFEST.json.tmp"
    stale.write_bytes(b"garbage")
    Database(tmp_path).close()
    assert not stale.exists()


def test_unknown_version_names_file_found_and_supported(tmp_path: Path) -> None:
    """A manifest from a newer vecdb is refused with both versions in the message."""
    path = tmp_path / "m.json"
    write_manifest(path, {"x": 1})
    doc = json.loads(path.read_text())
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError) as err:
        read_manifest(path)
    text = str(err.value)
    assert str(path) in text and "99" in text and "supported: 1" in text


def test_bad_magic_and_checksum_are_detected(tmp_path: Path) -> None:
    """A foreign JSON file and a flipped body byte both fail with FormatError."""
    foreign = tmp_path / "f.json"
    foreign.write_text('{"hello": 1}')
    with pytest.raises(FormatError, match="bad magic"):
        read_manifest(foreign)
    path = tmp_path / "m.json"
    write_manifest(path, {"count": 12345})
    path.write_text(path.read_text().replace("12345", "12346"))
    with pytest.raises(FormatError, match="checksum"):
        read_manifest(path)


def test_truncated_manifest_is_detected(tmp_path: Path) -> None:
    """A torn manifest (cut at any byte) is reported, never half-read."""
    path = tmp_path / "m.json"
    write_manifest(path, {"k": "v" * 50})
    full = path.read_bytes()
    for cut in range(0, len(full) - 1, 7):
        write_bytes_atomic(path, full[:cut])
        with pytest.raises(FormatError):
            read_manifest(path)
