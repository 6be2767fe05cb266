"""Integrity of the posting blocks a search scans: nothing unchecked reaches the scan kernel.

Before the numba scan reads a batch of blocks, `check_blocks` verifies, for every block, that
it lies inside the bytes it is read from and that its header agrees with the block table
(block magic, byte size, entry count, dimension, component width): one numba pass over a
few header words (`posting.check_headers`), cheap enough for every search, single queries
included. Each block's CRC32 (the header's, over the
block's bytes) is verified too: always for cold reads (fresh from the disk), and once per
write for warm reads, remembered in the posting file's `Verified` bitmap (one bit per 64-byte
unit of the file, cleared by every write over it), so a page-cache-resident block is hashed
once, not at every query. A block of the file's map about to be hashed has its pages
faulted in first by a nogil kernel (`touch_pages`): the hashing keeps the GIL (`block_crc`
hashes in pieces small enough that crc32 does not let it go: letting go at every block cost
more in thread hand-offs than it freed), so a cold block's disk reads inside it would stall
every other thread's search. Before that, the pages of all the blocks to hash are advised
MADV_WILLNEED (`_prefetch`, through ctypes, which releases the GIL), so a cold query's reads
go to the device together instead of one fault at a time, while few searches fault pages in
at once (`PREFETCH_MAX_BUSY`; issue 12, 3M x 96 after an open: 1 cold query in flight 413-479
against 278-314 QPS, 4 in flight +20%; with 16 in flight their faults alone keep the device
busy, and the advice, a system call per block, cost ~8% of the QPS when it was given at every
level). A failure is a `FormatError` naming the file and the byte offset; the engine then
quarantines the index and serves exactly from its store while it rebuilds.

`MODE` selects the CRC policy ("cached", the default; "always"; "off" only for the benchmark
that measures the cost; set by the VECDB_BLOCK_CRC environment variable at import).
Owns the bitmap and the checks; knows nothing of postings beyond the block header layout.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.params import PAGE_SIZE
from vecdb.index.spann.libc import LIBC
from vecdb.kernels.pairs import check_headers, touch_pages
from vecdb.kernels.posting import block_bytes

try:  # ISA-L's CRC32: zlib's polynomial, ~6x zlib 1.2.13's speed here (PCLMUL; 16 KiB: 0.8
    # vs 5.4 us, helper K), what a cold query's CRCs cost (~1 MB a query: ~300 us of CPU)
    from isal.isal_zlib import crc32
except ImportError:  # not installed: the same values, slower
    from zlib import crc32

# Bytes hashed per crc32 call: both isal's and zlib's crc32 release the GIL from 5 KiB on
# (5,121 bytes), and a search thread that lets go of the GIL per block must win it back from
# the others at every block (16 cold GloVe-50 queries in flight: ~40 blocks of 8-16 KiB a
# query, 0.8 us of hashing each, ~400 us of system time a query in futex wake-ups and
# context switches); in pieces below that the hashing keeps the GIL.
CRC_PIECE = 4096

BLOCK_MAGIC = 0x4B4C4250  # "PBLK", the first word of every block (see `postings`)
UNIT = 64  # blocks start on multiples of this: one bit of the bitmap each
MODES = ("cached", "always", "off")
MODE = os.environ.get("VECDB_BLOCK_CRC", "cached")
if MODE not in MODES:
    raise ValueError(f"VECDB_BLOCK_CRC must be one of {', '.join(MODES)}, got {MODE!r}")

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
_NO_BITS = np.zeros(0, np.uint8)


def _libc_madvise() -> object | None:
    """libc's madvise(addr, length, advice) (`libc`: the GIL released during the call), or
    None where there is none (then nothing is prefetched)."""
    if LIBC is None or not hasattr(mmap, "MADV_WILLNEED"):
        return None
    try:
        fn = LIBC.madvise
    except AttributeError:
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_madvise = _libc_madvise()
PREFETCH_MAX_BUSY = 2  # prefetch only while at most this many searches fault blocks in
_busy = 0  # searches between the prefetch and the end of their `touch_pages` now
_busy_lock = threading.Lock()


def _fault_in(u8: U8, at: I64, nbytes: I64, todo: I64) -> None:
    """Fault in the pages of the blocks todo of the file's map without the GIL, all asked
    of the device at once (`_prefetch`) while at most PREFETCH_MAX_BUSY searches do this."""
    global _busy
    with _busy_lock:
        _busy += 1
        few = _busy <= PREFETCH_MAX_BUSY
    try:
        if few:
            _prefetch(u8, at[todo], nbytes[todo])
        touch_pages(u8, at, nbytes, todo, PAGE_SIZE)
    finally:
        with _busy_lock:
            _busy -= 1


def _prefetch(u8: U8, at: I64, nbytes: I64) -> None:
    """Ask the kernel to read the pages of the blocks [at, at + nbytes) of the map `u8`
    now (MADV_WILLNEED; advice only: a failure changes nothing)."""
    if _madvise is None or len(at) == 0:
        return
    page = mmap.PAGESIZE
    base = u8.ctypes.data  # a map starts on a page
    end = -(-len(u8) // page) * page
    lo = at // page * page
    hi = np.minimum(-(-(at + nbytes) // page) * page, end)
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        _madvise(base + a, b - a, mmap.MADV_WILLNEED)  # type: ignore[operator]


class Verified:
    """Which block starts of one posting file passed their CRC since they were last written.

    Bits are set by searches (any thread) and cleared by the writer: both under `lock`, taken
    only when there is something to set, so a warm search never waits for it."""

    bits: U8  # one bit per UNIT bytes of the file, little-endian within a byte
    lock: threading.Lock  # serialises read-modify-write of the bitmap's bytes

    def __init__(self) -> None:
        self.bits = np.zeros(0, np.uint8)
        self.lock = threading.Lock()

    def known(self, offsets: I64) -> npt.NDArray[np.bool_]:
        """Whether each block start is verified."""
        bits = self.bits
        if len(bits) == 0:
            return np.zeros(len(offsets), np.bool_)
        unit = offsets // UNIT
        byte = unit >> 3
        inside = byte < len(bits)
        got = bits[np.where(inside, byte, 0)] >> (unit & 7).astype(np.uint8) & 1
        out: npt.NDArray[np.bool_] = inside & (got == 1)
        return out

    def mark(self, offsets: I64) -> None:
        """Remember that the blocks at `offsets` passed their CRC."""
        if len(offsets) == 0:
            return
        unit = offsets // UNIT
        with self.lock:
            need = int(unit.max() >> 3) + 1
            if need > len(self.bits):
                grown = np.zeros(max(need, 2 * len(self.bits)), np.uint8)
                grown[: len(self.bits)] = self.bits
                self.bits = grown
            np.bitwise_or.at(self.bits, unit >> 3, (1 << (unit & 7)).astype(np.uint8))

    def forget(self, lo: int, hi: int) -> None:
        """Bytes [lo, hi) are being rewritten: no block starting there is verified."""
        a, b = lo // UNIT, -(-hi // UNIT)  # units touched
        full_lo, full_hi = -(-a // 8), b // 8  # whole bytes of the bitmap inside [a, b)
        with self.lock:
            if full_lo >= full_hi:
                self._clear(range(a, b))
                return
            self._clear(range(a, full_lo * 8))
            self.bits[full_lo:full_hi] = 0
            self._clear(range(full_hi * 8, b))

    def _clear(self, units: range) -> None:
        bits = self.bits
        for u in units:
            if u >> 3 < len(bits):
                bits[u >> 3] &= np.uint8(~(1 << (u & 7)) & 0xFF)


def block_crc(data: memoryview) -> int:
    """zlib's CRC32 of `data`, hashed in `CRC_PIECE` pieces (each call keeps the GIL)."""
    crc = 0
    for lo in range(0, len(data), CRC_PIECE):
        crc = crc32(data[lo : lo + CRC_PIECE], crc)
    return crc


def check_blocks(
    u8: U8,
    at: I64,
    cnt: I64,
    dim: int,
    width: int,
    path: Path,
    file_off: I64 | None = None,
    verified: Verified | None = None,
    nbytes: I64 | None = None,
) -> None:
    """Verify the blocks starting at `at` in `u8` (entry counts `cnt` from the block table)
    before they are scanned; raise `FormatError` naming `path` and the block's file offset
    (`file_off`, default `at`) on the first bad one. With `verified` (warm reads of the
    file itself), CRCs already checked since the last write are skipped and new ones
    remembered. `nbytes`: the blocks' sizes when the caller has them (`gather_blocks`)."""
    n = len(at)
    if n == 0:
        return
    where = at if file_off is None else file_off
    if nbytes is None:
        nbytes = block_bytes(cnt, dim, width)
    use_bits = verified is not None and MODE != "always"
    bits = verified.bits if verified is not None else _NO_BITS
    status, i, todo = check_headers(
        u8, at, cnt, nbytes, dim, width, BLOCK_MAGIC, UNIT, bits, where, use_bits
    )
    if status == 1:
        raise FormatError(
            f"{path}: posting block at byte {int(where[i])} ({int(nbytes[i])} bytes) lies "
            f"outside the file ({len(u8)} bytes readable): torn or truncated"
        )
    if status == 2:
        raise FormatError(
            f"{path}: corrupt posting block header at byte {int(where[i])} "
            "(magic, size or entry count disagrees with the index)"
        )
    if MODE == "off" or len(todo) == 0:
        return
    if verified is not None:  # the file's map: a cold block's disk reads, without the GIL
        _fault_in(u8, at, nbytes, todo)  # (a read buffer is in memory already)
    words = u8[: len(u8) // 4 * 4].view(np.uint32)
    starts = at[todo]
    crcs = words[starts // 4 + 1].tolist()
    data = u8.data  # (slices of one memoryview and Python ints: ~0.6 us a block less than
    # array slices and numpy scalars, ~25 us of a cold GloVe-50 query's 40 blocks)
    for j, (a, size) in enumerate(zip(starts.tolist(), nbytes[todo].tolist(), strict=True)):
        if block_crc(data[a + 8 : a + size]) != crcs[j]:
            raise FormatError(f"{path}: posting block CRC mismatch at byte {int(where[todo[j]])}")
    if verified is not None:
        verified.mark(where[todo])
