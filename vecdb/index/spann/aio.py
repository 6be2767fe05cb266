"""Linux native AIO (io_setup / io_submit / io_getevents) through ctypes, for many small
O_DIRECT reads at once: the rerank store's rows of a query (`vectors.VectorStore.read_rows`)
and a query's posting runs (`readers.DirectReader.read`).

One `AioContext` submits a list of (file offset, length, buffer address) reads with one
io_submit and reaps them with io_getevents: the device sees them all at once (a query waits
about one read's latency, not one per row) and the kernel is entered twice, not once per row
(an O_DIRECT pread costs ~19 us of CPU here, most of a small read's cost). The reads are
reaped with one io_getevents that waits for all of them (a caller needs every one; waking
per completion cost ~20 us of CPU per 16 rows), and the requests are filled as 64-bit
columns of a preallocated array (16 rows: ~100 -> ~80 us of CPU per call, measured side by
side). ctypes releases the GIL during the calls. `AioPool` hands contexts to concurrent
callers (a context is used by one call at a time: its events belong to that call) and
destroys them on close. `AioPool.create()` is None where the system refuses native AIO
(callers fall back to preadv). `plan_reads` turns both readers' byte ranges into aligned
requests and places in one buffer. Owns nothing else; x86-64 and arm64 syscall numbers only
(others: None, the fallback).
"""

from __future__ import annotations

import ctypes
import os
import platform
import queue

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.spann.libc import LIBC

_NR = {  # io_setup, io_destroy, io_getevents, io_submit
    "x86_64": (206, 207, 208, 209),
    "aarch64": (0, 1, 4, 2),
}.get(platform.machine())
IOCB = np.dtype(
    [
        ("data", "<u8"),
        ("key", "<u4"),
        ("rw_flags", "<u4"),
        ("opcode", "<u2"),
        ("reqprio", "<i2"),
        ("fildes", "<u4"),
        ("buf", "<u8"),
        ("nbytes", "<u8"),
        ("offset", "<i8"),
        ("reserved2", "<u8"),
        ("flags", "<u4"),
        ("resfd", "<u4"),
    ]
)  # struct iocb (64 bytes)
EVENT = np.dtype([("data", "<u8"), ("obj", "<u8"), ("res", "<i8"), ("res2", "<i8")])
DEPTH = 128  # reads one context takes per submit
Ints = list[int] | npt.NDArray[np.int64]  # lists or int64 arrays (no conversion per call)
I64 = npt.NDArray[np.int64]


def plan_reads(
    offs: I64, nbytes: int | I64, unit: int, gap: int = 0
) -> tuple[I64, I64, I64, I64, I64]:
    """The O_DIRECT requests that read the byte ranges [offs, offs + nbytes) (any order,
    overlaps and repeats allowed) in whole `unit`s: ranges sorted by offset, a new request
    wherever a range's first unit lies more than `gap` units past every unit before it (0:
    only ranges that touch or overlap share one; a unit is read once). Returns per request
    its file offset, length and the bytes it must return (it may end inside the file's last,
    partial unit) and its offset in the read buffer (requests packed end to end,
    unit-aligned), and per range its byte offset in the buffer. Used by the posting file's
    O_DIRECT reader (`readers.DirectReader`, gap 0) and the rerank store's
    (`vectors.VectorStore.read_rows`, `vectors.MERGE_GAP`)."""
    if len(offs) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty, empty
    order = np.argsort(offs, kind="stable")
    so = offs[order]
    end = so + (nbytes if isinstance(nbytes, int) else nbytes[order])
    first = so // unit
    reach = np.maximum.accumulate((end - 1) // unit)
    new = np.empty(len(so), np.bool_)
    new[0] = True
    np.greater(first[1:], reach[:-1] + gap + 1, out=new[1:])
    starts = np.flatnonzero(new)
    lo = first[starts] * unit
    spans = (reach[np.append(starts[1:] - 1, len(so) - 1)] + 1) * unit - lo
    need = np.maximum.reduceat(end, starts) - lo
    at = np.zeros(len(starts), np.int64)
    np.cumsum(spans[:-1], out=at[1:])
    run = np.cumsum(new) - 1
    pos = np.empty(len(so), np.int64)
    pos[order] = at[run] + so - lo[run]
    return lo, spans, need, at, pos


if LIBC is not None:
    LIBC.syscall.restype = ctypes.c_long


class AioContext:
    """One kernel AIO context and its request arrays (one caller at a time)."""

    def __init__(self) -> None:
        assert LIBC is not None and _NR is not None
        self.ctx = ctypes.c_ulong(0)
        if LIBC.syscall(_NR[0], DEPTH, ctypes.byref(self.ctx)) != 0:
            raise OSError(ctypes.get_errno(), "io_setup")
        self.iocbs = np.zeros(DEPTH, IOCB)
        self.ptrs = (self.iocbs.ctypes.data + IOCB.itemsize * np.arange(DEPTH)).astype(np.uint64)
        self.events = np.zeros(DEPTH, EVENT)
        # the same memory as 64-bit words: one column write per field, not a structured-field
        # assignment (each ~1-2 us of Python); word 2 packs opcode (0: pread), reqprio, fd
        self.words = self.iocbs.view(np.uint64).reshape(DEPTH, 8)
        self.words[:, 0] = np.arange(DEPTH, dtype=np.uint64)  # data: the request's index
        self.results = self.events.view(np.int64).reshape(DEPTH, 4)
        self.fd = -1
        self.ptr_at = [ctypes.c_void_p(self.ptrs.ctypes.data + 8 * i) for i in range(DEPTH)]
        self.ev_at = [
            ctypes.c_void_p(self.events.ctypes.data + EVENT.itemsize * i) for i in range(DEPTH)
        ]

    def read(
        self,
        fd: int,
        base: int,
        at: Ints,
        nbytes: Ints,
        offsets: Ints,
        need: Ints,
        path: str,
    ) -> None:
        """Read nbytes[i] bytes at file offset offsets[i] into address base + at[i], all of
        them submitted together (DEPTH at a time); raises OSError for a read the kernel
        refused (its errno) and FormatError when one returns fewer than need[i] bytes (a
        read may end early at the end of the file)."""
        assert LIBC is not None and _NR is not None
        syscall = LIBC.syscall
        words, results = self.words, self.results
        if fd != self.fd:
            words[:, 2] = np.uint64(fd) << np.uint64(32)
            self.fd = fd
        total = len(at)
        for lo in range(0, total, DEPTH):
            n = min(DEPTH, total - lo)
            hi = lo + n
            words[:n, 3] = at[lo:hi]
            words[:n, 3] += np.uint64(base)
            words[:n, 4] = nbytes[lo:hi]
            words[:n, 5] = offsets[lo:hi]
            done, err = 0, 0
            while done < n:
                got = syscall(_NR[3], self.ctx, ctypes.c_long(n - done), self.ptr_at[done])
                if got < 0 and ctypes.get_errno() == 4:  # EINTR (a signal, e.g. a profiler's)
                    continue
                if got <= 0:  # nothing more taken: reap what is in flight, then raise
                    err = ctypes.get_errno() or 11
                    break
                done += got
            n = done
            reaped = 0
            while reaped < n:
                got = syscall(
                    _NR[2], self.ctx, ctypes.c_long(n - reaped), ctypes.c_long(n - reaped),
                    self.ev_at[reaped], None,
                )  # fmt: skip
                if got < 0:
                    why = ctypes.get_errno()  # (not `err`: that is io_submit's, raised below)
                    if why == 4:  # EINTR
                        continue
                    raise OSError(why, f"io_getevents on {path}")
                reaped += got
            if err:
                raise OSError(err, f"io_submit on {path}")
            res = results[:n, 2]
            if (res < 0).any():  # a refused read (-errno), e.g. EINVAL for a misaligned one
                bad = int(np.flatnonzero(res < 0)[0])
                raise OSError(-int(res[bad]), f"read on {path}")
            want = np.asarray(need[lo : lo + n], np.int64)[results[:n, 0]]
            if (res < want).any():
                bad = int(np.flatnonzero(res < want)[0])
                raise FormatError(f"{path}: short read (result {int(res[bad])})")

    def close(self) -> None:
        if LIBC is not None and _NR is not None and self.ctx.value:
            LIBC.syscall(_NR[1], self.ctx)
            self.ctx = ctypes.c_ulong(0)


class AioPool:
    """Contexts for concurrent callers: `take` one (a new one if none is free), `give` it
    back; `close` destroys them all."""

    def __init__(self) -> None:
        self.free: queue.SimpleQueue[AioContext] = queue.SimpleQueue()
        self.all: list[AioContext] = []

    @classmethod
    def create(cls) -> AioPool | None:
        """A pool, or None where native AIO is unavailable (no libc, unknown machine,
        io_setup refused)."""
        if LIBC is None or _NR is None or os.environ.get("VECDB_NO_AIO"):
            return None
        pool = cls()
        try:
            pool.give(pool.take())
        except OSError:
            return None
        return pool

    def take(self) -> AioContext:
        try:
            return self.free.get_nowait()
        except queue.Empty:
            ctx = AioContext()
            self.all.append(ctx)
            return ctx

    def give(self, ctx: AioContext) -> None:
        self.free.put(ctx)

    def close(self) -> None:
        for ctx in self.all:
            ctx.close()
        self.all = []
