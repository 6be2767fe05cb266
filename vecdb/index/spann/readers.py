"""The two readers of a posting file behind one interface (moved out of `postings`).

`MmapReader` (warm): zero-copy uint8/int64/float32 views of an mmap of the whole file.
`DirectReader` (cold): O_DIRECT reads of a query's blocks submitted together to a thread
pool. Neither checks what it reads: the search path checks every block it scans
(`blockcheck`). Owns the map and the read descriptor, nothing else.
"""

from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.spann.space import PAGE

if TYPE_CHECKING:
    from vecdb.index.spann.postings import PostingFile

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


class MmapReader:
    """Warm reads: zero-copy uint8/int64/float32 views of an mmap of the whole file."""

    def __init__(self, file: PostingFile) -> None:
        self.file = file
        self.mapped = 0
        self.refresh()

    def refresh(self) -> None:
        """Remap after the file grew (old views stay valid until dropped). The worker may
        cut the file's free tail meanwhile (`_shrink`), so the map never reaches past the
        file's size as it is now (a map longer than the file is refused); everything a
        table names lies below both."""
        if self.file.capacity != self.mapped:
            for _ in range(8):
                size = min(self.file.capacity, os.fstat(self.file.fd).st_size)
                try:
                    mm = mmap.mmap(self.file.fd, size, prot=mmap.PROT_READ)
                    break
                except ValueError:  # cut between fstat and mmap: measure again
                    continue
            else:
                raise FormatError(f"{self.file.path}: the posting file keeps shrinking")
            mm.madvise(mmap.MADV_RANDOM)
            self.mm = mm
            u8: U8 = np.frombuffer(self.mm, dtype=np.uint8)
            # made once per map, not per search (a view of the map is three numpy objects)
            self._views = (u8, u8.view(np.int64), u8.view(np.float32), u8.view(np.uint16))
            self.u8 = u8
            self.mapped = size  # shorter than the capacity while it grows: remap next time

    def views(self) -> tuple[U8, I64, F32, npt.NDArray[np.uint16]]:
        """uint8 / int64 / float32 / uint16 views of the whole map (as of the last refresh)."""
        return self._views


class DirectReader:
    """Cold reads: each block's pages read with O_DIRECT, all of a query's reads submitted at
    once to a thread pool (preadv releases the GIL); falls back to buffered reads where the
    filesystem refuses O_DIRECT (tmpfs)."""

    def __init__(self, file: PostingFile, threads: int = 16) -> None:
        self.file = file
        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        try:
            self.fd = os.open(file.path, flags)
            self.direct = flags != os.O_RDONLY
        except OSError:
            self.fd, self.direct = os.open(file.path, os.O_RDONLY), False
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spann-io")

    def read(
        self, offsets: npt.NDArray[np.int64], nbytes: npt.NDArray[np.int64]
    ) -> tuple[U8, npt.NDArray[np.int64], int]:
        """Read blocks into one aligned buffer; return it, the blocks' offsets in it, and
        the number of bytes read from the device (whole pages)."""
        lo = offsets // PAGE * PAGE
        hi = -(-(offsets + nbytes) // PAGE) * PAGE
        lens = hi - lo
        at = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=at[1:])
        total = int(at[-1])
        buf = mmap.mmap(-1, max(total, PAGE))  # anonymous maps are page-aligned
        view = memoryview(buf)

        def one(i: int) -> int:
            return os.preadv(self.fd, [view[at[i] : at[i + 1]]], int(lo[i]))

        for n in self.pool.map(one, range(len(lens))):
            if n <= 0:
                raise FormatError(f"{self.file.path}: short read")
        u8 = np.frombuffer(buf, dtype=np.uint8)
        return u8, at[:-1] + (offsets - lo), total

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        os.close(self.fd)
