"""Contiguous copies of small tenant sets (mini-postings): one read, exact.

Owns a scratch file of copies, one extent per slot set (a tenant, or a union of tenants):
the set's slots (int64) then its prepared vectors (float32, row-major), appended once and
read in place through a read-only mapping of the file. The copy is derived state, made on first use from the stored vectors
(one RocksDB multi-get). A slot's vector never changes (an upsert takes a new slot) and slots
are never reused, so a copy of slots S answers exactly for any set inside S: the caller
keeps the rows of the slots it asks for (slots revoked or deleted since the copy drop out),
patches in slots outside S (a grant, a new upsert) and rewrites a copy grown much larger
than its set (`engine.tenant_search.copied`): no change of a set ever needs to reach the
store, and no tenant's copy can serve a slot the caller did not ask for. The file is unlinked from the start (`TemporaryFile` in the index directory): it
never appears in snapshots or listings, costs page cache rather than anonymous memory, and
is gone after a crash, when copies are made again on demand. Dropped and replaced extents
are garbage; once garbage passes the live bytes (and `COMPACT_MIN`), every copy is dropped and
the file truncated (copies come back on their next query). Past `MAX_BYTES` of live copies
the least recently used are dropped. Does not search the index and holds no tenant state.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
COMPACT_MIN = 16 << 20  # garbage bytes below this never trigger a truncation
MAX_BYTES = 1 << 30  # live copy bytes kept at most (least recently used dropped beyond)


@dataclass(slots=True)
class Extent:
    """One set's copy in the file."""

    offset: int  # byte offset in the file
    count: int  # rows (slots found in the store when copied)
    size: int  # bytes of the extent
    tag: Hashable = None  # the caller's name for the state the copy is exact for (`tag`)

    def nbytes(self, dim: int) -> int:
        return self.size


class TenantStore:
    """Copies of slot sets by key (see the module docstring). Thread-safe."""

    def __init__(self, directory: Path | None, dim: int) -> None:
        self.dim = dim  # vector dimension
        self._directory = directory  # where the scratch file lives (None: the temp dir)
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # unlinked scratch
        self._map: mmap.mmap | None = None  # the file mapped read-only (see `_mapped`)
        self._end = 0  # bytes appended
        self._live = 0  # bytes of extents in use
        self._entries: OrderedDict[Hashable, Extent] = OrderedDict()  # LRU order
        # The arrays `read` returned per key, while its extent and the mapping stand (made
        # once: two `np.frombuffer` per query were a tenth of a small tenant's search)
        self._views: dict[Hashable, tuple[I64, F32]] = {}
        self._lock = threading.Lock()
        self.copies = 0  # copies made (misses), for stats and tests

    def read(self, key: Hashable) -> tuple[I64, F32] | None:
        """The copy of set `key` (its slots ascending, its prepared vectors: read-only views
        of the file's mapping, valid as long as they are referenced), or None. The same
        array objects while the extent and the mapping are unchanged."""
        with self._lock:
            ext = self._entries.get(key)
            return None if ext is None else self._read(key, ext)

    def tagged(self, key: Hashable, tag: Hashable) -> tuple[I64, F32] | None:
        """`read(key)` if the copy carries `tag` (see `tag`), else None."""
        with self._lock:
            ext = self._entries.get(key)
            if ext is None or ext.tag is None or ext.tag != tag:
                return None
            return self._read(key, ext)

    def _read(self, key: Hashable, ext: Extent) -> tuple[I64, F32]:
        self._entries.move_to_end(key)
        hit = self._views.get(key)
        if hit is not None:
            return hit
        offset, count = ext.offset, ext.count
        if count == 0:  # (a set whose members were all gone when copied)
            hit = np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        else:
            raw = self._mapped(offset + ext.nbytes(self.dim))
            slots = np.frombuffer(raw, np.int64, count, offset)
            vecs = np.frombuffer(raw, np.float32, count * self.dim, offset + 8 * count)
            hit = slots, vecs.reshape(count, self.dim)
        self._views[key] = hit
        return hit

    def tag(self, key: Hashable, tag: Hashable, slots: I64) -> None:
        """Name the state the copy of `key` is exact for (e.g. the set's version): `tagged`
        then answers without the caller comparing slots. Only if the copy's slots are still
        the array `slots` (the caller compared them); a rewrite of the copy drops the tag."""
        with self._lock:
            ext = self._entries.get(key)
            hit = self._views.get(key)
            if ext is not None and hit is not None and hit[0] is slots:
                ext.tag = tag

    def _mapped(self, end: int) -> mmap.mmap:
        """The file mapped read-only up to at least `end` (remapped after appends). Copies
        are read in place from the page cache: a `pread` into a fresh buffer per query left
        the allocator holding megabytes of freed heap (anonymous memory)."""
        if self._map is None or len(self._map) < end:
            self._map = mmap.mmap(self._file.fileno(), self._end, access=mmap.ACCESS_READ)
            self._views.clear()  # (views of the old mapping would keep it alive)
        return self._map

    def write(self, key: Hashable, slots: I64, vectors: F32) -> None:
        """Record the copy of set `key` (slots ascending; replacing any older copy)."""
        parts: list[npt.NDArray[Any]] = [
            np.ascontiguousarray(slots, np.int64),
            np.ascontiguousarray(vectors, np.float32),
        ]
        self.write_parts(key, parts, len(slots))

    def read_parts(self, key: Hashable) -> tuple[mmap.mmap, int, int] | None:
        """(the mapping, byte offset, count) of the extent of `key` written by `write_parts`
        (its arrays are read back by the writer, who knows their layout), or None."""
        with self._lock:
            ext = self._entries.get(key)
            if ext is None:
                return None
            self._entries.move_to_end(key)
            return self._mapped(ext.offset + ext.size), ext.offset, ext.count

    def write_parts(self, key: Hashable, parts: list[npt.NDArray[Any]], count: int) -> None:
        """Record the arrays `parts` (C-contiguous, each a multiple of 8 bytes, so the next
        is aligned) back to back as the extent of `key`; `count` is the caller's."""
        size = sum(p.nbytes for p in parts)  # written from the arrays: no joined copy
        with self._lock:
            self._drop(key)
            if self._end - self._live >= max(COMPACT_MIN, self._live):
                # A new file, not a truncation: readers may still hold views of the old
                # mapping (it keeps the unlinked file until the last view is gone).
                self._entries.clear()
                self._views.clear()
                self._file.close()
                self._file = tempfile.TemporaryFile(dir=self._directory)
                self._map = None
                self._end = self._live = 0
            offset = self._end
            views = [p.data.cast("B") for p in parts if p.nbytes]
            done = os.pwritev(self._file.fileno(), views, offset) if views else 0
            if done != size:
                raise OSError(f"short write to the tenant copy file: {done} of {size} bytes")
            self._end += size
            self._entries[key] = Extent(offset, count, size)
            self._live += size
            self.copies += 1
            while self._live > MAX_BYTES and len(self._entries) > 1:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        self._views.pop(key, None)
        ext = self._entries.pop(key, None)
        if ext is not None:
            self._live -= ext.nbytes(self.dim)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._views.clear()
            self._map = None  # (views still held keep their mapping until dropped)
            self._file.close()

    @property
    def live_bytes(self) -> int:
        return self._live

    def __len__(self) -> int:
        return len(self._entries)
