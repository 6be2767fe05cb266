"""The files of a collection snapshot: layout, row format, manifest, checks and listing.

A snapshot is a directory `<data>/snapshots/<collection>/<snapshot>/` holding
- `rows.bin`: the collection's RocksDB rows, re-keyable (see `RowWriter`): a header
  (magic `VDBSNAPR`, format version) then frames of msgpack rows, each frame with its length
  and CRC32;
- `index/`: byte copies of the index's files at its last checkpoint;
- `SNAPSHOT.json`: the manifest (collection configuration, sequence, time, and the size and
  sha256 of every other file), published with magic, version and CRC
  (`vecdb.storage.manifest`);
- `COMPLETE`: the completion marker, holding the manifest's sha256.
It is written under `<snapshot>.tmp/` and renamed into place once whole, so an interrupted
snapshot is never listed; leftovers are removed when the database opens (`cleanup`), a
published snapshot that cannot be read never is (`damaged`). Owns no locking and knows nothing of collections beyond the configuration it stores.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from vecdb import diskspace
from vecdb.errors import DataLoss, DiskFull, FormatError, InvalidArgument, NotFound
from vecdb.storage.manifest import fsync_dir, read_manifest, write_manifest
from vecdb.types import SnapshotInfo

SNAPSHOT_FORMAT = 1  # layout version of a snapshot directory
SNAPSHOTS = "snapshots"  # under the data directory
MANIFEST = "SNAPSHOT.json"
COMPLETE = "COMPLETE"
ROWS = "rows.bin"
INDEX = "index"
TMP = ".tmp"  # suffix of a snapshot being written or deleted: never listed
ROWS_MAGIC, ROWS_VERSION = b"VDBSNAPR", 1
_HEAD = struct.Struct("<8sI")  # magic, version
_FRAME = struct.Struct("<II")  # payload length, CRC32 of the payload
FRAME_BYTES = 4 * 2**20  # rows are flushed as one frame once they pass this many bytes
_CHUNK = 2**20  # bytes per read when hashing or copying
MAX_SNAPSHOT_NAME = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_snapshot_name(name: object) -> str:
    """A snapshot name: 1-128 characters from A-Z a-z 0-9 _ . - starting with a letter or
    digit and not ending in `.tmp` (safe as a path component)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.endswith(TMP):
        raise InvalidArgument(
            f"snapshot name {str(name)[:80]!r} is invalid: use 1-{MAX_SNAPSHOT_NAME} characters "
            "from A-Z a-z 0-9 _ . - starting with a letter or digit, not ending in .tmp",
            field="snapshot",
        )
    return name


def collection_root(data_dir: Path, collection: str) -> Path:
    """Where the snapshots of `collection` live (they outlive the collection)."""
    return data_dir / SNAPSHOTS / collection


def free_bytes(path: Path) -> int:
    """Free bytes of the file system holding `path` (a module function so that a test can
    stand in for a full disk)."""
    return diskspace.free_bytes(path)


# -- rows -----------------------------------------------------------------------------------


class RowWriter:
    """Writes `rows.bin`. A row is (column family, key head, key tail, value): its key is
    head + collection prefix + tail, so rows can be restored under another collection id."""

    def __init__(self, path: Path, keep: int = 0) -> None:
        self.path = path
        self.keep = keep  # bytes the disk must keep free: a frame that would eat them fails
        self._file = open(path, "wb")  # noqa: SIM115 - closed by `close`
        self._file.write(_HEAD.pack(ROWS_MAGIC, ROWS_VERSION))
        self._rows: list[tuple[str, bytes, bytes, bytes]] = []  # the frame being filled
        self._bytes = 0
        self.count = 0  # rows written

    def add(self, cf: str, head: bytes, tail: bytes, value: bytes) -> None:
        self._rows.append((cf, head, tail, value))
        self._bytes += len(head) + len(tail) + len(value) + 16
        self.count += 1
        if self._bytes >= FRAME_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        payload = msgpack.packb(self._rows, use_bin_type=True)
        ensure_room(self.path, len(payload) + _FRAME.size, self.keep)
        self._file.write(_FRAME.pack(len(payload), zlib.crc32(payload)))
        self._file.write(payload)
        self._rows, self._bytes = [], 0

    def close(self) -> None:
        self._flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_rows(path: Path) -> Iterator[list[tuple[str, bytes, bytes, bytes]]]:
    """The rows of `rows.bin`, a frame at a time; `FormatError` naming the file otherwise."""
    with open(path, "rb") as f:
        head = f.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise FormatError(f"{path}: too short for a snapshot rows file")
        magic, version = _HEAD.unpack(head)
        if magic != ROWS_MAGIC:
            raise FormatError(f"{path}: bad magic {magic!r}, expected {ROWS_MAGIC!r}")
        if version != ROWS_VERSION:
            raise FormatError(
                f"{path}: rows format version {version} is not supported "
                f"(supported: {ROWS_VERSION})"
            )
        while True:
            frame = f.read(_FRAME.size)
            if not frame:
                return
            if len(frame) != _FRAME.size:
                raise FormatError(f"{path}: torn frame header")
            length, crc = _FRAME.unpack(frame)
            payload = f.read(length)
            if len(payload) != length or zlib.crc32(payload) != crc:
                raise FormatError(f"{path}: torn or corrupt frame")
            rows = msgpack.unpackb(payload, raw=False)
            yield [(str(cf), bytes(h), bytes(t), bytes(v)) for cf, h, t, v in rows]


# -- files, hashes, publish ---------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_room(path: Path, nbytes: int, keep: int) -> None:
    """`DiskFull` unless writing `nbytes` to `path` leaves `keep` bytes free on its disk (a
    snapshot stops before it takes the room writes need; others may write meanwhile)."""
    free = free_bytes(path.parent)
    if free < nbytes + keep:
        raise DiskFull(
            f"not enough disk space for snapshot {path.parent}: {free / 2**20:.1f} MiB free, "
            f"{nbytes / 2**20:.1f} MiB more to write and {keep / 2**20:.0f} MiB must stay "
            "free for writes"
        )


def copy_hashed(src: Path, dst: Path, keep: int = 0) -> dict[str, Any]:
    """Copy `src` to `dst` (fsynced), leaving `keep` bytes free on the disk (`DiskFull`
    otherwise); return the copy's size and sha256."""
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        ensure_room(dst, os.fstat(fin.fileno()).st_size, keep)
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return {"bytes": size, "sha256": digest.hexdigest()}


def describe_file(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def publish(tmp: Path, final: Path, body: dict[str, Any]) -> None:
    """Write the manifest and the completion marker into `tmp`, then rename it to `final`
    (fsyncing the directories): the snapshot appears whole or not at all."""
    write_manifest(tmp / MANIFEST, body)
    marker = tmp / COMPLETE
    with open(marker, "w") as f:
        f.write(sha256_of(tmp / MANIFEST) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for sub in (tmp / INDEX, tmp):
        if sub.is_dir():
            fsync_dir(sub)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def read_snapshot(directory: Path) -> dict[str, Any]:
    """The manifest of the published snapshot in `directory`; `FormatError` naming what is
    wrong when its completion marker, its manifest or its format version is not one this
    build can use (a damaged snapshot, or one a newer vecdb wrote)."""
    marker, manifest = directory / COMPLETE, directory / MANIFEST
    try:
        want = marker.read_text().strip()
        got = sha256_of(manifest)
    except OSError as exc:
        raise FormatError(
            f"{directory}: {Path(exc.filename or marker).name} is unreadable "
            f"({exc.strerror or exc})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise FormatError(f"{marker}: not a completion marker ({exc})") from exc
    if want != got:
        raise FormatError(f"{marker}: does not match {MANIFEST} (sha256 {got[:12]}...)")
    body = read_manifest(manifest)
    version = body.get("snapshot_format")
    if version != SNAPSHOT_FORMAT:
        raise FormatError(
            f"{manifest}: snapshot format {version} is not supported by this vecdb "
            f"(supported: {SNAPSHOT_FORMAT})"
        )
    return body


def load(directory: Path) -> dict[str, Any] | None:
    """The manifest of a complete snapshot, or None if `directory` is not one (being written,
    interrupted, damaged, or of another format: `read_snapshot` says which)."""
    if directory.name.endswith(TMP) or not directory.is_dir():
        return None
    try:
        return read_snapshot(directory)
    except FormatError:
        return None


def existing(data_dir: Path, collection: str, snapshot: str) -> Path:
    """The directory of published snapshot `snapshot`, usable or not; `NotFound` if absent."""
    directory = collection_root(data_dir, collection) / snapshot
    if not directory.is_dir():
        raise NotFound(f"snapshot {snapshot!r} of collection {collection!r} does not exist")
    return directory


def find(data_dir: Path, collection: str, snapshot: str) -> tuple[Path, dict[str, Any]]:
    """The directory and manifest of a complete snapshot; `NotFound` if there is none by that
    name, `FormatError` (DataLoss) naming the problem if it cannot be used."""
    directory = existing(data_dir, collection, snapshot)
    try:
        return directory, read_snapshot(directory)
    except FormatError as exc:
        raise FormatError(
            f"snapshot {snapshot!r} of collection {collection!r} cannot be used: {exc.message} "
            "(its files are kept; delete_snapshot removes them)"
        ) from exc


def verify(directory: Path, body: dict[str, Any]) -> None:
    """Every file the manifest names has its recorded size and sha256; `DataLoss` naming
    the first that does not (nothing may be restored from such a snapshot)."""
    for rel, want in sorted(body["files"].items()):
        path = directory / rel
        try:
            got = describe_file(path)
        except OSError as exc:
            raise DataLoss(f"snapshot {directory.name!r}: {rel} is unreadable ({exc})") from exc
        if got != want:
            raise DataLoss(
                f"snapshot {directory.name!r}: {rel} does not match its manifest "
                f"(sha256 {got['sha256'][:12]}..., {got['bytes']} bytes; expected "
                f"{want['sha256'][:12]}..., {want['bytes']} bytes)"
            )


def info_of(body: dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(
        name=str(body["name"]),
        collection=str(body["collection"]),
        seq=int(body["seq"]),
        created=float(body["created"]),
        bytes=int(body["bytes"]),
    )


def list_complete(data_dir: Path, collection: str) -> list[SnapshotInfo]:
    """The complete snapshots of `collection`, oldest first."""
    root = collection_root(data_dir, collection)
    if not root.is_dir():
        return []
    found = [load(d) for d in root.iterdir()]
    infos = [info_of(b) for b in found if b is not None]
    return sorted(infos, key=lambda i: (i.seq, i.created, i.name))


def cleanup(data_dir: Path) -> list[Path]:
    """Remove what interrupted snapshots and deletions left (`*.tmp`: a snapshot is renamed
    into place only once whole, a deletion renames it away first) and directories holding
    nothing of a snapshot (neither manifest nor rows); returns what was removed. A published
    snapshot that cannot be read is damage, not a leftover: it is kept (see `damaged`), as
    is whatever else lies there. Only for the process that holds the data directory's lock."""
    removed: list[Path] = []
    top = data_dir / SNAPSHOTS
    if not top.is_dir():
        return removed
    for root in top.iterdir():
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry.name.endswith(TMP) or (
                entry.is_dir() and not (entry / MANIFEST).exists() and not (entry / ROWS).exists()
            ):
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
                removed.append(entry)
    return removed


def damaged(data_dir: Path) -> list[tuple[Path, str]]:
    """Published snapshots that cannot be used, with the reason (their manifests only are
    read: the files' sha256 are checked by a restore and by `vecdb inspect --verify`)."""
    top = data_dir / SNAPSHOTS
    found: list[tuple[Path, str]] = []
    for root in sorted(p for p in top.iterdir() if p.is_dir()) if top.is_dir() else []:
        for entry in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(TMP)):
            try:
                read_snapshot(entry)
            except FormatError as exc:
                found.append((entry, exc.message))
    return found
