"""Small JSON documents published atomically: the data directory's manifest and friends.

Owns `write_json_atomic` (tmp + fsync + rename + fsync dir) and the manifest format
(magic, format version, CRC32 of the body). An unknown version or a bad checksum is a clear
`FormatError` naming the file. Must not know what the body means.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from vecdb.errors import FormatError

MANIFEST_MAGIC = "vecdb-manifest"
MANIFEST_VERSION = 1
SUPPORTED_VERSIONS = (1,)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Publish `data` at `path` by rename: readers see the old file or the new, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _checksum(body: dict[str, Any]) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def write_manifest(path: Path, body: dict[str, Any]) -> None:
    doc = {
        "magic": MANIFEST_MAGIC,
        "format_version": MANIFEST_VERSION,
        "crc32": _checksum(body),
        "body": body,
    }
    write_bytes_atomic(path, json.dumps(doc, sort_keys=True, indent=1).encode())


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not a vecdb manifest ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("magic") != MANIFEST_MAGIC:
        raise FormatError(f"{path}: bad magic, expected {MANIFEST_MAGIC!r}")
    version = doc.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"{path}: format version {version} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    body = doc.get("body")
    if not isinstance(body, dict) or doc.get("crc32") != _checksum(body):
        raise FormatError(f"{path}: checksum mismatch, the manifest is corrupt")
    return body


def remove_stale_tmp(directory: Path) -> list[Path]:
    """Delete `*.tmp` leftovers of interrupted publishes; returns what was removed."""
    removed = []
    for tmp in directory.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
