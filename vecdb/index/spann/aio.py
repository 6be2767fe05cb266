"""Linux native AIO (io_setup / io_submit / io_getevents) through ctypes, for many small
O_DIRECT reads at once: the rerank store's rows of a query (`vectors.VectorStore.read_rows`).

One `AioContext` submits a list of (file offset, length, buffer address) reads with one
io_submit and reaps them with io_getevents: the device sees them all at once (a query waits
about one read's latency, not one per row) and the kernel is entered twice, not once per
row (an O_DIRECT pread costs ~19 us of CPU here, most of a small read's cost). ctypes
releases the GIL during the calls. `AioPool` hands contexts to concurrent callers (a context
is used by one call at a time: its events belong to that call) and destroys them on close.
`AioPool.create()` is None where the system refuses native AIO (callers fall back to preadv).
Owns nothing else; x86-64 and arm64 syscall numbers only (others: None, the fallback).
"""

from __future__ import annotations

import ctypes
import os
import platform
import queue

import numpy as np

from vecdb.errors import FormatError

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


def _libc() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        return lib
    except OSError:
        return None


_LIBC = _libc()


class AioContext:
    """One kernel AIO context and its request arrays (one caller at a time)."""

    def __init__(self) -> None:
        assert _LIBC is not None and _NR is not None
        self.ctx = ctypes.c_ulong(0)
        if _LIBC.syscall(_NR[0], DEPTH, ctypes.byref(self.ctx)) != 0:
            raise OSError(ctypes.get_errno(), "io_setup")
        self.iocbs = np.zeros(DEPTH, IOCB)
        self.ptrs = (self.iocbs.ctypes.data + IOCB.itemsize * np.arange(DEPTH)).astype(np.uint64)
        self.events = np.zeros(DEPTH, EVENT)

    def read(
        self,
        fd: int,
        base: int,
        at: list[int],
        nbytes: list[int],
        offsets: list[int],
        need: list[int],
        path: str,
    ) -> None:
        """Read nbytes[i] bytes at file offset offsets[i] into address base + at[i], all of
        them submitted together (DEPTH at a time); raises FormatError when a read returns
        fewer than need[i] bytes (a read may end early at the end of the file)."""
        assert _LIBC is not None and _NR is not None
        for lo in range(0, len(at), DEPTH):
            n = min(DEPTH, len(at) - lo)
            cb = self.iocbs[:n]
            cb["fildes"] = fd
            cb["buf"] = base + np.asarray(at[lo : lo + n], np.uint64)
            cb["nbytes"] = nbytes[lo : lo + n]
            cb["offset"] = offsets[lo : lo + n]
            cb["data"] = np.arange(n, dtype=np.uint64)
            done, err = 0, 0
            while done < n:
                got = _LIBC.syscall(
                    _NR[3], self.ctx, ctypes.c_long(n - done),
                    ctypes.c_void_p(self.ptrs.ctypes.data + 8 * done),
                )  # fmt: skip
                if got <= 0:  # nothing more taken: reap what is in flight, then raise
                    err = ctypes.get_errno() or 11
                    break
                done += got
            n = done
            reaped = 0
            while reaped < n:
                got = _LIBC.syscall(
                    _NR[2], self.ctx, ctypes.c_long(1), ctypes.c_long(n - reaped),
                    ctypes.c_void_p(self.events.ctypes.data + EVENT.itemsize * reaped), None,
                )  # fmt: skip
                if got < 0:
                    err = ctypes.get_errno()
                    if err == 4:  # EINTR
                        continue
                    raise OSError(err, f"io_getevents on {path}")
                reaped += got
            if err:
                raise OSError(err, f"io_submit on {path}")
            res = self.events["res"][:n]
            want = np.asarray(need[lo : lo + n], np.int64)[self.events["data"][:n].astype(np.int64)]
            if (res < want).any():
                bad = int(np.flatnonzero(res < want)[0])
                raise FormatError(f"{path}: short read (result {int(res[bad])})")

    def close(self) -> None:
        if _LIBC is not None and _NR is not None and self.ctx.value:
            _LIBC.syscall(_NR[1], self.ctx)
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
        if _LIBC is None or _NR is None or os.environ.get("VECDB_NO_AIO"):
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
