"""The posting file: framed, CRC-checked blocks of (slots, versions, dim-major vectors).

A posting file is page 0 (magic, format version, dim, component width) followed by *blocks*. A
block holds part or all of one posting: a 64-byte header `[u32 block magic][u32 crc32]
[u32 nbytes][u32 count][i64 posting][u32 dim][u32 cap][u32 width]`, then `uint32 slots[cap]`,
`uint8 versions[cap]` (padded to 64 bytes) and a dimension-major `vectors[dim][cap]` of
float32 (width 4), float16 (width 2) or uint8 codes of a per-dimension scalar quantizer
(width 1; the quantizer lives in the index's state file), or, for "bits" postings (width 8),
`cap` entries of `dim` uint64 words, `dim` = ceil(d / 64) + 1 in the block header (the 1-bit
code, then two float32 factors: `bitcodes`, `kernels.bitscan`; the page-0 header keeps the
vectors' d) in lane groups: each 8 entries word-major with their factors as bfloat16, the rest
entry-major (`bitscan.to_lanes`; `posting.vector_bytes` sizes the part; format 3 had them all
entry-major), where cap is the count (format 2 rounded it up to a multiple of 8, at least 8:
at 1024-d that padding made small appended blocks up to 4x their entries). Format 5 narrowed
slots from int64 to uint32 (4 bytes an entry: a 384-d "bits" entry 65 -> 61 bytes, a 50-d
int8 one 59 -> 55); format 6 stores a "bits" lane group's factors as bfloat16 (4 bytes an
entry less again: 61 -> 57 at 384-d; the last count % 8 entries of a block keep float32, the
same values). A file of an earlier format is refused on open (`FormatError`; format 5 only
for "bits"), and the engine rebuilds such an index from the stored vectors
(`engine.recovery`). Blocks start on 64-byte boundaries and never straddle more 4 KiB pages
than their size requires, so a read is always the minimum of whole pages. Where blocks go
is the file's `SpaceMap` (`space`): free extents first (best fit), else the end; bulk writes
pack what does not fit by remainder best fit (SPTAG). An attached `BlockTable` releases every
block it drops to the map, and space is reused only once no published checkpoint references it
(`begin_checkpoint` / `checkpointed`, `readers_done`), so a crash leaves the last checkpoint's
blocks intact; data past the durable length is truncated on open, and a free tail at any
checkpoint. Writes, allocation and the map belong to the single maintenance thread; reads
(`read_block`, the readers) are safe from any thread for blocks of a table the caller holds.
Two readers share one interface (`readers`, re-exported here): `MmapReader` (warm) and
`DirectReader` (cold). Every write goes through `framing.pwrite_all` (short writes continued,
errors raised naming the file) and forgets the verified state of the bytes it covers
(`verified`, see `blockcheck`); a failed fsync poisons the file: no later checkpoint may
publish what it holds (`sync` raises `FormatError`, so the engine rebuilds the index). A file
shorter than its durable length, or missing, is a `FormatError` on open, never extended with
zeros. This module knows nothing of heads, search or updates.
"""

from __future__ import annotations

import os
import struct
import weakref
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError, VecdbError, os_error
from vecdb.index.params import BITS_WIDTH
from vecdb.index.spann.bitcodes import BitCoder, Codec
from vecdb.index.spann.blockcheck import Verified
from vecdb.index.spann.framing import (
    check_header,
    pack_header,
    pwrite_all,
    sync_or_poison,
)
from vecdb.index.spann.quant import Quantizer as Quantizer  # re-exported
from vecdb.index.spann.readers import DirectReader as DirectReader  # re-exported
from vecdb.index.spann.readers import MmapReader as MmapReader  # re-exported
from vecdb.index.spann.space import PAGE as PAGE  # re-exported: the read unit
from vecdb.index.spann.space import Mark, NoRoom, SpaceMap
from vecdb.index.spann.table import BlockTable
from vecdb.kernels.bitscan import from_lanes, to_lanes
from vecdb.kernels.half import half_bits
from vecdb.kernels.posting import SLOT_BYTES, SLOT_DTYPE, SLOT_NONE, block_extent, block_layout

MAGIC = b"VDBPOSTS"
VERSION = 6  # 6: a "bits" lane group's factors in bfloat16 (5: float32, uint32 slots)
# 5: uint32 slots (4: int64; "bits" entries in lane groups since 4); 3: a block holds exactly
# its entries (2 rounded them up to 8, at least 8)
READS = (5, VERSION)  # 5 only for widths other than "bits"; 3 and 4 have 8-byte slots
BLOCK_MAGIC = 0x4B4C4250  # "PBLK"
BLOCK_HEADER = struct.Struct("<IIIIqIII")  # magic crc nbytes count posting dim cap width
GROW = 16 << 20  # the file is extended in chunks (at most this, 1/GROW_SHARE of its data,
GROW_SHARE, GROW_MIN = 64, 1 << 20  # at least GROW_MIN) so the mmap is remapped rarely; a
# fixed 16 MiB was 0.2x the raw bytes of GloVe-50 on disk beyond the data, past the budget

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


STORED = {4: np.float32, 2: np.float16, 1: np.uint8, 8: np.uint64}


def to_half(vectors: F32) -> npt.NDArray[np.float16]:
    """float16 copy with subnormals flushed to zero, as the scan kernel widens them."""
    return half_bits(vectors).view(np.float16)


def encode_block(
    posting: int,
    slots: I64,
    versions: U8,
    vectors: F32,
    width: int = 4,
    quant: Codec | None = None,
    full_cap: int = 0,
) -> U8:
    """Serialise one block, zero-padded to its extent (`block_extent`); `vectors` is
    (count, dim) row-major, stored as float16 if `width` is 2 (given as float32, or as float16
    already converted by `to_half`), as `quant` codes if 1; if 8 ("bits"), coded by the
    `BitCoder` `quant`, or given as its entries (uint64, already coded)."""
    rows: npt.NDArray[Any] = vectors
    if width == BITS_WIDTH and vectors.dtype != np.uint64:
        assert isinstance(quant, BitCoder)
        rows = quant.encode(vectors)
    count, dim = rows.shape
    cap, vec_off, nbytes = block_layout(count, dim, width)
    buf = np.zeros(block_extent(count, dim, width, full_cap), dtype=np.uint8)
    s = buf[64 : 64 + SLOT_BYTES * cap].view(SLOT_DTYPE)
    s[:] = SLOT_NONE
    s[:count] = slots
    buf[64 + SLOT_BYTES * cap : 64 + SLOT_BYTES * cap + count] = versions
    if width == BITS_WIDTH:  # lane groups (cap == count)
        lanes = to_lanes(rows)
        buf[vec_off:nbytes].view(np.uint64)[: len(lanes)] = lanes
    elif width == 1:
        v = buf[vec_off:nbytes].view(STORED[width]).reshape(dim, cap)
        assert isinstance(quant, Quantizer)
        v[:, :count] = quant.encode(vectors).T
    else:
        v = buf[vec_off:nbytes].view(STORED[width]).reshape(dim, cap)
        half = vectors.dtype == np.float16  # already converted by the caller (bulk build)
        v[:, :count] = vectors.T if width == 4 or half else to_half(vectors).T
    BLOCK_HEADER.pack_into(buf.data, 0, BLOCK_MAGIC, 0, nbytes, count, posting, dim, cap, width)
    struct.pack_into("<I", buf.data, 4, zlib.crc32(buf.data[8:nbytes]))
    return buf


def decode_block(
    buf: U8, where: str, quant: Codec | None = None
) -> tuple[int, I64, U8, npt.NDArray[Any]]:
    """Verify and decode a block: (posting, slots, versions, vectors (count, dim) float32);
    a "bits" block has no vectors to give: its entries (count, words) uint64 instead (the
    rows are in the rerank store)."""
    magic, crc, nbytes, count, posting, dim, cap, width = BLOCK_HEADER.unpack_from(buf.data, 0)
    good = width in STORED and block_layout(count, dim, width)[2] == nbytes
    if magic != BLOCK_MAGIC or nbytes > len(buf) or not good:
        raise FormatError(f"{where}: torn or corrupt posting block header")
    if zlib.crc32(buf.data[8:nbytes]) != crc:
        raise FormatError(f"{where}: posting block CRC mismatch (posting {posting})")
    _, vec_off, _ = block_layout(count, dim, width)
    slots = buf[64 : 64 + SLOT_BYTES * cap].view(SLOT_DTYPE)[:count].astype(np.int64)
    versions = buf[64 + SLOT_BYTES * cap : 64 + SLOT_BYTES * cap + count].copy()
    if width == BITS_WIDTH:
        entries = from_lanes(buf[vec_off:nbytes].view(np.uint64), count, dim)
        return int(posting), slots, versions, entries
    stored = buf[vec_off:nbytes].view(STORED[width]).reshape(dim, cap)[:, :count].T
    if width == 1:
        if not isinstance(quant, Quantizer):
            raise FormatError(f"{where}: int8 block without a quantizer")
        return int(posting), slots, versions, quant.decode(stored)
    vectors = stored.astype(np.float32)
    return int(posting), slots, versions, vectors


def pack_offsets(sizes: npt.NDArray[np.int64], start: int) -> npt.NDArray[np.int64]:
    """Remainder best-fit: offsets so every block spans exactly ceil(size/4096) pages."""
    buckets: dict[int, list[int]] = {}
    for i in np.argsort(sizes, kind="stable")[::-1]:
        r = int(sizes[i]) % PAGE or PAGE
        buckets.setdefault(r, []).append(int(i))
    order = sorted(buckets, reverse=True)
    out = np.empty(len(sizes), dtype=np.int64)
    pos, left = start, len(sizes)
    while left:
        free = PAGE - pos % PAGE
        r = next((r for r in order if r <= free and buckets[r]), 0)
        if not r:
            pos += free
            continue
        i = buckets[r].pop()
        out[i] = pos
        pos += int(sizes[i])
        left -= 1
    return out


class PostingFile:
    """One posting file: block allocation through its space map, verified reads, fsync."""

    path: Path  # the file
    dim: int  # vector dimension
    width: int  # bytes per stored component: 4 (float32), 2 (float16), 1 (int8 codes), 8 (bits)
    quant: Codec | None  # the int8 quantizer (width 1) or the bits coder (width 8)
    full_cap: int  # entries of a full block, whose extent is whole pages (0: none)
    space: SpaceMap  # free and pending extents; `space.end` is the end of the data
    capacity: int  # current file size (extended in chunks, cut back when the end drops)
    fd: int  # read-write file descriptor
    verified: Verified  # block starts whose CRC passed since their last write
    poisoned: str  # why the file may no longer be published ("" if it may)
    found_size: int  # an existing file's size when opened, before its tail is cut; -1: new

    def __init__(
        self,
        path: Path,
        dim: int,
        length: int | None = None,
        width: int = 4,
        quant: Codec | None = None,
        full_cap: int = 0,
    ) -> None:
        """Create the file, or open it at its durable `length` (what follows is dropped).
        Until `attach` names the table, every existing byte counts as live."""
        self.path, self.dim, self.width, self.quant = path, dim, width, quant
        self.full_cap = full_cap  # entries of a full block: its extent is whole pages
        self.verified, self.poisoned, self.fd = Verified(), "", -1
        self.found_size = -1  # an existing file's size when opened (see `attach`)
        new = not path.exists()
        if new and length is not None:  # a checkpoint names it: it must be there
            raise FormatError(f"{path}: posting file is missing")
        if not new and length is None and path.stat().st_size < 24:
            new = True  # a new file whose header write failed (a build to be retried)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            # A build that fails drops its new file unclosed: the descriptor goes with it.
            self._finalizer = weakref.finalize(self, os.close, self.fd)
            # Not at interpreter exit: the database's own close (run then) still writes
            # through this descriptor, and the OS closes it when the process ends.
            self._finalizer.atexit = False
            if new:
                header = pack_header(MAGIC, VERSION) + struct.pack("<II", dim, width)
                pwrite_all(self.fd, header, 0, path)
                length = PAGE
            else:
                head = os.pread(self.fd, 32, 0)
                version = check_header(head, MAGIC, READS, path)
                if len(head) < 24:
                    raise FormatError(f"{path}: torn posting file header ({len(head)} bytes)")
                found = struct.unpack_from("<II", head, 16)
                if found != (dim, width):
                    raise FormatError(f"{path}: (dim, width) {found}, expected {(dim, width)}")
                if version < VERSION and width == BITS_WIDTH:
                    raise FormatError(
                        f"{path}: 1-bit entries of format {version} (float32 factors in every "
                        f"lane group); this build reads format {VERSION}: rebuild the index"
                    )
                length = PAGE if length is None else length
                self.found_size = os.fstat(self.fd).st_size  # `attach` checks the table
            self.space = SpaceMap(PAGE, length)
            self._truncate(length)  # drop any tail written after the last checkpoint
        except (VecdbError, OSError) as exc:
            self.close()
            if isinstance(exc, OSError):
                raise FormatError(f"{path}: cannot open the posting file ({exc})") from exc
            raise
        self.capacity = length
        self.reserve(0)

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise os_error(exc, f"resizing {self.path} to {size} bytes") from exc

    @property
    def length(self) -> int:
        """End of the data (what a checkpoint records as the durable length)."""
        return self.space.end

    def reserve(self, extra: int) -> None:
        """Make sure `extra` more bytes fit below the file size."""
        need = self.length + extra + PAGE
        if need > self.capacity:
            chunk = min(GROW, max(GROW_MIN, self.length // GROW_SHARE))
            capacity = -(-max(need, self.capacity + chunk) // PAGE) * PAGE
            self._truncate(capacity)
            self.capacity = capacity

    # --- write -------------------------------------------------------------------------------

    def append(self, blocks: list[U8], limit: int | None = None) -> npt.NDArray[np.int64]:
        """Write blocks where the space map puts them (free extents first, best fit, else at
        the end); return their offsets. With `limit`, the data end may not pass it: if a
        block would take it there, nothing is written and `NoRoom` is raised."""
        offsets = np.array([self.space.alloc(len(b), limit=limit) for b in blocks], np.int64)
        if (offsets < 0).any():
            placed = np.flatnonzero(offsets >= 0)
            self.unallocate([int(offsets[i]) for i in placed], [len(blocks[i]) for i in placed])
            raise NoRoom(f"{self.path}: no room below byte {limit} for {len(blocks)} blocks")
        self.reserve(0)
        self._write(offsets, blocks)
        return offsets

    def write_packed(self, blocks: list[U8]) -> npt.NDArray[np.int64]:
        """Write many blocks (bulk build, compaction): the largest into free extents first,
        the rest packed by remainder best fit after the end."""
        sizes = np.array([len(b) for b in blocks], dtype=np.int64)
        offsets = np.full(len(blocks), -1, dtype=np.int64)
        if self.space.free_bytes:
            for i in np.argsort(-sizes, kind="stable"):
                offsets[i] = self.space.alloc(int(sizes[i]), grow=False)
        rest = np.flatnonzero(offsets < 0)
        start = self.length
        if len(rest):
            offsets[rest] = pack_offsets(sizes[rest], start)
            self.space.place_at_end(offsets[rest], sizes[rest])
        self.reserve(0)
        inside = np.flatnonzero(offsets < start)
        self._write(offsets[inside], [blocks[i] for i in inside])
        self._write_run(start, offsets[rest], [blocks[i] for i in rest])
        return offsets

    def move(self, block: U8, below: int) -> int:
        """Write a block into free space wholly below `below` (defragmentation: a posting's
        rewrite moving towards the start); return its offset, or -1 (nothing written) if no
        free extent there can take it."""
        off = self.space.alloc(len(block), below=below)
        if off >= 0:
            self._write(np.array([off], dtype=np.int64), [block])
        return off

    def unallocate(self, offsets: list[int], sizes: list[int]) -> None:
        """Give back extents allocated (and written) but never published in a table: no
        checkpoint and no search knows them, so they are free at once."""
        for off, size in zip(offsets, sizes, strict=True):
            self.space.release(off, size, fresh=True)
        self.space.readers_done()

    def _write(self, offsets: npt.NDArray[np.int64], blocks: list[U8]) -> None:
        """pwrite blocks at their offsets, adjacent ones together."""
        order = np.argsort(offsets, kind="stable")
        run: list[U8] = []
        run_at = run_end = -1
        for i in order:
            off = int(offsets[i])
            if off != run_end or len(run) >= 512:
                self._pwrite(run, run_at)
                run, run_at = [], off
            run.append(blocks[i])
            run_end = off + len(blocks[i])
        self._pwrite(run, run_at)

    def _write_run(self, start: int, offsets: npt.NDArray[np.int64], blocks: list[U8]) -> None:
        """Write blocks packed into the fresh region after `start`, gaps zero-filled, in
        chunks of about 8 MiB."""
        chunk, chunk_start = bytearray(), start
        for i in np.argsort(offsets, kind="stable"):
            off = int(offsets[i])
            if off - chunk_start > len(chunk):
                chunk.extend(bytes(off - chunk_start - len(chunk)))
            chunk.extend(blocks[i].tobytes())
            if len(chunk) >= 8 << 20:
                self._pwrite([chunk], chunk_start)
                chunk_start += len(chunk)
                chunk = bytearray()
        self._pwrite([chunk], chunk_start)

    def _pwrite(self, parts: Sequence[U8 | bytearray], offset: int) -> None:
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        self.verified.forget(offset, offset + len(view))
        pwrite_all(self.fd, view, offset, self.path)

    # --- space -------------------------------------------------------------------------------

    def attach(self, table: BlockTable) -> BlockTable:
        """Make `table` release the blocks it drops to this file's space map, and rebuild the
        map from it: every byte of the data region it does not reference becomes free. Call it
        on open with the table of the checkpoint the file was opened at, or with a new table
        of a new file; never with a table that a published checkpoint does not match."""
        table.set_full_cap(self.full_cap)
        ext = table.extents()
        end = int((ext.offset + ext.size).max()) if len(ext.offset) else 0
        if end > self.found_size >= 0:  # cut short: the blocks would read as zeros
            raise FormatError(
                f"{self.path}: posting file is {self.found_size} bytes, its index names "
                f"blocks up to byte {end}, outside the file (truncated)"
            )
        try:
            self.space.rebuild(ext.offset, ext.size)
        except ValueError as e:
            raise FormatError(f"{self.path}: {e}") from None
        table.space = self.space
        self._shrink()
        return table

    def begin_checkpoint(self) -> Mark:
        """Call when the table to be checkpointed is captured; pass the mark to
        `checkpointed` once the manifest naming that table is published."""
        return self.space.begin_checkpoint()

    def checkpointed(self, mark: Mark) -> None:
        """The checkpoint captured at `mark` is durable: space released before it is reused
        from now on; a free tail is cut off the file."""
        self.space.checkpointed(mark)
        self._shrink()

    def readers_done(self, mark: Mark | None = None) -> None:
        """No search holds a table from before `mark` (default: now): blocks written and
        dropped since the last checkpoint began (in no checkpoint) are reused from now on."""
        self.space.readers_done(mark)
        self._shrink()

    def _shrink(self) -> None:
        """Cut the file back to its data end (plus one page) when the end dropped."""
        cap = -(-self.length // PAGE) * PAGE + PAGE
        if cap < self.capacity:
            self.capacity = cap  # first: a reader mapping now stays below the new size
            self._truncate(cap)

    # --- read --------------------------------------------------------------------------------

    def read_block(self, offset: int) -> tuple[int, I64, U8, npt.NDArray[Any]]:
        """Read and verify the block at `offset` (`decode_block`)."""
        head = os.pread(self.fd, BLOCK_HEADER.size, offset)
        nbytes = BLOCK_HEADER.unpack_from(head, 0)[2] if len(head) == BLOCK_HEADER.size else 0
        if offset + nbytes > self.length or nbytes < 64:
            raise FormatError(f"{self.path}: torn or corrupt posting block at {offset}")
        buf = np.frombuffer(os.pread(self.fd, nbytes, offset), dtype=np.uint8)
        return decode_block(buf, f"{self.path} at byte {offset}", self.quant)

    def encode(
        self, posting: int, slots: I64, versions: U8, vectors: npt.NDArray[np.floating[Any]]
    ) -> U8:
        """A block in this file's component format, padded to its extent."""
        return encode_block(
            posting, slots, versions, vectors, self.width, self.quant, self.full_cap
        )

    def sync(self) -> None:
        """fsync the data; after one failure never again (`framing.sync_or_poison`)."""
        sync_or_poison(self, self.fd, self.path)

    def close(self) -> None:
        if self.fd >= 0:
            self._finalizer()  # closes the descriptor, once
            self.fd = -1
