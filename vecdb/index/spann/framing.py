"""Magic + format version headers and length + CRC32 framed sections for SPANN's files.

Every file the SPANN index writes starts with an 8-byte magic and a uint32 format version; an
unknown version is a `FormatError` naming the file, the found and the supported versions.
Small whole files (manifest, head graph, state arrays) are a header followed by sections, each
`[u64 length][u32 crc32][u32 zero]` + payload, published by rename (tmp, fsync, `os.replace`,
fsync of the directory). This module owns only bytes and files, never index logic.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from vecdb.errors import FormatError

HEADER = struct.Struct("<8sII")  # magic, format version, reserved
SECTION = struct.Struct("<QII")  # payload length, crc32, reserved
TMP_SUFFIX = ".tmp"


def pack_header(magic: bytes, version: int) -> bytes:
    """The 16-byte header every file starts with."""
    return HEADER.pack(magic, version, 0)


def check_header(data: bytes, magic: bytes, supported: int, path: Path) -> int:
    """Verify magic and version of `data` (a file's first bytes); return the version."""
    if len(data) < HEADER.size:
        raise FormatError(f"{path}: file too short ({len(data)} bytes) for a header")
    found_magic, version, _ = HEADER.unpack_from(data, 0)
    if found_magic != magic:
        raise FormatError(f"{path}: bad magic {found_magic!r}, expected {magic!r}")
    if version != supported:
        raise FormatError(
            f"{path}: unsupported format version {version}, this build supports {supported}"
        )
    return int(version)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes | Sequence[bytes]) -> None:
    """Publish `data` at `path` by rename: write tmp, fsync, replace, fsync the directory."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_sections(path: Path, magic: bytes, version: int, sections: Sequence[bytes]) -> int:
    """Write a framed multi-section file atomically; return its size in bytes."""
    parts: list[bytes] = [pack_header(magic, version)]
    for payload in sections:
        parts.append(SECTION.pack(len(payload), zlib.crc32(payload), 0))
        parts.append(bytes(payload))
    write_file_atomic(path, parts)
    return sum(len(p) for p in parts)


def read_sections(path: Path, magic: bytes, supported: int) -> list[bytes]:
    """Read a framed file, verifying header, lengths and every section's CRC32."""
    data = path.read_bytes()
    check_header(data, magic, supported, path)
    out: list[bytes] = []
    pos = HEADER.size
    while pos < len(data):
        if pos + SECTION.size > len(data):
            raise FormatError(f"{path}: torn section header at byte {pos}")
        length, crc, _ = SECTION.unpack_from(data, pos)
        pos += SECTION.size
        payload = data[pos : pos + length]
        if len(payload) != length:
            raise FormatError(f"{path}: torn section at byte {pos} ({len(payload)}/{length})")
        if zlib.crc32(payload) != crc:
            raise FormatError(f"{path}: CRC mismatch in section at byte {pos}")
        out.append(payload)
        pos += length
    return out
