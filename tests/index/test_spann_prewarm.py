"""The background CRC check of a posting file after an open or a bulk build (`prewarm`).

After it, every block of every posting is remembered as checked, so the first query after a
restart takes the one-kernel fast path without checking a CRC (without it, the fast path
checks the query's blocks first);
a corrupt block is left unchecked and the search that reads it still raises; close during a
pass waits for its running step and leaves nothing running; a cold reader, a file over the
size limit and the "always" / "off" CRC modes start no pass. Real index files, real kernels.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from test_spann_support import clustered

from vecdb.errors import FormatError
from vecdb.index.params import SearchParams
from vecdb.index.spann import blockcheck, open_spann, prewarm, single
from vecdb.index.spann.index import SpannIndex
from vecdb.kernels.posting import block_bytes

N, D, K = 4_000, 20, 10


def _all_blocks(idx: SpannIndex) -> np.ndarray:
    t = idx.state.table
    offs = [off for p in range(len(t.post_first)) for off, _ in t.chain(p)]
    return np.asarray(offs, np.int64)


def _built(directory: Path, params: dict[str, object] | None = None) -> None:
    idx, _ = open_spann(D, "l2", params or {}, directory)
    try:
        idx.build(np.arange(N), clustered(N, D, seed=3))
        idx.checkpoint(1)
    finally:
        idx.close()


def test_after_an_open_every_block_is_checked_and_single_queries_take_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _built(tmp_path / "ix")
    q = clustered(20, D, seed=4)
    sp = SearchParams.parse({"max_postings": 8})
    # without the pass: a fresh open has nothing checked; the first query checks its blocks
    monkeypatch.setattr(prewarm, "MAX_BYTES", 0)
    idx, _ = open_spann(D, "l2", {}, tmp_path / "ix")
    try:
        assert idx.prewarm.passes == 0
        assert not idx.state.file.verified.known(_all_blocks(idx)).any()
        assert single.search_one_rerank(idx.state, q[:1], K, sp, 16) is not None
        known = idx.state.file.verified.known(_all_blocks(idx))
        assert known.any() and not known.all()  # its blocks only
    finally:
        idx.close()
    monkeypatch.undo()
    idx, _ = open_spann(D, "l2", {}, tmp_path / "ix")
    try:
        assert idx.prewarm.wait(30)
        assert idx.prewarm.passes == 1
        assert idx.state.file.verified.known(_all_blocks(idx)).all()
        for i in range(len(q)):  # every first query answered in one kernel call
            got = single.search_one_rerank(idx.state, q[i : i + 1], K, sp, 16)
            assert got is not None
            want = idx.search(q[i : i + 1], K, {"max_postings": 8})
            np.testing.assert_array_equal(got.slots, want.slots)
    finally:
        idx.close()


def test_a_bulk_build_is_checked_too(tmp_path: Path) -> None:
    idx, _ = open_spann(D, "cosine", {"vector_dtype": "float16"}, tmp_path / "ix")
    try:
        x = clustered(N, D, seed=5)
        idx.build(np.arange(N), x / np.linalg.norm(x, axis=1, keepdims=True))
        assert idx.prewarm.wait(30)
        assert idx.state.file.verified.known(_all_blocks(idx)).all()
    finally:
        idx.close()


def test_a_corrupt_block_stays_unchecked_and_the_search_reading_it_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _built(tmp_path / "ix")
    idx, _ = open_spann(D, "l2", {}, tmp_path / "ix")
    st = idx.state
    first = int(st.table.post_first[0])  # posting 0's first block
    off, cnt = int(st.table.blk_off[first]), int(st.table.blk_cnt[first])
    size = int(block_bytes(np.array([cnt], np.int64), st.dim, st.width)[0])
    slot = int(st.file.read_block(off)[1][0])  # a vector stored in it
    path = st.file.path
    idx.close()
    with open(path, "r+b") as f:  # flip the block's last byte (its entries, not its header)
        f.seek(off + size - 1)
        b = f.read(1)
        f.seek(off + size - 1)
        f.write(bytes([b[0] ^ 0x20]))
    with caplog.at_level(logging.WARNING, logger="vecdb.index.spann"):
        idx, _ = open_spann(D, "l2", {}, tmp_path / "ix")
        try:
            assert idx.prewarm.wait(30)
            assert not idx.state.file.verified.known(np.array([off], np.int64)).any()
            assert any("failed its CRC" in r.getMessage() for r in caplog.records)
            x = clustered(N, D, seed=3)  # the built vectors: the slot's own reads posting 0
            with pytest.raises(FormatError, match="CRC mismatch"):
                idx.search(x[slot : slot + 1], K, {"max_postings": 64})
        finally:
            idx.close()


def test_close_during_a_pass_waits_for_its_step_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No step of the pass starts once `close` has returned (it would read a closed file)."""
    _built(tmp_path / "ix")
    monkeypatch.setattr(prewarm, "STEP_POSTINGS", 1)  # many steps
    closed, late = [False], []
    real = prewarm.check_step

    def slow_step(st, first):  # type: ignore[no-untyped-def]
        if closed[0]:
            late.append(first)
        time.sleep(0.001)  # the pass is still running when close comes
        return real(st, first)

    monkeypatch.setattr(prewarm, "check_step", slow_step)
    for _ in range(3):
        idx, _ = open_spann(D, "l2", {}, tmp_path / "ix")
        time.sleep(0.01)
        assert not idx.prewarm.wait(0)  # mid-pass
        idx.close()
        closed[0] = True
        assert idx.prewarm.wait(30)
        closed[0] = False
    assert late == []


@pytest.mark.parametrize("case", ["direct", "always", "off", "too large"])
def test_no_pass_where_searches_check_anyway_or_the_file_is_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    _built(tmp_path / "ix")
    params: dict[str, object] = {}
    if case == "direct":
        params = {"io": "direct"}
    elif case == "too large":
        monkeypatch.setattr(prewarm, "MAX_BYTES", 4096)
    else:
        monkeypatch.setattr(blockcheck, "MODE", case)
    idx, _ = open_spann(D, "l2", params, tmp_path / "ix")
    try:
        assert idx.prewarm.passes == 0
    finally:
        idx.close()
