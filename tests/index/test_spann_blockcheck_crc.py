"""The block check's CRC32, with ISA-L and with its zlib fallback.

Blocks are written with zlib's CRC32 (`postings.encode_block`); searches verify them with
ISA-L's when `isal` is installed and with zlib's when it is not (`blockcheck.crc32`). Both
must accept every good block and reject a flipped byte, so a database written on one
machine reads on another whichever of the two it has."""

from __future__ import annotations

import mmap
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vecdb.errors import FormatError
from vecdb.index.spann import blockcheck
from vecdb.index.spann.postings import encode_block
from vecdb.kernels.pairs import touch_pages
from vecdb.kernels.posting import block_bytes

isal_zlib = pytest.importorskip("isal.isal_zlib")  # a declared dependency: always there

CRCS: dict[str, Callable[..., int]] = {"isal": isal_zlib.crc32, "zlib": zlib.crc32}


def test_isal_and_zlib_give_the_same_crc() -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 40_000, dtype=np.uint8)
    for start in (0, 1, 8, 61):
        for length in (0, 1, 7, 64, 4095, 4096, 16_387, 39_000):
            view = data[start : start + length].data  # what check_blocks hands it
            assert isal_zlib.crc32(view) == zlib.crc32(view), (start, length)


@pytest.mark.parametrize("name", sorted(CRCS))
def test_block_crc_hashes_in_pieces_that_keep_the_gil(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # isal's and zlib's crc32 let go of the GIL from 5,121 bytes on: each piece stays below
    seen: list[int] = []

    def crc32(data: memoryview, value: int = 0) -> int:
        seen.append(len(data))
        return CRCS[name](data, value)

    monkeypatch.setattr(blockcheck, "crc32", crc32)
    data = np.random.default_rng(6).integers(0, 256, 40_000, dtype=np.uint8)
    for start in (0, 8, 61):
        for length in (0, 1, 4095, 4096, 4097, 5121, 16_387, 39_000):
            seen.clear()
            view = data[start : start + length].data
            assert blockcheck.block_crc(view) == zlib.crc32(view), (start, length)
            assert max(seen, default=0) <= 5120 and sum(seen) == length


def blocks(
    dim: int = 12, width: int = 2, counts: tuple[int, ...] = (3, 17, 40)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoded blocks of `counts` entries back to back: (bytes, starts, entry counts)."""
    rng = np.random.default_rng(9)
    parts, at, cnt, off = [], [], [], 0
    for posting, count in enumerate(counts):
        slots = np.arange(count, dtype=np.int64) + 100 * posting
        versions = np.ones(count, np.uint8)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        buf = encode_block(posting, slots, versions, vectors, width=width)
        parts.append(buf)
        at.append(off)
        cnt.append(count)
        off += len(buf)
    return np.concatenate(parts), np.array(at, np.int64), np.array(cnt, np.int64)


@pytest.mark.parametrize("name", sorted(CRCS))
def test_check_blocks_accepts_good_blocks_and_rejects_a_flip(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(blockcheck, "crc32", CRCS[name])
    monkeypatch.setattr(blockcheck, "MODE", "always")
    u8, at, cnt = blocks()
    blockcheck.check_blocks(u8, at, cnt, 12, 2, tmp_path / "postings.bin")  # all good
    bad = u8.copy()
    bad[int(at[2]) + 200] ^= 0x10  # inside the last block's entries, past its header
    with pytest.raises(FormatError, match=f"CRC mismatch at byte {int(at[2])}"):
        blockcheck.check_blocks(bad, at, cnt, 12, 2, tmp_path / "postings.bin")
    blockcheck.check_blocks(bad, at[:2], cnt[:2], 12, 2, tmp_path / "postings.bin")  # others fine


def test_check_blocks_rejects_a_flip_in_any_piece_of_a_large_block(tmp_path: Path) -> None:
    u8, at, cnt = blocks(counts=(5, 700, 9))  # the middle block: ~17 KiB, five CRC pieces
    size = int(block_bytes(cnt[1:2], 12, 2)[0])  # (the CRC covers the header's end to this)
    assert size > 4 * blockcheck.CRC_PIECE
    blockcheck.check_blocks(u8, at, cnt, 12, 2, tmp_path / "postings.bin", verified=None)
    for inside in (100, blockcheck.CRC_PIECE + 9, size - 1):
        bad = u8.copy()
        bad[int(at[1]) + inside] ^= 0x01
        with pytest.raises(FormatError, match=f"CRC mismatch at byte {int(at[1])}"):
            blockcheck.check_blocks(bad, at, cnt, 12, 2, tmp_path / "postings.bin")


def test_check_blocks_faults_in_only_the_file_blocks_it_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`touch_pages` (the pages faulted in without the GIL) runs for the blocks of the file's
    map still to hash, not for verified ones, nor for a cold read's buffer (no `verified`:
    its bytes are in memory already)."""
    u8, at, cnt = blocks()
    touched: list[list[int]] = []

    def spy(u8: np.ndarray, at: np.ndarray, nbytes: np.ndarray, todo: np.ndarray, page: int) -> int:
        touched.append(at[todo].tolist())
        return int(touch_pages(u8, at, nbytes, todo, page))

    monkeypatch.setattr(blockcheck, "MODE", "cached")
    monkeypatch.setattr(blockcheck, "touch_pages", spy)
    verified = blockcheck.Verified()
    path = tmp_path / "postings.bin"
    blockcheck.check_blocks(u8, at[:2], cnt[:2], 12, 2, path, verified=verified)
    blockcheck.check_blocks(u8, at, cnt, 12, 2, path, verified=verified)
    blockcheck.check_blocks(u8, at, cnt, 12, 2, path, verified=verified)  # all verified now
    blockcheck.check_blocks(u8, at, cnt, 12, 2, path)  # a read buffer: hashed, not touched
    assert touched == [at[:2].tolist(), at[2:].tolist()]


def test_check_blocks_prefetches_the_pages_of_the_file_blocks_it_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole pages (within the map) of the file's blocks still to hash are advised
    MADV_WILLNEED before they are faulted in, once; not those of verified blocks, nor of a
    cold read's buffer. The real madvise accepts them."""
    data, at, cnt = blocks()
    page = mmap.PAGESIZE
    ends = [*at[1:].tolist(), len(data)]
    sizes = [e - a for a, e in zip(at.tolist(), ends, strict=True)]
    starts = [0, page + 64, 3 * page - 64]  # the last one across a page boundary
    raw = bytearray(4 * page)
    for a, start, size in zip(at.tolist(), starts, sizes, strict=True):
        raw[start : start + size] = data[a : a + size].tobytes()
    path = tmp_path / "postings.bin"
    path.write_bytes(bytes(raw))
    events: list[tuple[str, int, int]] = []
    real = blockcheck._madvise
    assert real is not None  # Linux: the prefetch is there

    def advise(addr: int, length: int, advice: int) -> int:
        assert advice == mmap.MADV_WILLNEED
        events.append(("advise", addr - base, length))
        return int(real(addr, length, advice))

    def touch(u8: np.ndarray, at: np.ndarray, nbytes: np.ndarray, todo: np.ndarray, pg: int) -> int:
        events.append(("touch", len(todo), 0))
        return int(touch_pages(u8, at, nbytes, todo, pg))

    monkeypatch.setattr(blockcheck, "MODE", "cached")
    monkeypatch.setattr(blockcheck, "_madvise", advise)
    monkeypatch.setattr(blockcheck, "touch_pages", touch)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        u8 = np.frombuffer(mm, np.uint8)
        base = u8.ctypes.data
        offs = np.array(starts, np.int64)
        verified = blockcheck.Verified()
        blockcheck.check_blocks(u8, offs, cnt, 12, 2, path, verified=verified)
        blockcheck.check_blocks(u8, offs, cnt, 12, 2, path, verified=verified)  # verified now
        buf = np.frombuffer(bytes(raw), np.uint8)
        blockcheck.check_blocks(buf, offs, cnt, 12, 2, path)  # a read buffer
        del u8, buf
    want = [
        ("advise", s // page * page, min(-(-(s + n) // page) * page, 4 * page) - s // page * page)
        for s, n in zip(starts, sizes, strict=True)
    ]
    assert events == [*want, ("touch", 3, 0)]
    assert want[2][2] == 2 * page  # the block across a boundary: both its pages
    events.clear()  # more searches faulting blocks in at once than the bound: no advice
    monkeypatch.setattr(blockcheck, "PREFETCH_MAX_BUSY", 0)
    blockcheck.check_blocks(data, at, cnt, 12, 2, path, verified=blockcheck.Verified())
    assert events == [("touch", 3, 0)]
