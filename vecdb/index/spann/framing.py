"""Magic + format version headers and length + CRC32 framed sections for SPANN's files.

Every file the SPANN index writes starts with an 8-byte magic and a uint32 format version; an
unknown version is a `FormatError` naming the file, the found and the supported versions.
Small whole files (manifest, head graph, state arrays) are a header followed by sections, each
`[u64 length][u32 crc32][u32 zero]` + payload, published by rename (tmp, fsync, `os.replace`,
fsync of the directory). Every write and fsync of the index's files goes through
`pwrite_all` / `fsync_file`: a short write is continued, a write that makes no progress and
every OSError become a vecdb error naming the file (`DiskFull` for ENOSPC, else
`StorageError`), so no failed write is ever taken for a done one. Tests put a fault injector
in `faults` (short writes, EIO, ENOSPC, dropped unsynced pages: tests/reliability). This
module owns only bytes and files, never index logic.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vecdb.errors import FormatError, StorageError, VecdbError, os_error

HEADER = struct.Struct("<8sII")  # magic, format version, reserved
SECTION = struct.Struct("<QII")  # payload length, crc32, reserved
TMP_SUFFIX = ".tmp"


class FileFaults(Protocol):
    """What a test's fault injector replaces: the two system calls index files are written
    with (it may write part, raise OSError, or remember what a crash would drop)."""

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int: ...

    def fsync(self, fd: int) -> None: ...


faults: FileFaults | None = None  # None outside fault-injection tests


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int, path: Path) -> None:
    """Write all of `data` at `offset` (continuing short writes) or raise naming `path`."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        try:
            if faults is None:
                n = os.pwrite(fd, view[done:], offset + done)
            else:
                n = faults.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            raise os_error(exc, f"writing {path} at byte {offset + done}") from exc
        if n <= 0:
            raise StorageError(f"writing {path} at byte {offset + done}: no progress ({n})")
        done += n


def fsync_file(fd: int, path: Path) -> None:
    """fsync `fd` or raise naming `path` (after a failed fsync the page cache may have
    dropped the data: the caller must not publish anything that relies on it)."""
    try:
        if faults is None:
            os.fsync(fd)
        else:
            faults.fsync(fd)
    except OSError as exc:
        raise os_error(exc, f"fsync of {path}") from exc


class Poisonable(Protocol):
    poisoned: str  # why the file may no longer be published ("" if it may)


def sync_or_poison(owner: Poisonable, fd: int, path: Path) -> None:
    """fsync `fd`; after one failure never again: the page cache may have dropped what
    failed to reach the disk, so nothing written before may be published (`owner.poisoned`
    says why, and every later call raises)."""
    if owner.poisoned:
        raise FormatError(f"{path}: {owner.poisoned}; the index must be rebuilt")
    try:
        fsync_file(fd, path)
    except VecdbError as exc:
        owner.poisoned = f"an fsync failed earlier ({exc.message})"
        raise


def pack_header(magic: bytes, version: int) -> bytes:
    """The 16-byte header every file starts with."""
    return HEADER.pack(magic, version, 0)


def check_header(data: bytes, magic: bytes, supported: int | tuple[int, ...], path: Path) -> int:
    """Verify magic and version of `data` (a file's first bytes) against the supported
    version (or versions); return the version found."""
    if len(data) < HEADER.size:
        raise FormatError(f"{path}: file too short ({len(data)} bytes) for a header")
    found_magic, version, _ = HEADER.unpack_from(data, 0)
    if found_magic != magic:
        raise FormatError(f"{path}: bad magic {found_magic!r}, expected {magic!r}")
    versions = supported if isinstance(supported, tuple) else (supported,)
    if version not in versions:
        names = " or ".join(str(v) for v in versions)
        raise FormatError(
            f"{path}: unsupported format version {version}, this build supports {names}"
        )
    return int(version)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise os_error(exc, f"opening directory {directory}") from exc
    try:
        fsync_file(fd, directory)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes | Sequence[bytes]) -> None:
    """Publish `data` at `path` by rename: write tmp, fsync, replace, fsync the directory."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise os_error(exc, f"creating {tmp}") from exc
    try:
        pos = 0
        for part in parts:
            pwrite_all(fd, part, pos, tmp)
            pos += len(part)
        fsync_file(fd, tmp)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error(exc, f"renaming {tmp} to {path.name}") from exc
    fsync_dir(path.parent)


def write_sections(path: Path, magic: bytes, version: int, sections: Sequence[bytes]) -> int:
    """Write a framed multi-section file atomically; return its size in bytes."""
    parts: list[bytes] = [pack_header(magic, version)]
    for payload in sections:
        parts.append(SECTION.pack(len(payload), zlib.crc32(payload), 0))
        parts.append(bytes(payload))
    write_file_atomic(path, parts)
    return sum(len(p) for p in parts)


def read_sections(path: Path, magic: bytes, supported: int | tuple[int, ...]) -> list[bytes]:
    """Read a framed file, verifying header, lengths and every section's CRC32."""
    return read_versioned(path, magic, supported)[1]


def read_versioned(
    path: Path, magic: bytes, supported: int | tuple[int, ...]
) -> tuple[int, list[bytes]]:
    """`read_sections`, with the file's format version (one of `supported`)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: file is missing") from None
    except OSError as exc:
        raise FormatError(f"{path}: unreadable ({exc.strerror or exc})") from exc
    version = check_header(data, magic, supported, path)
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
    return version, out
