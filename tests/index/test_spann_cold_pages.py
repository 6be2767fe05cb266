"""Cold reads of a SPANN index's files (issue 12): the rerank store's map is advised
MADV_RANDOM (no read-around of 128 KiB per faulting row), and the nogil kernel that faults
in a block's pages before its CRC (`pairs.touch_pages`; when `blockcheck.check_blocks` calls
it: tests/index/test_spann_blockcheck_crc.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vecdb.index.spann.vectors import VectorStore
from vecdb.kernels.pairs import touch_pages


def _vm_flags(path: Path) -> list[set[str]]:
    """The VmFlags of every mapping of `path` in this process (/proc/self/smaps)."""
    out, current = [], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and ":" not in first:  # a mapping's header line
            current = line.endswith(str(path))
        elif current and first == "VmFlags:":
            out.append(set(line.split()[1:]))
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/smaps")
@pytest.mark.parametrize("rerank", ["float16", "float32"])
def test_the_rerank_store_map_is_advised_random(tmp_path: Path, rerank: str) -> None:
    store = VectorStore(tmp_path, 8, rerank)  # io="mmap", the warm reader
    store.write(np.arange(5000, dtype=np.int64), np.ones((5000, 8), np.float32))
    assert store.rows().shape[0] >= 5000
    flags = _vm_flags(store.path)
    assert flags and all("rr" in f for f in flags)  # rr: MADV_RANDOM
    store.close()


def test_touch_pages_reads_one_byte_of_each_page_of_the_blocks_given() -> None:
    rng = np.random.default_rng(4)
    u8 = rng.integers(0, 256, 50_000, dtype=np.uint8)
    at = np.array([0, 64, 4032, 9000, 20_480, 30_000], np.int64)
    nbytes = np.array([64, 3968, 200, 9000, 1, 8193], np.int64)
    todo = np.array([1, 2, 3, 5], np.int64)
    want = 0
    for i in todo.tolist():
        p, end = int(at[i]), int(at[i] + nbytes[i])
        while p < end:  # the block's first byte, then each page start inside it
            want += int(u8[p])
            p += 4096 - p % 4096
    assert touch_pages(u8, at, nbytes, todo, 4096) == want
    assert touch_pages(u8, at, nbytes, todo[:0], 4096) == 0
