"""The native-AIO reads (`aio.AioContext.read`): a submit interrupted by a signal (EINTR, as a
sampling profiler's) is retried, not raised; a read the kernel refuses (a misaligned O_DIRECT
read: EINVAL in its event) raises OSError with that errno, not a short-read FormatError.
Real O_DIRECT reads of a file in tmp_path; skipped where the system has no native AIO or the
filesystem no O_DIRECT."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.index.spann import aio

PAGE = 4096


@pytest.fixture
def direct_file(tmp_path: Path) -> tuple[int, bytes]:
    if aio.AioPool.create() is None:
        pytest.skip("no native AIO here")
    data = np.random.default_rng(7).integers(0, 256, 16 * PAGE, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except (OSError, AttributeError):
        pytest.skip("no O_DIRECT on this filesystem")
    return fd, data


def _buffer(size: int) -> tuple[mmap.mmap, int]:
    buf = mmap.mmap(-1, size)
    return buf, ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_an_interrupted_submit_is_retried(
    direct_file: tuple[int, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first io_submit fails with EINTR: the reads are submitted again and all arrive."""
    fd, data = direct_file
    libc = aio.LIBC
    assert libc is not None and aio._NR is not None
    real = libc.syscall
    failed = []

    class Interrupting:
        def syscall(self, nr: int, *args: Any) -> int:
            if nr == aio._NR[3] and not failed:  # type: ignore[index]
                failed.append(nr)
                ctypes.set_errno(errno.EINTR)
                return -1
            return int(real(nr, *args))

    ctx = aio.AioContext()  # io_setup with the real one
    monkeypatch.setattr(aio, "LIBC", Interrupting())
    buf, addr = _buffer(4 * PAGE)
    try:
        at = np.arange(4, dtype=np.int64) * PAGE
        offs = np.array([3, 0, 9, 15], np.int64) * PAGE
        ctx.read(fd, addr, at, np.full(4, PAGE, np.int64), offs, np.ones(4, np.int64), "f")
        assert failed
        for a, o in zip(at.tolist(), offs.tolist(), strict=True):
            assert buf[a : a + PAGE] == data[o : o + PAGE]
    finally:
        monkeypatch.setattr(aio, "LIBC", libc)
        ctx.close()
        os.close(fd)


def test_a_refused_read_raises_its_errno(direct_file: tuple[int, bytes]) -> None:
    """A read at a misaligned file offset: OSError(EINVAL) naming the file."""
    fd, _ = direct_file
    ctx = aio.AioContext()
    buf, addr = _buffer(2 * PAGE)
    try:
        with pytest.raises(OSError) as e:
            ctx.read(fd, addr, [0], [PAGE], [3], [1], "f.bin")
        assert e.value.errno == errno.EINVAL and "f.bin" in str(e.value)
        ctx.read(fd, addr, [0], [PAGE], [PAGE], [1], "f.bin")  # the context still works
    finally:
        ctx.close()
        del buf
        os.close(fd)
