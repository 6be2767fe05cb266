"""The cold reader's two ways to read (`DirectReader.read`): native AIO (one submit for all
of a query's runs) and the thread pool of preadv calls give the same bytes at the same
places and count the same device bytes, including more runs than one AIO submit takes
(`aio.DEPTH`) and a run ending in the file's last, partial page. Real O_DIRECT reads of a
file in tmp_path (buffered ones, and no AIO, where the filesystem refuses O_DIRECT)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from vecdb.index.spann import readers
from vecdb.index.spann.aio import DEPTH
from vecdb.index.spann.postings import PAGE, DirectReader, PostingFile


def _reader(path: Path, aio: bool, monkeypatch: pytest.MonkeyPatch) -> DirectReader:
    monkeypatch.setattr(readers, "AIO", aio)
    return DirectReader(cast(PostingFile, SimpleNamespace(path=path)), threads=4)


@pytest.mark.parametrize("aio", [True, False])
def test_many_runs_and_a_short_last_page_come_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aio: bool
) -> None:
    """3 x DEPTH separate runs (every other page, out of order, one reaching into the last,
    partial page): every block's bytes where the offsets say, each read unit counted once; with
    AIO on, the reader has its context pool wherever it reads with O_DIRECT."""
    pages = 3 * DEPTH * 2 + 1
    data = np.random.default_rng(3).integers(0, 256, pages * PAGE - 100, dtype=np.uint8)
    path = tmp_path / "postings.0.bin"
    path.write_bytes(data.tobytes())
    reader = _reader(path, aio, monkeypatch)
    try:
        assert (reader.aio is not None) == (
            aio and reader.direct and readers.AioPool.create() is not None
        )
        rng = np.random.default_rng(4)
        firsts = rng.permutation(np.arange(0, pages, 2))
        off = (firsts * PAGE + rng.integers(0, PAGE // 2, len(firsts))).astype(np.int64)
        nb = np.minimum(rng.integers(1, PAGE // 2, len(off)), len(data) - off).astype(np.int64)
        buf, at, nread = reader.read(off, nb)
        for o, n, a in zip(off.tolist(), nb.tolist(), at.tolist(), strict=True):
            assert buf[a : a + n].tobytes() == data[o : o + n].tobytes()
        unit = reader.unit
        units = -(-(off + nb) // unit) - off // unit  # the runs share no unit
        assert nread == int(units.sum()) * unit
    finally:
        reader.close()


@pytest.mark.parametrize("unit", [512, PAGE])
def test_aio_and_thread_pool_read_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unit: int
) -> None:
    """The same random reads (touching, overlapping, repeated blocks) through both ways, in
    sectors and in pages: identical buffers over the blocks, identical offsets and byte
    counts."""
    data = np.random.default_rng(5).integers(0, 256, 64 * PAGE, dtype=np.uint8)
    path = tmp_path / "postings.0.bin"
    path.write_bytes(data.tobytes())
    on, off_ = _reader(path, True, monkeypatch), _reader(path, False, monkeypatch)
    on.unit = off_.unit = unit
    try:
        rng = np.random.default_rng(6)
        for _ in range(30):
            n = int(rng.integers(0, 60))
            off = rng.integers(0, 60 * PAGE, n).astype(np.int64)
            nb = rng.integers(1, 3 * PAGE, n).astype(np.int64)
            a = on.read(off, nb)
            b = off_.read(off, nb)
            np.testing.assert_array_equal(a[1], b[1])
            assert a[2] == b[2]
            for o, m, at in zip(off.tolist(), nb.tolist(), a[1].tolist(), strict=True):
                assert a[0][at : at + m].tobytes() == data[o : o + m].tobytes()
                assert b[0][at : at + m].tobytes() == data[o : o + m].tobytes()
    finally:
        on.close()
        off_.close()


@pytest.mark.parametrize("call", ["io_submit", "io_getevents"])
def test_a_signal_during_a_native_read_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """A signal (a profiler, a child exiting) can cut io_submit or io_getevents short with
    EINTR: the read retries and returns the bytes; it is not an error (an EINTR of
    io_getevents was once raised afterwards as io_submit's error)."""
    import ctypes

    from vecdb.index.spann import aio

    pages = 8
    data = np.random.default_rng(5).integers(0, 256, pages * PAGE, dtype=np.uint8)
    path = tmp_path / "postings.0.bin"
    path.write_bytes(data.tobytes())
    reader = _reader(path, True, monkeypatch)
    if reader.aio is None:
        reader.close()
        pytest.skip("no native AIO with O_DIRECT on this filesystem")
    real = aio.LIBC
    nr = aio._NR[{"io_submit": 3, "io_getevents": 2}[call]]
    cuts = []

    class Interrupting:
        """libc with one EINTR on the first `call`."""

        def syscall(self, number: int, *args: object) -> int:
            if number == nr and not cuts:
                cuts.append(number)
                ctypes.set_errno(4)
                return -1
            return int(real.syscall(number, *args))

    monkeypatch.setattr(aio, "LIBC", Interrupting())
    try:
        off = np.array([0, 3 * PAGE + 10, 6 * PAGE], np.int64)
        nb = np.array([100, 200, PAGE], np.int64)
        buf, at, _ = reader.read(off, nb)
        for o, n, a in zip(off.tolist(), nb.tolist(), at.tolist(), strict=True):
            assert buf[a : a + n].tobytes() == data[o : o + n].tobytes()
        assert cuts == [nr]
    finally:
        reader.close()
