"""Every write of an index file is checked: short writes are continued, a write without
progress and every OSError are vecdb errors naming the file, and after a failed fsync the
posting file refuses to be published again (the page cache may have dropped its data)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from vecdb.errors import DiskFull, FormatError, StorageError
from vecdb.index.spann import framing
from vecdb.index.spann.postings import PostingFile, encode_block


class Faults:
    def __init__(self, plan: list[object]) -> None:
        self.plan = plan  # per pwrite: an int (bytes to write at most) or an errno to raise
        self.fsync_errno = 0

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        step = self.plan.pop(0) if self.plan else None
        if isinstance(step, str):
            code = getattr(errno, step)
            raise OSError(code, os.strerror(code))
        n = len(data) if step is None else min(int(step), len(data))  # type: ignore[call-overload]
        return 0 if n == 0 else os.pwrite(fd, data[:n], offset)

    def fsync(self, fd: int) -> None:
        if self.fsync_errno:
            raise OSError(self.fsync_errno, os.strerror(self.fsync_errno))
        os.fsync(fd)


@pytest.fixture
def faults() -> object:
    f = Faults([])
    framing.faults = f
    yield f
    framing.faults = None


def block(n: int = 20) -> np.ndarray:
    x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
    return encode_block(1, np.arange(n), np.ones(n, np.uint8), x)


def test_short_writes_are_continued_to_the_end(tmp_path: Path, faults: Faults) -> None:
    f = PostingFile(tmp_path / "p.bin", 8)
    faults.plan = [7, 1, 100, 3]
    off = int(f.append([block()])[0])
    assert f.read_block(off)[0] == 1  # CRC ok: every byte landed
    f.close()


@pytest.mark.parametrize(
    ("step", "cls"), [("ENOSPC", DiskFull), ("EIO", StorageError), (0, StorageError)]
)
def test_failed_writes_raise_naming_the_file(
    tmp_path: Path, faults: Faults, step: object, cls: type
) -> None:
    f = PostingFile(tmp_path / "p.bin", 8)
    faults.plan = [5, step]
    with pytest.raises(cls, match=r"p\.bin"):
        f.append([block()])
    f.close()
    faults.plan = ["ENOSPC"]
    with pytest.raises(DiskFull, match="m.tmp"):
        framing.write_file_atomic(tmp_path / "m", b"x" * 10)
    assert not (tmp_path / "m.tmp").exists() and not (tmp_path / "m").exists()


def test_a_failed_fsync_poisons_the_posting_file(tmp_path: Path, faults: Faults) -> None:
    f = PostingFile(tmp_path / "p.bin", 8)
    f.append([block()])
    faults.fsync_errno = errno.EIO
    with pytest.raises(StorageError, match="fsync"):
        f.sync()
    faults.fsync_errno = 0
    with pytest.raises(FormatError, match="rebuilt"):  # never published after all
        f.sync()
    f.close()
