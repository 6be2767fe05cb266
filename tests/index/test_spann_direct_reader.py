"""The cold reader (`DirectReader.read`): whatever the blocks asked for (out of file order,
touching, sharing pages, nested, repeated, none), each one's bytes come back where the
returned offsets say, the device bytes count each read unit (the device's logical block, or
a page) once, a unit the kernel refuses moves the reader to pages, and a thread's reused
buffer is not shared with another thread's read. Real O_DIRECT reads of a file in tmp_path (or
buffered ones where the filesystem refuses O_DIRECT)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.index.spann import readers
from vecdb.index.spann.postings import PAGE, DirectReader, PostingFile
from vecdb.index.spann.readers import direct_unit

PAGES = 64


def make_file(directory: Path) -> tuple[Path, bytes]:
    data = np.random.default_rng(1).integers(0, 256, PAGES * PAGE, dtype=np.uint8).tobytes()
    path = directory / "postings.0.bin"
    path.write_bytes(data)
    return path, data


def reader_of(path: Path) -> DirectReader:
    return DirectReader(cast(PostingFile, SimpleNamespace(path=path)), threads=4)


def check(reader: DirectReader, data: bytes, offsets: list[int], sizes: list[int]) -> None:
    off = np.asarray(offsets, np.int64)
    nb = np.asarray(sizes, np.int64)
    buf, at, nread = reader.read(off, nb)
    for o, n, a in zip(offsets, sizes, at.tolist(), strict=True):
        assert buf[a : a + n].tobytes() == data[o : o + n]
    unit = reader.unit
    units = set()
    for o, n in zip(offsets, sizes, strict=True):
        units.update(range(o // unit, -(-(o + n) // unit)))
    assert nread == len(units) * unit


blocks = st.lists(
    st.tuples(st.integers(0, PAGES * PAGE - 1), st.integers(1, 5 * PAGE)), max_size=40
)


@settings(max_examples=80, deadline=None)
@given(blocks=blocks)
def test_every_block_comes_back_and_each_page_is_read_once(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[tuple[int, int]]
) -> None:
    path, data = make_file(tmp_path_factory.mktemp("direct"))
    reader = reader_of(path)
    try:
        kept = [(o, min(n, PAGES * PAGE - o)) for o, n in blocks]
        check(reader, data, [o for o, _ in kept], [n for _, n in kept])
    finally:
        reader.close()


@pytest.mark.parametrize("unit", [512, PAGE])
def test_touching_and_shared_pages_and_nothing(tmp_path: Path, unit: int) -> None:
    """In pages and in 512-byte sectors (a device refusing those moves the reader to pages;
    `check` counts in the unit the reader ends with)."""
    path, data = make_file(tmp_path)
    reader = reader_of(path)
    reader.unit = unit
    try:
        check(reader, data, [], [])
        check(reader, data, [3 * PAGE, 0, PAGE], [PAGE, PAGE, 2 * PAGE])  # one run, unsorted
        check(reader, data, [100, 900, 5000], [700, 3000, 10])  # blocks sharing pages
        check(reader, data, [0, 10, 40 * PAGE], [3 * PAGE, 50, PAGE])  # nested, then a gap
        check(reader, data, [PAGE, PAGE], [PAGE, PAGE])  # the same block twice
        # a read bigger than the kept buffer, then a small one again
        check(reader, data, [0], [PAGES * PAGE])
        check(reader, data, [7], [11])
    finally:
        reader.close()


def test_threads_reading_at_once_get_their_own_bytes(tmp_path: Path) -> None:
    path, data = make_file(tmp_path)
    reader = reader_of(path)
    rng = np.random.default_rng(4)
    jobs = [
        (sorted(rng.choice(PAGES - 2, 6, replace=False).tolist()), int(rng.integers(1, 2 * PAGE)))
        for _ in range(200)
    ]

    def one(job: tuple[list[int], int]) -> bool:
        pages, n = job
        off = np.asarray([p * PAGE + 5 for p in pages], np.int64)
        buf, at, _ = reader.read(off, np.full(len(off), n, np.int64))
        return all(
            buf[a : a + n].tobytes() == data[o : o + n]
            for o, a in zip(off.tolist(), at.tolist(), strict=True)
        )

    try:
        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(one, jobs))
    finally:
        reader.close()


@pytest.mark.parametrize("aio", [True, False])
def test_the_read_unit_is_the_device_block_and_a_refused_one_falls_back_to_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aio: bool
) -> None:
    """The unit is a power of two from 512 bytes to a page; a unit the kernel refuses for
    O_DIRECT (8 bytes: misaligned) gives an EINVAL (from the AIO event or from preadv),
    after which the reader reads pages and the bytes still come back whole."""
    monkeypatch.setattr(readers, "AIO", aio)
    path, data = make_file(tmp_path)
    reader = reader_of(path)
    try:
        assert 512 <= reader.unit <= PAGE and reader.unit & (reader.unit - 1) == 0
        assert reader.unit == (direct_unit(reader.fd) if reader.direct else PAGE)
        if not reader.direct:
            pytest.skip("no O_DIRECT on this filesystem: no alignment to refuse")
        reader.unit = 8
        check(reader, data, [100, 9000], [700, 3000])
        assert reader.unit == PAGE
        check(reader, data, [5, 3 * PAGE + 7], [50, 2 * PAGE])
    finally:
        reader.close()


def test_sector_units_read_fewer_bytes_than_pages_for_unaligned_blocks(tmp_path: Path) -> None:
    """Blocks packed at any byte offset: read in 512-byte units they cost less than in whole
    pages, with the same bytes returned."""
    path, data = make_file(tmp_path)
    reader = reader_of(path)
    reader.unit = 512
    try:
        off = np.asarray([1000, 9 * PAGE + 2000, 30 * PAGE + 3500], np.int64)
        nb = np.asarray([2000, 5000, 900], np.int64)
        small = reader.read(off, nb)[2]
        if reader.unit != 512:
            pytest.skip("the device refuses 512-byte O_DIRECT reads")
        reader.unit = PAGE
        paged = reader.read(off, nb)[2]
        assert small < paged
        check(reader, data, off.tolist(), nb.tolist())
    finally:
        reader.close()
