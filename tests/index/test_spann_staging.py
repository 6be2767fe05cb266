"""A bulk build's staged input (`spann.staging`): an array on an unnamed file in the index
directory, found again by its descriptor, gone with its last view; a build child reads it
where it was written, and a build from it equals a build from a plain array."""

from __future__ import annotations

import errno
import gc
import os
from pathlib import Path

import numpy as np
import pytest

from vecdb.index.spann import child, open_spann, staging


def test_a_staged_array_is_an_unnamed_file_found_by_its_descriptor(tmp_path: Path) -> None:
    arr = staging.staged_rows(tmp_path, 100, 8)
    assert arr is not None and arr.shape == (100, 8) and arr.dtype == np.float32
    assert list(tmp_path.iterdir()) == []  # no name in the directory
    arr[:] = np.arange(800, dtype=np.float32).reshape(100, 8)
    fd = staging.staged_fd(arr)
    assert fd is not None
    assert os.fstat(fd).st_size == 100 * 8 * 4
    assert os.fstat(fd).st_blocks * 512 >= 100 * 8 * 4  # reserved, not sparse
    assert staging.staged_fd(arr[:40]) == fd  # its first rows: the child maps a prefix
    assert staging.staged_fd(np.ascontiguousarray(arr)) == fd
    assert staging.staged_fd(arr[1:]) is None  # not from its first byte
    assert staging.staged_fd(arr[:, :4]) is None  # not contiguous
    assert staging.staged_fd(arr.copy()) is None
    seen = staging.open_staged(fd, 40, 8)  # what the child maps through the descriptor
    np.testing.assert_array_equal(seen, arr[:40])
    del seen, arr
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # the last view gone: the descriptor closed, the blocks given back


@pytest.mark.parametrize("fail", ["open", "fallocate"])
def test_no_unnamed_file_or_no_room_means_none(
    fail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(errno.EOPNOTSUPP if fail == "open" else errno.ENOSPC, "refused")

    monkeypatch.setattr(staging.os, "open" if fail == "open" else "posix_fallocate", refuse)
    assert staging.staged_rows(tmp_path, 100, 8) is None
    assert staging.staged_rows(tmp_path, 0, 8) is None


def _build(directory: Path, x: np.ndarray, staged: bool, written: list[tuple[int, ...]]) -> list:
    idx, _ = open_spann(x.shape[1], "l2", {"threads": 1, "vector_dtype": "float32"}, directory)
    if staged:
        v = idx.build_input(len(x))
        assert v is not None
        v[:] = x
    else:
        v = x.copy()
    before = len(written)
    idx.build(np.arange(len(x)), v)
    kinds = written[before:]
    got = idx.search(x[:30] + 0.01, 10, {"max_postings": 16}).slots
    idx.close()
    return [kinds, got]


def test_a_child_build_reads_the_staged_input_where_it_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(child.ENV, "0")  # every build in a child
    written: list[tuple[int, ...]] = []
    write_array = np.lib.format.write_array

    def record(f: object, arr: np.ndarray, *a: object, **k: object) -> None:
        written.append(arr.shape)
        write_array(f, arr, *a, **k)

    monkeypatch.setattr(np.lib.format, "write_array", record)
    x = np.random.default_rng(5).standard_normal((3_000, 12)).astype(np.float32)
    plain_written, plain = _build(tmp_path / "a", x, False, written)
    staged_written, staged = _build(tmp_path / "b", x, True, written)
    assert plain_written == [(3_000,), (3_000, 12)]  # slots and vectors
    assert staged_written == [(3_000,)]  # slots only: the child mapped the vectors
    np.testing.assert_array_equal(staged, plain)  # one thread: the same index
    assert not list((tmp_path / "b").glob("build.*"))


def test_no_staged_input_where_the_build_stays_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(child.ENV, "off")
    idx, _ = open_spann(12, "l2", {}, tmp_path / "i")
    assert idx.build_input(3_000) is None
    idx.close()
