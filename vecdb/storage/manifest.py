"""Small JSON documents published atomically: the data directory's manifest and friends.

Owns `write_json_atomic` (tmp + fsync + rename + fsync dir) and the manifest format
(magic, format version, CRC32 of the body). An unknown version or a bad checksum is a clear
`FormatError` naming the file. Must not know what the body means.
"""

from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path
from typing import Any

from vecdb.errors import FormatError, os_error

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
    """Publish `data` at `path` by rename: readers see the old file or the new, never a mix.
    Any failure is a vecdb error naming the file (`DiskFull` for ENOSPC); the tmp file is
    removed and `path` keeps its old content."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, f"writing {path}") from exc


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
    except FileNotFoundError:
        raise FormatError(f"{path}: file is missing") from None
    except OSError as exc:
        raise FormatError(f"{path}: unreadable ({exc.strerror or exc})") from exc
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
