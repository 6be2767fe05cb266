"""The two readers of a posting file behind one interface (moved out of `postings`).

`MmapReader` (warm): zero-copy uint8/int64/float32 views of an mmap of the whole file.
`DirectReader` (cold): O_DIRECT reads of a query's blocks submitted together (one native-AIO
submit, else a thread pool). Neither checks what it reads: the search path checks every
block it scans (`blockcheck`). Owns the map and the read descriptor, nothing else.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.spann.aio import AioContext, AioPool, plan_reads
from vecdb.index.spann.space import PAGE
from vecdb.kernels.posting import SLOT_DTYPE

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
            self._views = (u8, u8.view(SLOT_DTYPE), u8.view(np.float32), u8.view(np.uint16))
            self.u8 = u8
            self.mapped = size  # shorter than the capacity while it grows: remap next time

    def views(self) -> tuple[U8, npt.NDArray[np.uint32], F32, npt.NDArray[np.uint16]]:
        """uint8 / uint32 (posting slots) / float32 / uint16 views of the whole map (as of
        the last refresh)."""
        return self._views

    def close(self) -> None:
        """Unmap now (the map holds a descriptor of its own: a retired posting file stayed
        open, on disk, until the collector freed this reader). Where a search still holds a
        view of the map, it stays mapped until that view is dropped."""
        mm = getattr(self, "mm", None)
        if mm is None:
            return
        del self._views, self.u8, self.mm  # our own views of it first
        self.mapped = 0
        try:
            mm.close()
        except BufferError:  # a view is still exported: the map goes when it does
            pass


class DirectReader:
    """Cold reads: each block's pages read with O_DIRECT, all of a query's reads submitted at
    once: with one native-AIO submit (`aio.AioPool`) where the system has it, else to a
    thread pool (preadv releases the GIL); falls back to buffered reads where the filesystem
    refuses O_DIRECT (tmpfs).

    Native AIO first (issue 12, helper C): a blocking O_DIRECT preadv costs ~20 us of CPU
    here (the thread sleeps and is woken per read), a read in one io_submit of many ~4-8 us.
    GloVe-50, 56 postings, 16 queries in flight, both ways alternated in one process on a
    loaded machine: CPU per cold query 2,941 -> 1,202 us, 360 -> 564 QPS (the device's
    bandwidth, ~450 MB/s of 8 KiB reads in that run, is then the limit).

    What a cold query costs beyond the device is mostly kernel time (measured on GloVe-50, 48
    postings: 2.4 ms CPU per query, 1.7 ms of it system time), so a read is planned to make
    few system calls: blocks are laid out in the buffer in file order and touching ones are
    read by one preadv, a query's reads go to at most `TASKS` pool tasks (not one per block),
    the calling thread does one share itself, and each thread reuses one page-aligned buffer
    (no map, page faults and zeroing per query) while it is at most `KEEP_BYTES`.

    A block is read in the device's own units (`unit`, see `direct_unit`), which may be less
    than a page (issue 12, helper K): blocks are packed at any byte offset, so whole pages
    read ~1.8 KiB more per block than 512-byte units (GloVe-50, KB per cold query: default,
    64 postings, 1,006 -> 899; int8 + rerank, 48 postings, 557 -> 466). On this machine's
    disk the unit stays a page: it reports 4 KiB physical blocks, and reads off 4 KiB
    boundaries cost it more per request than the bytes they save. The pages stay the unit
    of the warm path and of `SearchStats.pages_read`."""

    TASKS = 8  # pool tasks per read call at most; the calling thread does one more share
    KEEP_BYTES = 4 << 20  # a thread keeps its read buffer up to this size

    def __init__(self, file: PostingFile, threads: int = 16) -> None:
        self.file = file
        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        try:
            self.fd = os.open(file.path, flags)
            self.direct = flags != os.O_RDONLY
        except OSError:
            self.fd, self.direct = os.open(file.path, os.O_RDONLY), False
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spann-io")
        self.local = threading.local()
        self.aio = AioPool.create() if self.direct and AIO else None
        # the read unit: the device's logical block size where it is known, else a page (a
        # read the kernel refuses as misaligned moves the reader to pages, see `read`)
        self.unit = direct_unit(self.fd) if self.direct else PAGE

    def _buffer(self, total: int) -> mmap.mmap:
        """A page-aligned buffer of at least `total` bytes: this thread's own while it is at
        most KEEP_BYTES (valid until this thread's next read), else a fresh one."""
        size = max(total, PAGE)
        buf: mmap.mmap | None = getattr(self.local, "buf", None)
        if buf is not None and len(buf) >= size:
            return buf
        buf = mmap.mmap(-1, -(-size // PAGE) * PAGE)  # anonymous maps are page-aligned
        if len(buf) <= self.KEEP_BYTES:
            self.local.buf = buf
            self.local.addr = _address(buf)
        return buf

    def read(
        self, offsets: npt.NDArray[np.int64], nbytes: npt.NDArray[np.int64]
    ) -> tuple[U8, npt.NDArray[np.int64], int]:
        """Read blocks into one aligned buffer; return it, the blocks' offsets in it, and
        the number of bytes read from the device (whole `unit`s). The buffer may be this
        thread's reused one: its contents last until the thread's next `read`."""
        unit = self.unit
        try:
            return self._read(offsets, nbytes, unit)
        except OSError as e:  # misaligned for this file after all: read whole pages
            if e.errno != errno.EINVAL or unit == PAGE:
                raise
            self.unit = PAGE
            return self._read(offsets, nbytes, PAGE)

    def _read(
        self, offsets: npt.NDArray[np.int64], nbytes: npt.NDArray[np.int64], unit: int
    ) -> tuple[U8, npt.NDArray[np.int64], int]:
        """`read` in units of `unit` bytes (a power of two, at most a page)."""
        lo, spans, need, at, place = plan_reads(offsets, nbytes, unit)
        total = int(at[-1] + spans[-1]) if len(at) else 0
        run_at = at.tolist() + [total]
        run_off = lo.tolist()
        buf = self._buffer(total)
        n_runs = len(run_off)
        ctx = self._context() if n_runs else None
        if ctx is not None:
            addr = self.local.addr if buf is getattr(self.local, "buf", None) else _address(buf)
            try:  # (a read ending in the file's last, partial unit returns less: `need`)
                ctx.read(self.fd, addr, at, spans, lo, need, str(self.file.path))
            finally:
                self.aio.give(ctx)  # type: ignore[union-attr]
            return self._placed(buf, total, place)
        view = memoryview(buf)

        def runs(a: int, b: int) -> int:
            done = 0
            for r in range(a, b):
                got = os.preadv(self.fd, [view[run_at[r] : run_at[r + 1]]], run_off[r])
                if got <= 0:  # (a run ending in the file's last, partial page reads less;
                    # what a block holds is checked by the caller: header and CRC)
                    raise FormatError(f"{self.file.path}: short read")
                done += got
            return done

        cuts = np.linspace(0, n_runs, min(n_runs, self.TASKS + 1) + 1).astype(int).tolist()
        pending = [self.pool.submit(runs, a, b) for a, b in itertools.pairwise(cuts[1:])]
        try:
            if n_runs:
                runs(cuts[0], cuts[1])
        finally:  # (no task may still write into this thread's buffer once read returns)
            wait(pending)
        for f in pending:
            f.result()
        return self._placed(buf, total, place)

    def _context(self) -> AioContext | None:
        """A free AIO context, or None: no native AIO, or no new context to be had (the
        system's aio-max-nr reached: this read goes through the thread pool)."""
        if self.aio is None:
            return None
        try:
            return self.aio.take()
        except OSError:
            return None

    @staticmethod
    def _placed(buf: mmap.mmap, total: int, place: I64) -> tuple[U8, I64, int]:
        """`read`'s answer: the buffer up to what this call read (a reused buffer holds an
        earlier query's bytes beyond), each block's place in it, the bytes read."""
        return np.frombuffer(buf, dtype=np.uint8)[: max(total, PAGE)], place, total

    def close(self) -> None:
        if self.aio is not None:
            self.aio.close()
            self.aio = None
        self.pool.shutdown(wait=True)
        os.close(self.fd)


AIO = True  # posting reads through native AIO where the system has it (tests turn it off)


def direct_unit(fd: int) -> int:
    """The read unit for O_DIRECT reads of the file open as `fd`: the largest of the block
    device's logical block size (the alignment O_DIRECT requires), physical block size and
    minimum I/O size (what it reads anyway), from sysfs (a partition's are its disk's); a
    power of two from 512 bytes to a page, a page where unknown (no sysfs, a filesystem on
    no one device such as overlayfs or btrfs, whose st_dev names no block device). Why not
    the logical size alone: this machine's virtual disk has 512-byte logical and 4 KiB
    physical blocks, and 7.5 KiB reads at 512-byte offsets gave ~7% fewer reads per second
    than 8 KiB page-aligned ones (16 x 16 in flight, 6 alternated rounds, ratios 0.89-1.04),
    so reading in sectors saved counted bytes and cost device time."""
    dev = os.fstat(fd).st_dev
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    names = ("logical_block_size", "physical_block_size", "minimum_io_size")
    for queue in (f"{base}/queue", f"{base}/../queue"):
        try:
            sizes = []
            for name in names:
                with open(f"{queue}/{name}") as f:
                    sizes.append(int(f.read().strip()))
        except (OSError, ValueError):
            continue
        size = max(sizes)
        if 512 <= size <= PAGE and size & (size - 1) == 0:
            return size
        return PAGE
    return PAGE


def _address(buf: mmap.mmap) -> int:
    """The address of an anonymous map's first byte (for the AIO requests)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
