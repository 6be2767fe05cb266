"""Contiguous copies of small tenant sets (mini-postings): one read, exact.

Owns a scratch file of copies, one extent per slot set (a tenant, or a union of tenants):
the set's slots (int64) then its prepared vectors (float32, row-major), appended once and
read with one `pread`. The copy is derived state, made on first use from the stored vectors
(one RocksDB multi-get) and checked on every use against the caller's set: an entry is used
only while the caller passes the very `Visible` object it was made for (held weakly, so a
set the tenant layer dropped never matches again) and `changed` has not named one of its
tenants. The file is unlinked from the start (`TemporaryFile` in the index directory): it
never appears in snapshots or listings, costs page cache rather than anonymous memory, and
is gone after a crash, when copies are made again on demand. Dropped and replaced extents
are garbage; once garbage passes the live bytes (and `COMPACT_MIN`), every copy is dropped and
the file truncated (copies come back on their next query). Past `MAX_BYTES` of live copies
the least recently used are dropped. Does not search the index and holds no tenant state.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Visible

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
COMPACT_MIN = 16 << 20  # garbage bytes below this never trigger a truncation
MAX_BYTES = 1 << 30  # live copy bytes kept at most (least recently used dropped beyond)


@dataclass
class Extent:
    """One set's copy in the file."""

    token: weakref.ref[Visible]  # the caller's set object this copy was made for
    offset: int  # byte offset in the file
    count: int  # rows (slots found in the store when copied)

    def nbytes(self, dim: int) -> int:
        return self.count * (8 + 4 * dim)


class TenantStore:
    """Copies of slot sets by key (see the module docstring). Thread-safe."""

    def __init__(self, directory: Path | None, dim: int) -> None:
        self.dim = dim  # vector dimension
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # unlinked scratch
        self._end = 0  # bytes appended
        self._live = 0  # bytes of extents in use
        self._entries: OrderedDict[Hashable, Extent] = OrderedDict()  # LRU order
        self._lock = threading.Lock()
        self.copies = 0  # copies made (misses), for stats and tests

    def read(self, key: Hashable, token: Visible) -> tuple[I64, F32] | None:
        """The copy of the set `key` made for `token`, or None (absent or stale)."""
        with self._lock:
            ext = self._entries.get(key)
            if ext is None or ext.token() is not token:
                return None
            self._entries.move_to_end(key)
            offset, count = ext.offset, ext.count
            fd = self._file.fileno()
        raw = os.pread(fd, count * (8 + 4 * self.dim), offset) if count else b""
        slots = np.frombuffer(raw, np.int64, count)
        vecs = np.frombuffer(raw, np.float32, count * self.dim, 8 * count)
        return slots, vecs.reshape(count, self.dim)

    def write(self, key: Hashable, token: Visible, slots: I64, vectors: F32) -> None:
        """Record the copy of set `key` (replacing any older one) for `token`."""
        data = np.ascontiguousarray(slots, np.int64).tobytes()
        data += np.ascontiguousarray(vectors, np.float32).tobytes()
        with self._lock:
            self._drop(key)
            if self._end - self._live >= max(COMPACT_MIN, self._live):
                self._entries.clear()
                self._file.truncate(0)
                self._end = self._live = 0
            offset = self._end
            os.pwrite(self._file.fileno(), data, offset)
            self._end += len(data)
            self._entries[key] = Extent(weakref.ref(token), offset, len(slots))
            self._live += len(data)
            self.copies += 1
            while self._live > MAX_BYTES and len(self._entries) > 1:
                self._drop(next(iter(self._entries)))

    def forget(self, members: Iterable[int]) -> None:
        """Drop the copies of every set (a frozenset key) that includes one of `members`."""
        drop = set(members)
        with self._lock:
            for key in list(self._entries):
                if isinstance(key, frozenset) and key & drop:
                    self._drop(key)

    def _drop(self, key: Hashable) -> None:
        ext = self._entries.pop(key, None)
        if ext is not None:
            self._live -= ext.nbytes(self.dim)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._file.close()

    @property
    def live_bytes(self) -> int:
        return self._live

    def __len__(self) -> int:
        return len(self._entries)
