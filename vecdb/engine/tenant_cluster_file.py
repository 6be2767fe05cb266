"""The clustered copies' files: one per tenant set, persisted, mapped read-only.

Owns the on-disk form of a clustered copy (`engine.tenant_clusters`): a file
`tenant_clusters/c-<hash of the set's key>.bin` in the collection's index directory, written
to a temporary name, synced and renamed over the old one (a reader never sees half a file),
read back through a read-only mapping (page cache like the posting file, not anonymous
memory). Layout, little-endian: the magic, then a header of int64s (format, dim, clusters,
rows, members, key length, the crc32 of everything after the header, the largest member
slot, and the build parameters: block size, replicas, closure x 1e6), the set's key
(tenant numbers), then the arrays: block offsets, row slots, distinct members (ascending),
centroid norms, centroids, row vectors.

The copy is derived state: RocksDB's access lists stay the source of truth. A file is used
only if its magic, format, dimension, key, sizes and checksum all match and its largest
member is a slot the collection has handed out (`next_slot`): slot -> vector never changes
and slots are never reused, so such a file is right for every later version of the set (the
caller's bitmap drops removed members, its delta adds new ones). Anything else (missing,
older format, torn, corrupt, another collection's) is ignored and the copy built again.
Snapshots copy only the index directory's own files, so these never travel in one.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("vecdb.engine")
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
SUBDIR = "tenant_clusters"  # under the collection's index directory
MAGIC = b"VDBTCLU\x00"
FORMAT = 1  # bumped when the layout changes: older files are rebuilt
HEADER = 12  # int64s after the magic
TMP = ".tmp"


@dataclass(frozen=True)
class Copy:
    """Read-only views of one clustered copy (in its mapped file, or the scratch store)."""

    serial: int  # which build (or load) this is: a delta belongs to one
    offsets: I64
    slots: I64
    members: I64
    cnorms: F32
    centroids: F32
    vectors: F32


def path_for(directory: Path, key: tuple[int, ...]) -> Path:
    """The file of the set `key` (its sorted tenant numbers) under `directory`."""
    digest = hashlib.blake2b(np.asarray(key, "<i8").tobytes(), digest_size=12).hexdigest()
    return directory / SUBDIR / f"c-{digest}.bin"


def parts_of(
    offsets: I64, slots: I64, members: I64, centroids: F32, vectors: F32
) -> list[npt.NDArray[Any]]:
    """The arrays of a copy in file order (centroid norms computed here)."""
    cents = np.ascontiguousarray(centroids, np.float32)
    cnorms = np.ascontiguousarray((cents**2).sum(1), np.float32)
    return [
        np.ascontiguousarray(offsets, "<i8"), np.ascontiguousarray(slots, "<i8"),
        np.ascontiguousarray(members, "<i8"), cnorms, cents,
        np.ascontiguousarray(vectors, np.float32),
    ]  # fmt: skip


def save(path: Path, key: tuple[int, ...], parts: list[npt.NDArray[Any]], params: tuple[int, int, float]) -> None:  # fmt: skip
    """Write the copy `parts` (`parts_of`) of set `key` to `path`, atomically."""
    offsets, _, members, _, cents, _ = parts
    n_c, dim = cents.shape if cents.ndim == 2 else (0, 0)
    body = [np.asarray(key, "<i8"), *parts]
    crc = 0
    for p in body:
        crc = zlib.crc32(p.data.cast("B"), crc)
    top = int(members[-1]) if len(members) else -1
    size, replicas, closure = params
    head = np.array([FORMAT, dim, n_c, len(parts[1]), len(members), len(key), crc, top,
                     size, replicas, round(closure * 1e6), 0], "<i8")  # fmt: skip
    assert len(head) == HEADER and len(offsets) == n_c + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        views: list[bytes | memoryview] = [MAGIC, head.data.cast("B")]
        views += [p.data.cast("B") for p in body if p.nbytes]
        want = sum(len(v) for v in views)
        done = os.writev(fd, views)
        if done != want:
            raise OSError(f"short write to {tmp}: {done} of {want} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load(path: Path, key: tuple[int, ...], dim: int, next_slot: int, serial: int) -> Copy | None:
    """The copy in `path` if it is whole and belongs to set `key` (see the module
    docstring), as views of a read-only mapping; None otherwise (the reason is logged)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < len(MAGIC) + 8 * HEADER:
                return _reject(path, "truncated")
            raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return _reject(path, str(exc))
    if raw[: len(MAGIC)] != MAGIC:
        return _reject(path, "not a clustered copy")
    head = np.frombuffer(raw, "<i8", HEADER, len(MAGIC))
    fmt, f_dim, n_c, rows, n_mem, n_key, crc, top = (int(v) for v in head[:8])
    if fmt != FORMAT or f_dim != dim or n_key != len(key):
        return _reject(path, f"format {fmt} / dim {f_dim} (want {FORMAT} / {dim})")
    counts = ((np.int64, n_key), (np.int64, n_c + 1), (np.int64, rows), (np.int64, n_mem),
              (np.float32, n_c), (np.float32, n_c * dim), (np.float32, rows * dim))  # fmt: skip
    at = start = len(MAGIC) + 8 * HEADER
    if min(n_c, rows, n_mem) < 0 or at + sum(np.dtype(t).itemsize * n for t, n in counts) != size:
        return _reject(path, "sizes do not match the header")
    arrays: list[npt.NDArray[Any]] = []
    for dtype, n in counts:
        arrays.append(np.frombuffer(raw, dtype, n, at))
        at += n * np.dtype(dtype).itemsize
    if zlib.crc32(memoryview(raw)[start:]) != crc:
        return _reject(path, "checksum mismatch")
    f_key, offsets, slots, members, cnorms, cents, vecs = arrays
    if tuple(int(v) for v in f_key) != tuple(key):
        return _reject(path, "another set's copy")
    if top >= next_slot or (n_mem and int(members[-1]) != top):
        return _reject(path, "members the collection never had")
    return Copy(serial, offsets, slots, members, cnorms, cents.reshape(n_c, dim),
                vecs.reshape(rows, dim))  # fmt: skip


def _reject(path: Path, why: str) -> Copy | None:
    """None, after logging why the file at `path` is not used."""
    log.warning("clustered copy ignored; it will be rebuilt",
                extra={"path": str(path), "reason": why})  # fmt: skip
    return None


def key_of(path: Path) -> tuple[int, ...] | None:
    """The set key written in the header of the copy file `path`; None for a file that is
    not a whole header of ours (its magic, format and key length checked, nothing else)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(len(MAGIC) + 8 * HEADER)
            if len(raw) < len(MAGIC) + 8 * HEADER or raw[: len(MAGIC)] != MAGIC:
                return None
            head = np.frombuffer(raw, "<i8", HEADER, len(MAGIC))
            n_key = int(head[5])
            if int(head[0]) != FORMAT or not 0 < n_key <= 1 << 20:
                return None
            key = np.frombuffer(f.read(8 * n_key), "<i8")
    except OSError:
        return None
    return tuple(int(t) for t in key) if len(key) == n_key else None


def on_disk(directory: Path) -> list[tuple[Path, int, float]]:
    """Every file under `directory`'s copies folder: (path, bytes, mtime), oldest first."""
    out: list[tuple[Path, int, float]] = []
    try:
        entries = list(os.scandir(directory / SUBDIR))
    except FileNotFoundError:
        return out
    for e in entries:
        try:
            st = e.stat()
        except FileNotFoundError:
            continue
        out.append((Path(e.path), st.st_size, st.st_mtime))
    return sorted(out, key=lambda t: t[2])


def remove(path: Path) -> None:
    """Delete a copy's file (and a leftover temporary), if there."""
    for p in (path, path.with_name(path.name + TMP)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
