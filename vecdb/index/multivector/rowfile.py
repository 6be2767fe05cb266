"""Append-only files of fixed-width token rows, doc-major, read through a page-aligned mmap.

This module owns the layout of the raw float32 store and of the int8 / float16 rerank tier:
a 16-byte header (8-byte magic, uint32 format version, uint32 row width in bytes), zero
padding to 4 KiB, then rows back to back, so a document's tokens are one contiguous range
starting on the data page grid. Rows are appended with `append` and made durable with
`sync`; the durable row count lives in the index manifest, and `open` truncates anything past
it (an append a crash interrupted). `rows(lo, hi)` returns a view of the mapped rows (zero
copy; the page cache serves repeated reads). No index logic.
"""

from __future__ import annotations

import mmap
import os
import struct
import weakref
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.kernels.maxsim import gather_rows

PAGE = 4096
HEADER = struct.Struct("<8sII")  # magic, format version, row width in bytes
MAGIC, VERSION = b"VDBMVROW", 1
WRITE_BYTES = 1 << 30  # bytes one pwrite of `append` is asked to write


class RowFile:
    """One append-only row file."""

    def __init__(self, path: Path, dtype: npt.DTypeLike, cols: int, rows: int) -> None:
        self.path = path  # the file
        self.dtype = np.dtype(dtype)  # element type of a row
        self.cols = cols  # elements per row
        self.width = self.dtype.itemsize * cols  # bytes per row
        self.count = rows  # rows written (durable after `sync`)
        self._map: mmap.mmap | None = None  # current mapping (remapped after appends)
        self._mapped = 0  # rows the mapping covers
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        # The descriptor is closed by `close`, or else once the last holder lets go: a
        # retired store may still be read by searches holding the view it belonged to.
        self._release = weakref.finalize(self, os.close, self._fd)
        self._release.atexit = False  # the database's close at exit still uses it
        size = os.fstat(self._fd).st_size
        if size == 0:
            os.pwrite(self._fd, HEADER.pack(MAGIC, VERSION, self.width).ljust(PAGE, b"\0"), 0)
        else:
            head = os.pread(self._fd, HEADER.size, 0)
            magic, version, width = HEADER.unpack(head) if len(head) == HEADER.size else (b"", 0, 0)
            if magic != MAGIC:
                raise FormatError(f"{path}: bad magic {magic!r}, expected {MAGIC!r}")
            if version != VERSION:
                raise FormatError(
                    f"{path}: unsupported format version {version}, this build supports {VERSION}"
                )
            if width != self.width:
                raise FormatError(f"{path}: row width {width} bytes, expected {self.width}")
            if size < PAGE + rows * self.width:
                raise FormatError(f"{path}: holds fewer than the {rows} rows the manifest names")
        os.ftruncate(self._fd, PAGE + rows * self.width)

    def append(self, rows: npt.NDArray[np.generic]) -> int:
        """Write rows at the end; returns the index of the first."""
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        first = self.count
        if len(data):
            # pwrite may write less than asked (Linux: at most ~2 GiB a call): loop to the end
            view = data.data.cast("B")
            at, done = PAGE + first * self.width, 0
            while done < len(view):
                done += os.pwrite(self._fd, view[done : done + WRITE_BYTES], at + done)
            self.count += len(data)
        return first

    def sync(self) -> None:
        os.fsync(self._fd)

    def rows(self, lo: int, hi: int) -> npt.NDArray[np.generic]:
        """Rows [lo, hi) as an array view of the mapping (no copy)."""
        if hi > self._mapped:
            # The old mapping is dropped, not closed: searches may still hold views of it.
            length = PAGE + self.count * self.width
            self._map = mmap.mmap(self._fd, length, access=mmap.ACCESS_READ)
            self._mapped = self.count
        if hi <= lo or self._map is None:
            return np.empty((0, self.cols), self.dtype)
        return np.frombuffer(
            self._map, self.dtype, (hi - lo) * self.cols, PAGE + lo * self.width
        ).reshape(hi - lo, self.cols)

    def gather(
        self, offsets: npt.NDArray[np.int64], docs: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.int64]]:
        """The rows of the given documents, back to back, and their local offsets."""
        return gather_rows(self.rows(0, self.count), offsets, docs)

    def disk_bytes(self) -> int:
        return PAGE + self.count * self.width

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a caller still holds a view; the OS unmaps at exit
                pass
            self._map = None
        if self._fd >= 0:
            self._release()  # closes the descriptor, once
            self._fd = -1


class MemRows:
    """The same interface in memory, for an index without a directory."""

    def __init__(self, dtype: npt.DTypeLike, cols: int) -> None:
        self.dtype = np.dtype(dtype)
        self.cols = cols
        self.width = self.dtype.itemsize * cols
        self._data = np.empty((0, cols), self.dtype)
        self.count = 0

    def append(self, rows: npt.NDArray[np.generic]) -> int:
        first = self.count
        self._data = np.concatenate(
            [self._data, np.asarray(rows, self.dtype).reshape(-1, self.cols)]
        )
        self.count = len(self._data)
        return first

    def sync(self) -> None:
        return None

    def rows(self, lo: int, hi: int) -> npt.NDArray[np.generic]:
        return self._data[lo:hi]

    def gather(
        self, offsets: npt.NDArray[np.int64], docs: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.int64]]:
        return gather_rows(self._data, offsets, docs)

    def disk_bytes(self) -> int:
        return 0

    def close(self) -> None:
        return None
