"""A corrupt posting file met at run time: the search that meets it is answered exactly
from the stored vectors, the index is quarantined and rebuilt in the background, and the
collection reports itself degraded until the rebuild is done. Real RocksDB, real SPANN."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from reliability_data import ALL, K, build, open_db, posting_file, queries, wrong_rows

from vecdb.index.spann import blockcheck
from vecdb.rpc import convert
from vecdb.types import SearchResult


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("io", ["mmap", "direct"])
def test_a_flipped_vector_byte_is_never_a_wrong_answer(tmp_path: Path, io: str) -> None:
    """A bit flipped inside a block's vectors: the search answers exactly (fallback), the
    index is quarantined and rebuilt, and later searches are exact from the new index."""
    x = build(tmp_path / "db", io=io)
    pf = posting_file(tmp_path / "db")
    flip(pf, pf.stat().st_size // 2)
    db = open_db(tmp_path / "db")
    try:
        q = queries()
        res = db.search("c", q, k=K, params=ALL)
        assert wrong_rows(res.ids, x, q) == 0
        assert "CRC" in res.degraded or "corrupt" in res.degraded  # flagged in the response
        status = db.stats("c")["index_status"]
        assert "CRC" in status["degraded"] or "corrupt" in status["degraded"]
        aside = tmp_path / "db" / "collections"
        wait_for(lambda: any(aside.glob("*.quarantine")))  # the worker moved it aside
        assert wrong_rows(db.search("c", q, k=K, params=ALL).ids, x, q) == 0  # exact buffer
        wait_for(lambda: db.stats("c")["index_status"]["degraded"] == "")  # rebuilt by itself
        res = db.search("c", q, k=K, params=ALL)
        assert wrong_rows(res.ids, x, q) == 0 and res.degraded == ""
        assert db.stats("c")["index_status"]["builds"] >= 1
    finally:
        db.close()
    db = open_db(tmp_path / "db")  # the rebuilt index reopens clean
    try:
        assert wrong_rows(db.search("c", q, k=K, params=ALL).ids, x, q) == 0
        assert not any((tmp_path / "db" / "collections").glob("*.quarantine"))  # cleaned
        assert db.stats("c")["index_status"]["builds"] == 0  # opened, not rebuilt again
    finally:
        db.close()


def test_the_crc_cache_forgets_rewritten_blocks() -> None:
    """Bits set by a verification are cleared by a write over the block's bytes."""
    v = blockcheck.Verified()
    offs = np.array([0, 64, 4096, 8192 + 128], np.int64)
    v.mark(offs)
    assert v.known(offs).all()
    v.forget(64, 4096 + 64)
    assert v.known(offs).tolist() == [True, False, False, True]
    v.forget(0, 1 << 20)
    assert not v.known(offs).any()


def test_the_degraded_flag_travels_over_the_wire() -> None:
    """SearchResponse.degraded carries the reason to the remote client (same as embedded)."""
    res = SearchResult(np.array([[1, -1]]), np.array([[0.5, np.inf]], np.float32), degraded="x")
    back = convert.result_from_proto(convert.result_to_proto(res))
    assert back.degraded == "x" and back.ids.tolist() == [[1, -1]]
    plain = convert.result_from_proto(convert.result_to_proto(SearchResult(res.ids, res.distances)))
    assert plain.degraded == ""
