"""A bulk build's input written once, where its child process reads it.

A build in a child (`spann.child`) reads its vectors from a file. Written from an array the
engine had just filled (the buffer's rows, or the stored vectors read back for a rebuild),
that is a second full copy: 2.3 s for the 1.2 GB of a 200,000 x 1,536 rebuild on this
machine, with the array's anonymous memory held meanwhile. Instead the engine asks the index
for its input array first (`SpannIndex.build_input`) and fills that: `staged_rows` maps an
unnamed file (O_TMPFILE) in the index directory, so the rows go straight into page cache
pages the child maps through the inherited descriptor, and the parent holds file pages, not
anonymous memory, while the child builds.

An unnamed file has no name to leave behind: its blocks go back when the last descriptor or
mapping is gone, however the process ends. Its blocks are reserved when it is made
(`posix_fallocate`), so filling it cannot meet a full disk (a write fault into a shared
mapping that finds no block kills the process with SIGBUS). A filesystem without unnamed
files, or without room, gets None and the caller allocates as before.

`SpillFile` is the same kind of file for a write buffer that spills (`FlatIndex`): each chunk
is the range of one file at its rows' offset, so that when the buffer is gathered for its
first build the input is the file itself, mapped whole (the rows kept in memory written into
the hole left for them): no second copy of a spilled load, on disk or in page cache.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# The live staged mappings: the address of each one's first byte -> (descriptor, bytes)
_LIVE: dict[int, tuple[int, int]] = {}
_LOCK = threading.Lock()


def staged_rows(directory: Path, rows: int, dim: int) -> F32 | None:
    """A writable (rows, dim) float32 array backed by an unnamed file in `directory`, its
    blocks reserved; None when that cannot be made (no unnamed files on this filesystem,
    no room, nothing to hold)."""
    nbytes = 4 * rows * dim
    file = _unnamed(directory) if nbytes else None
    mapped = None if file is None else _reserved_map(file, 0, nbytes)
    if file is None or mapped is None:
        return None  # (a descriptor opened closes with its object)
    return _register(mapped[0], file, rows, dim)


def _unnamed(directory: Path) -> _Descriptor | None:
    """A new unnamed file (O_TMPFILE) in `directory`, or None (none on this filesystem)."""
    if not hasattr(os, "O_TMPFILE"):
        return None
    try:
        return _Descriptor(os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600))
    except OSError:
        return None


def _reserved_map(file: _Descriptor, lo: int, hi: int) -> tuple[mmap.mmap, int] | None:
    """Bytes [lo, hi) of `file`, their blocks reserved, mapped writable with their pages
    faulted in by one call (MAP_POPULATE), not one fault per page filled: (the mapping, the
    offset of `lo` in it, which starts on a page); None without room."""
    base = lo - lo % mmap.ALLOCATIONGRANULARITY
    try:
        os.posix_fallocate(file.fd, lo, hi - lo)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(file.fd, hi - base, flags, mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
    except OSError:
        return None
    return mm, lo - base


class _Descriptor:
    """An open descriptor, closed when the last holder of this object lets it go."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        weakref.finalize(self, os.close, fd)


def _register(mm: mmap.mmap, owner: _Descriptor, rows: int, dim: int) -> F32:
    """`mm`'s first (rows, dim) float32 rows, listed as a staged input (`staged_fd` finds
    `owner`'s descriptor) while the mapping lives; the mapping holds `owner` open."""
    out: F32 = np.frombuffer(mm, np.float32, count=rows * dim).reshape(rows, dim)
    addr = int(out.ctypes.data)
    with _LOCK:
        _LIVE[addr] = (owner.fd, len(mm))
    weakref.finalize(mm, _forget, addr, owner)  # the last view gone: the file goes
    return out


def _forget(addr: int, _owner: _Descriptor) -> None:
    """(The finalizer of a staged mapping, which holds `_owner` open until it runs.)"""
    with _LOCK:
        _LIVE.pop(addr, None)


class SpillFile:
    """A write buffer segment's rows on an unnamed file in `directory`, row r at byte
    4 * dim * r: `rows` maps a chunk's range (blocks reserved first), `gather` the whole
    file as a build's staged input. The file goes with this object and its mappings.
    Not thread-safe: its segment calls it under its own lock, or once sealed."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory, self.dim = directory, dim
        self._file: _Descriptor | None = None  # opened at the first chunk
        self._chunks: dict[int, F32] = {}  # start row -> the chunk mapped there (held, so
        # that no other array can take its address while this file may be asked about it)

    def rows(self, start: int, count: int) -> F32 | None:
        """A writable (count, dim) array over rows [start, start + count) of the file, its
        blocks reserved; None when the file cannot be made or grown (no room)."""
        if self._file is None:
            self._file = _unnamed(self.directory)
        row = 4 * self.dim
        mapped = None if self._file is None else _reserved_map(self._file, start * row,
                                                               (start + count) * row)  # fmt: skip
        if mapped is None:
            return None
        mm, at = mapped
        out: F32 = np.frombuffer(mm, np.float32, count * self.dim, at).reshape(count, self.dim)
        self._chunks[start] = out
        return out

    def restart(self) -> None:
        """Later rows go to a new unnamed file; this one is closed here and freed once the
        arrays mapped over it are gone (searches that began before may still read them)."""
        self._file, self._chunks = None, {}

    def gather(self, n: int, pieces: list[tuple[int, F32]]) -> F32 | None:
        """Rows [0, n) of the file as one staged input (`staged_fd` knows it), after writing
        into the file every piece (start row, rows) that is not one of its own chunks; the
        pieces must cover [0, n). None when there is no file or no room for the pieces."""
        if self._file is None or n == 0:
            return None
        fd, row = self._file.fd, 4 * self.dim
        try:
            for start, part in pieces:
                mine = self._chunks.get(start)
                if mine is not None and part.ctypes.data == mine.ctypes.data:
                    continue
                data = np.ascontiguousarray(part).data.cast("B")
                os.posix_fallocate(fd, start * row, len(data))
                done = 0
                while done < len(data):
                    done += os.pwrite(fd, data[done:], start * row + done)
            # not populated: its pages fault in as they are read, after the chunks' mappings
            # are gone (a page mapped twice counts twice in the process's RSS)
            mm = mmap.mmap(fd, n * row, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            return None
        self._chunks = {}  # the segment lets its chunks go for this mapping
        return _register(mm, self._file, n, self.dim)


def staged_fd(vectors: F32) -> int | None:
    """The descriptor of the staged file holding `vectors` as its first rows (a C-contiguous
    float32 view starting at a staged array's first byte), else None."""
    if vectors.dtype != np.float32 or not vectors.flags.c_contiguous or vectors.size == 0:
        return None
    with _LOCK:
        entry = _LIVE.get(int(vectors.ctypes.data))
    if entry is None or vectors.nbytes > entry[1]:
        return None
    return entry[0]


def open_staged(fd: int, rows: int, dim: int) -> F32:
    """(Child) the first `rows` rows of the staged file inherited as descriptor `fd`, mapped
    writable as the kernels were compiled for (a build never writes its input)."""
    return np.asarray(np.memmap(f"/proc/self/fd/{fd}", np.float32, "r+", shape=(rows, dim)))
