"""The block check's CRC32, with ISA-L and with its zlib fallback.

Blocks are written with zlib's CRC32 (`postings.encode_block`); searches verify them with
ISA-L's when `isal` is installed and with zlib's when it is not (`blockcheck.crc32`). Both
must accept every good block and reject a flipped byte, so a database written on one
machine reads on another whichever of the two it has."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vecdb.errors import FormatError
from vecdb.index.spann import blockcheck
from vecdb.index.spann.postings import encode_block
from vecdb.kernels.pairs import touch_pages

isal_zlib = pytest.importorskip("isal.isal_zlib")  # a declared dependency: always there

CRCS: dict[str, Callable[..., int]] = {"isal": isal_zlib.crc32, "zlib": zlib.crc32}


def test_isal_and_zlib_give_the_same_crc() -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 40_000, dtype=np.uint8)
    for start in (0, 1, 8, 61):
        for length in (0, 1, 7, 64, 4095, 4096, 16_387, 39_000):
            view = data[start : start + length].data  # what check_blocks hands it
            assert isal_zlib.crc32(view) == zlib.crc32(view), (start, length)


def blocks(dim: int = 12, width: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three encoded blocks back to back: (bytes, starts, entry counts)."""
    rng = np.random.default_rng(9)
    parts, at, cnt, off = [], [], [], 0
    for posting, count in enumerate((3, 17, 40)):
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
