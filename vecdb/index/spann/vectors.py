"""The SPANN index's high-fidelity vector store: one row per slot, for the exact rerank.

With `rerank` set to "float16" or "float32", the index keeps every live slot's vector (as the
index got it: prepared for its metric) in `vectors.bin` in the index directory, besides the
compact codes in the postings, so a search can scan the postings for a short list of
candidates and re-rank them exactly (`vecdb.kernels.rerank`). The file: a 4 KiB header page
(magic, format version, dim, bytes per component), then row `r` at byte
`4096 + r x row_bytes`, no padding. It is sparse: `ensure` grows it with ftruncate
(geometrically; nothing is allocated until written).

Which row is a slot's (`row_order`, fixed at creation): "slot", row = slot; "head", a bulk
build gives its slots new rows in the order of their primary postings (`build.write_rows`)
and a slot -> row map (`row_of`, -1: none) says where each is, inserts take rows from
`next_row` on, and a slot that has a row keeps it (a replayed insert writes it in place). The
map and the next row are checkpointed in the state file with the versions they belong to
(`persist`); a reopen takes them from there, so rows written after the checkpoint are
forgotten and written again by the op-log replay. A query's candidates lie in the few
postings it read: in head order their rows are near each other in the file, and the cold
reader merges them into fewer device requests (`aio.plan_reads`).

Who writes what: the bulk build (in the calling process, also when its passes run in a child
process) and `update.add` write the rows of the slots they place before they publish them;
nothing else writes. A drain run in a child process (`drain_child`) writes its rows there
through the child's own store object of this file; the parent's object then takes the
child's map (`adopt_map`, head order) and `refresh`es (the file's size, the mmap, which pages
are holes) before it publishes the child's slots. A slot's vector never changes (slots are
never reused), so a row is written once, or again with the same bytes, and a torn row is
always rewritten by the op-log replay that follows a crash: `persist.checkpoint` fsyncs the
store with the postings, before the manifest names the sequence the rows belong to. After a
checkpoint, `reclaim` punches holes (fallocate PUNCH_HOLE) in the pages whose rows are all
dead in the checkpoint's snapshot (no live slot names them), so under churn the allocated
size stays about the live rows' (the apparent size grows with the row numbers, the
allocated blocks do not).

Reads: warm, a numpy view of an mmap of the file (`rows`), advised MADV_RANDOM: a search
touches a few scattered rows, and the kernel's default read-around of a faulting page (up to
128 KiB) read 703 KB from the disk per cold query of a 3,000,000 x 96 index whose searches
ask for 141 KB (191 KB with the advice; bench/RESULTS.md); cold (`io="direct"`), O_DIRECT
reads of the 512-byte sectors holding the candidates' rows, rows at most MERGE_GAP sectors
apart in one request, all in one native-AIO submit (`aio`; else a small thread pool),
falling back to buffered reads where O_DIRECT is refused (`read_rows`).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from vecdb.errors import FormatError, ResourceExhausted
from vecdb.index.spann.aio import AioPool, plan_reads
from vecdb.index.spann.framing import (
    check_header,
    fsync_dir,
    pack_header,
    pwrite_all,
    sync_or_poison,
)
from vecdb.index.spann.libc import LIBC
from vecdb.kernels.half import half_bits
from vecdb.kernels.unique import sorted_unique

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
NAME = "vectors.bin"
MAGIC, VERSION = b"VDBVECS1", 1
HEAD = 4096  # header page
PAGE = 4096  # hole-punching granularity
SECTOR = 512  # O_DIRECT read granularity (the device's logical block size here)
WIDTH = {"float16": 2, "float32": 4}
GROW = 1.25  # capacity grows by this factor at least
MIN_ROWS = 1024
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
READ_TASKS = 1  # pool tasks per cold read call (the caller does one more share; more cost CPU)
# A cold read merges rows whose sectors are at most this many sectors apart into one request:
# the device's requests a second, not its bytes, are what a cold query waits for with many in
# flight (bench/RESULTS.md, "rerank rows in head order")
MERGE_GAP = 8
NO_MAP = np.zeros(0, np.int32)  # the kernels' map of a row order "slot" store (row = slot)
MAX_MAPPED_ROWS = 2**31 - 1  # rows a row order "head" store gives out (int32 map entries)


def row_bytes(rerank: str, dim: int) -> int:
    """Bytes a store row takes (0 without a store)."""
    return WIDTH.get(rerank, 0) * dim


class VectorStore:
    """`vectors.bin`: a row per slot (at the slot, or through the slot -> row map in head
    order), written in place, mmapped for warm reads, read by sector runs cold."""

    def __init__(
        self, directory: Path, dim: int, rerank: str, io: str = "mmap", order: str = "slot"
    ) -> None:
        self.path = directory / NAME
        self.dim, self.width = dim, WIDTH[rerank]
        self.rerank = rerank
        self.row = self.width * dim
        new = not self.path.exists() or self.path.stat().st_size < HEAD
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if new:
            header = bytearray(HEAD)
            header[:16] = pack_header(MAGIC, VERSION)
            header[16:24] = np.array([dim, self.width], "<u4").tobytes()
            pwrite_all(self.fd, header, 0, self.path)
        else:
            head = os.pread(self.fd, 24, 0)
            check_header(head, MAGIC, VERSION, self.path)
            got_dim, got_width = np.frombuffer(head[16:24], "<u4").tolist()
            if (got_dim, got_width) != (dim, self.width):
                raise FormatError(
                    f"{self.path}: vector store is dim={got_dim} width={got_width}, "
                    f"the index expects dim={dim} width={self.width}"
                )
        self.capacity = max(0, (os.fstat(self.fd).st_size - HEAD) // self.row)
        self.punched = np.zeros(0, bool)  # pages known to be holes (per run of this process)
        # row order "head": slot -> row (-1: none; slots past its end have none), the next
        # unused row, and the live rows of the last checkpoint (`reclaim`, `load_map`)
        self.mapped = order == "head"
        self.row_of: I32 = np.zeros(0, np.int32)  # (4 bytes a slot: ~0.3% of a 384-d raw row)
        self.next_row = 0
        self.ckpt_live = 0
        self.poisoned = ""
        self.dir_synced = not new  # a new file's directory entry is made durable once
        self.direct = io == "direct"
        self._map: mmap.mmap | None = None
        self._rows: npt.NDArray[Any] = np.zeros((0, dim), self._dtype())
        self._dfd = -1
        self._aio: AioPool | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._open_lock = threading.Lock()
        self._name = str(self.path)
        self._remap()

    def _dtype(self) -> type[Any]:
        return np.uint16 if self.width == 2 else np.float32

    # --- writing (worker thread) ------------------------------------------------------------

    def ensure(self, n: int) -> None:
        """Room for rows below n: sparse growth, then a new map. Swapping the view is one
        reference assignment: a search holding the old view keeps a valid map of the rows it
        can see (a slot is published only after its row is written and mapped)."""
        if n <= self.capacity:
            return
        rows = max(n, int(self.capacity * GROW), MIN_ROWS)
        # never shorter than the file: another process (a drain child) may have grown it
        rows = max(rows, (os.fstat(self.fd).st_size - HEAD) // self.row)
        os.ftruncate(self.fd, HEAD + rows * self.row)
        self.capacity = rows
        self._remap()

    def encode(self, vectors: F32) -> npt.NDArray[Any]:
        """Rows as stored: float32, or float16 bits with subnormals flushed to 0 (as the
        postings' float16 writer does; `kernels.half`)."""
        if self.width == 4:
            return np.ascontiguousarray(vectors, np.float32)
        return half_bits(vectors)

    def write(
        self, slots: I64, vectors: F32, fresh: bool = False, order: I64 | None = None
    ) -> None:
        """Write the rows of `slots` (any order; runs of consecutive rows take one pwrite).
        Not durable until `sync`. Row order "head": a slot that has a row is written in
        place, the others (every one with `fresh`: a bulk build) get new rows from
        `next_row` on, in the order of `order` (positions into `slots`; default as given),
        and the map names them once their bytes are written."""
        if len(slots) == 0:
            return
        rows = self._place(slots, fresh, order) if self.mapped else slots
        self.ensure(int(rows.max()) + 1)
        # rows already ascending (a bulk build's slots): no sort, the input read as slices
        by = None if bool((rows[1:] > rows[:-1]).all()) else np.argsort(rows, kind="stable")
        r = rows if by is None else rows[by]
        starts, ends = _runs(r)
        step = max(1, (8 << 20) // self.row)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            for lo in range(a, b, step):
                hi = min(b, lo + step)
                data = self.encode(vectors[lo:hi] if by is None else vectors[by[lo:hi]])
                pwrite_all(self.fd, data.data, HEAD + int(r[lo]) * self.row, self.path)
        self._unpunch(r[starts], r[ends - 1] + 1)
        if self.mapped:
            self._commit(slots, rows)

    def _place(self, slots: I64, fresh: bool, order: I64 | None) -> I64:
        """(Row order "head") the row of each of `slots`: its own, or a new one."""
        rows = np.full(len(slots), -1, np.int64)
        if not fresh:
            m = self.row_of
            inside = slots < len(m)
            rows[inside] = m[slots[inside]]
        new = np.flatnonzero(rows < 0) if order is None else order[rows[order] < 0]
        if self.next_row + len(new) > MAX_MAPPED_ROWS:
            raise ResourceExhausted(
                f"{self.path}: the rerank store's rows in head order are at most "
                f"{MAX_MAPPED_ROWS:,}; rebuild the index to renumber them"
            )
        rows[new] = self.next_row + np.arange(len(new), dtype=np.int64)
        self.next_row += len(new)
        return rows

    def _commit(self, slots: I64, rows: I64) -> None:
        """(Row order "head") the map names `rows` for `slots`; grown geometrically into a
        new array (a search holding the old one looks up only slots published before)."""
        top = int(slots.max()) + 1
        m = self.row_of
        if top > len(m):
            grown = np.full(max(top, int(len(m) * GROW), MIN_ROWS), -1, np.int32)
            grown[: len(m)] = m
            grown[slots] = rows
            self.row_of = grown
        else:
            m[slots] = rows

    def reset_rows(self) -> None:
        """(Row order "head") forget every row: the next build writes from row 0. Only when
        no row is live, here or in the last checkpoint (`build` checks)."""
        self.row_of = np.zeros(0, np.int32)
        self.next_row = 0

    def load_map(self, data: bytes, next_row: int, versions: U8) -> None:
        """(Row order "head") the map and next row a checkpoint stored (`map_bytes`), and how
        many of its rows are live in its `versions`."""
        self.row_of = np.frombuffer(data, "<i4").astype(np.int32)
        self.next_row = int(next_row)
        self.ckpt_live = int(self._live_rows(self.row_of, self.next_row, versions).sum())

    def map_bytes(self, n: int) -> bytes:
        """(Row order "head") the map of slots below `n` as stored in a checkpoint (b""
        for row order "slot"); the caller holds the state's lock."""
        if not self.mapped:
            return b""
        m = np.full(n, -1, np.int32)
        k = min(n, len(self.row_of))
        m[:k] = self.row_of[:k]
        return m.astype("<i4").tobytes()

    def adopt_map(self, other: VectorStore) -> None:
        """Take the map and next row of `other`, a store object of the same file another
        process wrote through (a drain child's checkpoint, opened here)."""
        self.row_of, self.next_row, self.ckpt_live = other.row_of, other.next_row, other.ckpt_live

    def rows_of(self, slots: I64) -> I64:
        """The rows of `slots` (each has one: published or being written)."""
        return self.row_of[slots].astype(np.int64) if self.mapped else slots

    def row_map(self) -> I32:
        """The map for the kernels (`kernels.rerank.rows_at`): empty for row order "slot"."""
        return self.row_of if self.mapped else NO_MAP

    def file_rows(self) -> int:
        """Rows the file has room for now (another process may have grown it)."""
        return max(0, (os.fstat(self.fd).st_size - HEAD) // self.row)

    def refresh(self, rows: I64) -> None:
        """Take in `rows` that another process (a drain child, on its own store object of
        this file) wrote: the file's size again (the other process may have grown it; the
        map covers the new rows) and the pages of those rows no longer known as holes (so
        `reclaim` punches them when they die). Call before their slots become visible
        here (for row order "head" after `adopt_map`)."""
        self.capacity = max(self.capacity, self.file_rows())
        if len(self._rows) < self.capacity:
            self._remap()
        if len(rows):
            r = sorted_unique(np.asarray(rows, np.int64))
            starts, ends = _runs(r)
            self._unpunch(r[starts], r[ends - 1] + 1)

    def _unpunch(self, lo: I64, hi: I64) -> None:
        """Forget that the pages holding rows [lo, hi) (runs of slots) are holes: rows were
        written into them (a hole punched once is allocated again by a write, and `reclaim`
        must punch it again when its slots are dead)."""
        if not len(self.punched) or not len(lo):
            return
        first = (HEAD + lo * self.row) // PAGE
        last = (HEAD + hi * self.row - 1) // PAGE
        for a, b in zip(first.tolist(), last.tolist(), strict=True):
            self.punched[a : b + 1] = False

    def sync(self) -> None:
        """fsync the rows; after one failure never again (as `PostingFile.sync`)."""
        sync_or_poison(self, self.fd, self.path)
        if not self.dir_synced:
            fsync_dir(self.path.parent)
            self.dir_synced = True

    def reclaim(self, versions: U8, row_of: I32 | None = None, rows_end: int = 0) -> int:
        """Punch holes in the pages whose rows are all dead in a checkpoint's snapshot:
        `versions` (a dead slot is VERSION_NONE or VERSION_REMOVED) and for row order
        "head" its map and next row (rows past it are not judged: written since); returns
        the bytes punched now."""
        if self.mapped:
            assert row_of is not None
            live = self._live_rows(row_of, min(rows_end, self.capacity), versions)
            self.ckpt_live = int(live.sum())
        else:
            from vecdb.index.spann.state import live_mask

            live = live_mask(versions[: min(len(versions), self.capacity)])
        n = len(live)
        if n == 0 or LIBC is None:
            return 0
        # page p holds bytes [HEAD + p PAGE, ...): rows first..last overlap it
        pages = (HEAD + n * self.row) // PAGE  # whole pages inside rows < n
        if pages <= 1:
            return 0
        p = np.arange(1, pages, dtype=np.int64)
        first = (p * PAGE - HEAD) // self.row
        last = np.minimum(((p + 1) * PAGE - 1 - HEAD) // self.row, n - 1)
        csum = np.zeros(n + 1, np.int64)
        np.cumsum(live, out=csum[1:])
        dead = csum[last + 1] - csum[first] == 0
        if len(self.punched) < pages:
            grown = np.zeros(pages, bool)
            grown[: len(self.punched)] = self.punched
            self.punched = grown
        todo = dead & ~self.punched[1:pages]
        if not todo.any():
            return 0
        edges = np.diff(np.concatenate(([0], todo.astype(np.int8), [0])))
        run_lo, run_hi = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        done = 0
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        for a, b in zip(run_lo.tolist(), run_hi.tolist(), strict=True):
            off, length = (a + 1) * PAGE, (b - a) * PAGE
            rc = LIBC.fallocate(self.fd, mode, ctypes.c_longlong(off), ctypes.c_longlong(length))
            if rc != 0:  # a filesystem without hole punching: the rows stay allocated
                return done
            done += length
        self.punched[1:pages] |= todo
        return done

    @staticmethod
    def _live_rows(row_of: I32, n: int, versions: U8) -> npt.NDArray[np.bool_]:
        """Which of rows [0, n) a live slot of `versions` names in `row_of`."""
        from vecdb.index.spann.state import live_mask

        live = np.zeros(n, np.bool_)
        k = min(len(row_of), len(versions))
        r = row_of[:k][live_mask(versions[:k])]
        r = r[(r >= 0) & (r < n)]
        live[r] = True
        return live

    # --- reading (any thread) ---------------------------------------------------------------

    def _remap(self) -> None:
        size = HEAD + self.capacity * self.row
        if self.capacity == 0 or os.fstat(self.fd).st_size < size:
            self._rows = np.zeros((0, self.dim), self._dtype())
            return
        m = mmap.mmap(self.fd, size, access=mmap.ACCESS_READ)
        m.madvise(mmap.MADV_RANDOM)
        self._map = m  # the previous map lives on while a search holds a view of it
        flat = np.frombuffer(m, dtype=self._dtype(), offset=HEAD, count=self.capacity * self.dim)
        self._rows = flat.reshape(self.capacity, self.dim)

    def rows(self) -> npt.NDArray[Any]:
        """(capacity, dim) view of every row: uint16 float16 bits or float32."""
        return self._rows

    def vectors(self, slots: I64) -> F32:
        """The rows of `slots` as float32, through the map (warm, also with `io="direct"`:
        the maintenance thread's reads of a "bits" posting's vectors)."""
        at = self.rows_of(slots)
        if len(at) and int(at.max()) >= len(self._rows):
            self.refresh(np.zeros(0, np.int64))  # rows another process wrote (drain child)
        rows = self._rows[at]
        if self.width == 4:
            return np.asarray(rows, np.float32)
        out: F32 = rows.view(np.float16).astype(np.float32)
        return out

    def read_rows(self, slots: I64) -> tuple[npt.NDArray[Any], int]:
        """Cold read: the rows of `slots` (in that order), copied out of O_DIRECT reads of
        their sectors; returns them and the bytes read from the device. Rows whose sectors
        lie at most MERGE_GAP sectors apart are read by one request (`aio.plan_reads`)."""
        if self._dfd < 0:
            self._open_direct()
        if len(slots) == 0:
            return np.zeros((0, self.dim), self._dtype()), 0
        offs = HEAD + self.rows_of(slots) * self.row
        los, spans, need, at, pos = plan_reads(offs, self.row, SECTOR, MERGE_GAP)
        total = int(at[-1] + spans[-1])
        buf = self._buffer(total)
        if self._aio is not None:  # every run in one submit (one read's latency)
            ctx = self._aio.take()
            try:
                ctx.read(self._dfd, self._local.addr, at, spans, los, need, self._name)
            finally:
                self._aio.give(ctx)
        else:
            self._pread_runs(buf, los.tolist(), spans.tolist(), at.tolist())
        u8 = np.frombuffer(buf, np.uint8, count=total)
        # whole rows of a sliding window over the buffer, not byte by byte through an
        # (n, row) index matrix (100 rows of 768 bytes: 88-118 -> 15-31 us)
        out = sliding_window_view(u8, self.row)[pos].view(self._dtype())
        return out, total

    def _pread_runs(self, buf: mmap.mmap, los: list[int], spans: list[int], at: list[int]) -> None:
        """The runs read with preadv (no native AIO): this thread and READ_TASKS pool tasks
        take a share each."""
        view = memoryview(buf)
        n = len(los)

        def run(a: int, b: int) -> None:
            for i in range(a, b):
                if os.preadv(self._dfd, [view[at[i] : at[i] + spans[i]]], los[i]) <= 0:
                    raise FormatError(f"{self.path}: short read at byte {los[i]}")

        cuts = np.linspace(0, n, min(n, READ_TASKS + 1) + 1).astype(int).tolist()
        pending = []
        if READ_TASKS and n > 1:
            assert self._pool is not None
            pending = [self._pool.submit(run, a, b) for a, b in zip(cuts[1:-1], cuts[2:])]
        else:
            cuts = [0, n]
        try:
            run(cuts[0], cuts[1])
        finally:
            for f in pending:
                f.exception()  # wait for every task before the buffer is reused
        for f in pending:
            f.result()

    def _open_direct(self) -> None:
        with self._open_lock:
            if self._dfd >= 0:
                return
            flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
            try:
                fd = os.open(self.path, flags)
                self._aio = AioPool.create() if flags != os.O_RDONLY else None
            except OSError:
                fd = os.open(self.path, os.O_RDONLY)
            self._pool = ThreadPoolExecutor(max(1, READ_TASKS), thread_name_prefix="spann-rows")
            # published last: `read_rows` tests _dfd without the lock, and a thread that
            # saw it before _aio and _pool were set failed (16 first cold calls at once)
            self._dfd = fd

    def _buffer(self, total: int) -> mmap.mmap:
        """This thread's page-aligned read buffer, at least `total` bytes."""
        size = -(-max(total, PAGE) // PAGE) * PAGE
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = mmap.mmap(-1, size)  # anonymous maps are page-aligned
            self._local.buf = buf
            self._local.addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        return buf

    def allocated_bytes(self) -> int:
        """Bytes the file takes on disk (holes and unwritten growth excluded)."""
        return int(os.fstat(self.fd).st_blocks) * 512

    def close(self) -> None:
        if self._aio is not None:
            self._aio.close()
            self._aio = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        m, self._map = self._map, None
        self._rows = np.zeros((0, self.dim), self._dtype())  # our own view of it first
        if m is not None:
            try:
                m.close()  # the map's own descriptor: the file stayed open until collected
            except BufferError:  # a search still holds a view: the map goes with it
                pass


def _runs(r: I64) -> tuple[I64, I64]:
    """Runs of consecutive values in the sorted rows `r`: each run's first and past-last
    position in `r`."""
    cuts = np.flatnonzero(np.diff(r) != 1) + 1
    return np.concatenate(([0], cuts)), np.concatenate((cuts, [len(r)]))


def verify_store(directory: Path, dim: int, rerank: str) -> tuple[bool, str]:
    """(ok, detail) for `vecdb inspect --verify`: the store's header (magic, version, dim,
    width) without writing anything. Rows carry no checksum: their content is not checked."""
    path = directory / NAME
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        return False, f"rerank store is unreadable or missing ({exc})"
    try:
        check_header(head, MAGIC, VERSION, path)
    except FormatError as exc:
        return False, exc.message
    got = np.frombuffer(head[16:24], "<u4").tolist()
    want = [dim, WIDTH[rerank]]
    if got != want or size < HEAD:
        return False, f"header says dim, width = {got}, expected {want} (size {size})"
    return True, f"header ok, {(size - HEAD) // (want[0] * want[1])} rows of room"


def store_stats(st: Any) -> dict[str, Any]:
    """The rerank store's part of `stats()`: its row format and allocated bytes (already in
    `bytes_on_disk`, which counts every file of the directory)."""
    store = st.store
    if store is None:
        return {"rerank": "none"}
    return {"rerank": store.rerank, "vector_store_bytes": store.allocated_bytes()}
