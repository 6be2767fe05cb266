"""One warm query's fast path (`spann.single`, one `kernels.single.search_one` call) gives
what the ordinary path gives: the same slots, the same distance bits and the same counters,
for every metric and posting dtype, also when its blocks' CRCs are still to be checked (it
checks them itself); and it steps aside (returns None) exactly where the ordinary path has
more to do: a row short of k results, a corrupt block (the ordinary path raises naming the
file), more unverified blocks than its list holds. `kernels.unitrow`'s sum is numpy's, bit
for bit."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_spann_support import clustered

from vecdb.errors import FormatError
from vecdb.index.params import SearchParams
from vecdb.index.spann import open_spann, rerank, search, single
from vecdb.kernels.unitrow import _pairwise

N, D, K = 4_000, 20, 10


def _ordinary(monkeypatch: pytest.MonkeyPatch, st, q, k, sp, fast="search_one"):  # type: ignore[no-untyped-def]
    """`search.search` with the fast path `fast` switched off."""
    with monkeypatch.context() as m:
        m.setattr(single, fast, lambda *a: None)
        return search.search(st, q, k, sp, None)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_fast_path_equals_the_ordinary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, metric: str
) -> None:
    """Slots, distance bits and counters equal, whether the blocks' CRCs were checked
    before (by an ordinary pass) or are checked by the fast path itself."""
    x = clustered(N, D, seed=3)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, _ = open_spann(D, metric, {"vector_dtype": dtype}, tmp_path / "ix")
    try:
        idx.build(np.arange(N), x)
        st = idx.state
        q = clustered(60, D, seed=4)
        if metric == "cosine":
            q /= np.linalg.norm(q, axis=1, keepdims=True)
        for mp in (2, 8, 32):
            sp = SearchParams.parse({"max_postings": mp})
            idx.prewarm.wait()  # the background check after the build is done
            st.file.verified.bits[:] = 0  # nothing verified yet: the fast path checks
            first = [single.search_one(st, q[i : i + 1], K, sp) for i in range(5)]
            assert st.file.verified.bits.any()
            st.file.verified.bits[:] = 0
            want = [_ordinary(monkeypatch, st, q[i : i + 1], K, sp) for i in range(len(q))]
            _same(first, want)
            for i, w in enumerate(want):
                got = single.search_one(st, q[i : i + 1], K, sp)
                assert got is not None
                np.testing.assert_array_equal(got.slots, w.slots)
                assert got.distances.tobytes() == w.distances.tobytes()
                assert got.stats == w.stats
                via = idx.search(q[i], K, {"max_postings": mp})  # the public call takes it
                np.testing.assert_array_equal(via.slots, w.slots)
    finally:
        idx.close()


def _built_l2(tmp_path: Path, seed: int):  # type: ignore[no-untyped-def]
    """An l2 index (the default postings and rerank store) built on N clustered points,
    and 4 clustered queries (the next seed)."""
    idx, _ = open_spann(D, "l2", {}, tmp_path / "ix")
    try:
        idx.build(np.arange(N), clustered(N, D, seed=seed))
    except BaseException:
        idx.close()
        raise
    return idx, clustered(4, D, seed=seed + 1)


def test_short_rows_and_corrupt_blocks_take_the_ordinary_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k above what the read postings hold: None (the ordinary path widens to k results);
    a block whose header is damaged: None, and the public search raises FormatError."""
    idx, q = _built_l2(tmp_path, seed=5)
    try:
        st = idx.state
        sp = SearchParams.parse({"max_postings": 2})
        for i in range(len(q)):
            _ordinary(monkeypatch, st, q[i : i + 1], K, sp)  # verifies the blocks' CRCs
            assert single.search_one(st, q[i : i + 1], K, sp) is not None
        big = 1500  # more than two postings hold: the ordinary path widens
        assert single.search_one(st, q[:1], big, sp) is None
        full = idx.search(q[0], big, {"max_postings": 2})
        assert (full.slots[0] >= 0).all()
        q0 = q[:1]
        first = min(_blocks_of(st, q0, sp))  # a block the query reads
        with open(st.file.path, "r+b") as f:  # the map is shared: it sees the write
            f.seek(first)
            f.write(b"XXXX")  # its magic
        assert single.search_one(st, q0, K, sp) is None
        with pytest.raises(FormatError):
            idx.search(q0, K, {"max_postings": 2})
    finally:
        idx.close()


def _same(got, want) -> None:  # type: ignore[no-untyped-def]
    """The fast path's answers `got` are the ordinary path's (first len(got) of `want`)."""
    for g, w in zip(got, want, strict=False):
        assert g is not None
        np.testing.assert_array_equal(g.slots, w.slots)
        assert g.distances.tobytes() == w.distances.tobytes()
        assert g.stats == w.stats


def test_unverified_blocks_failing_their_crc_or_too_many_take_the_ordinary_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block whose payload no longer matches its CRC, not yet verified: None, nothing
    marked verified, and the public search raises FormatError; more unverified blocks than
    the thread's list holds: None (the ordinary path checks them), then the fast path."""
    idx, q = _built_l2(tmp_path, seed=11)
    try:
        st = idx.state
        sp = SearchParams.parse({"max_postings": 4})
        idx.prewarm.wait()
        st.file.verified.bits[:] = 0
        with monkeypatch.context() as m:  # a list of one block, on a thread of its own
            m.setattr(single, "CHECK_BLOCKS", 1)
            m.setattr(single, "_LISTS", threading.local())
            assert len(_blocks_of(st, q[:1], sp)) > 1
            assert single.search_one_rerank(st, q[:1], K, sp, 16) is None
            assert not st.file.verified.bits.any()
            idx.search(q[:1], K, {"max_postings": 4})  # the ordinary path checks them
            assert single.search_one_rerank(st, q[:1], K, sp, 16) is not None
        st.file.verified.bits[:] = 0
        first = min(_blocks_of(st, q[1:2], sp))
        with open(st.file.path, "r+b") as f:  # past the block's header: its CRC fails
            f.seek(first + 64)
            byte = f.read(1)
            f.seek(first + 64)
            f.write(bytes([byte[0] ^ 0xFF]))
        assert single.search_one_rerank(st, q[1:2], K, sp, 16) is None
        assert not st.file.verified.bits.any()
        with pytest.raises(FormatError, match="CRC"):
            idx.search(q[1:2], K, {"max_postings": 4})
    finally:
        idx.close()


def _blocks_of(st, q, sp):  # type: ignore[no-untyped-def]
    """Block offsets the query's selected postings start with."""
    from vecdb.index.spann.assign import nearest_heads

    m = min(sp.max_postings, st.live_heads)
    labels, hd = nearest_heads(st.graph, st.live_heads, q, sp.head_ef, m, 1)
    sel = search.select_postings(labels, hd, st.metric, sp)
    return {int(st.table.blk_off[st.table.post_first[p]]) for p in sel[0] if p >= 0}


@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 9, 50, 127, 128, 129, 255, 384, 1000, 4099])
def test_pairwise_sum_is_numpys(n: int) -> None:
    """`_pairwise` sums in numpy's order: equal bits to np.add.reduce, at every length
    around its block boundaries (8, 128 and halves above that)."""
    rng = np.random.default_rng(n)
    for scale in (1e-3, 1.0, 1e6):
        w = (rng.standard_normal(n) * scale) ** 2
        assert _pairwise(w, n) == np.add.reduce(w)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("d", [130, 384])
def test_bits_fast_path_equals_the_ordinary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metric: str, d: int
) -> None:
    """A "bits" index: one kernel call (search, estimates, exact rerank) gives the ordinary
    path's slots, distance bits and counters (rerank rows and bytes included), at the
    default R and a small one, also while its blocks are unverified (it checks them); it
    steps aside when the probed postings hold fewer than R slots (the ordinary path widens)."""
    n = 3_000
    x = clustered(n, d, seed=7)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, _ = open_spann(d, metric, {"vector_dtype": "bits", "threads": 1}, tmp_path / "ix")
    try:
        idx.build(np.arange(n), x)
        st = idx.state
        q = clustered(40, d, seed=8)
        if metric == "cosine":
            q /= np.linalg.norm(q, axis=1, keepdims=True)
        for params in ({"max_postings": 4}, {"max_postings": 16, "rerank_k": 30}):
            sp = SearchParams.parse(params)
            idx.prewarm.wait()  # the background check after the build is done
            wide = max(K, rerank.candidates(st, sp))  # (not given: the calibrated value)
            st.file.verified.bits[:] = 0  # nothing verified: the fast path checks them
            first = [single.search_one_bits(st, q[i : i + 1], K, sp, wide) for i in range(3)]
            assert st.file.verified.bits.any()
            st.file.verified.bits[:] = 0
            want = [
                _ordinary(monkeypatch, st, q[i : i + 1], K, sp, "search_one_bits")
                for i in range(len(q))
            ]
            _same(first, want)
            for i, w in enumerate(want):
                got = single.search_one_bits(st, q[i : i + 1], K, sp, wide)
                assert got is not None
                np.testing.assert_array_equal(got.slots, w.slots)
                assert got.distances.tobytes() == w.distances.tobytes()
                assert got.stats == w.stats
                assert got.stats.extra["rerank_rows"] == wide
                via = idx.search(q[i], K, params)  # the public call takes it
                np.testing.assert_array_equal(via.slots, w.slots)
        sp = SearchParams.parse({"max_postings": 1})
        assert single.search_one_bits(st, q[:1], K, sp, n) is None  # short: widen
        full = idx.search(q[0], K, {"max_postings": 1, "rerank_k": n})
        assert (full.slots[0] >= 0).all()
    finally:
        idx.close()


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("params", [{}, {"vector_dtype": "float16", "rerank": "float32"}])
def test_rerank_fast_path_equals_the_ordinary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metric: str, params: dict[str, str]
) -> None:
    """Postings beside a rerank store (the narrow default: int8 + float16 rows; float16 +
    float32 rows): one kernel call (search, exact rerank) gives the ordinary path's slots,
    distance bits and counters (rerank rows and bytes included), also while its blocks are
    unverified (it checks them); it steps aside when the probed postings hold fewer than R
    slots."""
    x = clustered(N, D, seed=9)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, _ = open_spann(D, metric, params, tmp_path / "ix")
    try:
        idx.build(np.arange(N), x)
        st = idx.state
        assert st.store is not None and not st.is_bits
        q = clustered(40, D, seed=10)
        if metric == "cosine":
            q /= np.linalg.norm(q, axis=1, keepdims=True)
        for search_params in ({"max_postings": 4}, {"max_postings": 16, "rerank_k": 30}):
            sp = SearchParams.parse(search_params)
            wide = max(K, rerank.candidates(st, sp))
            idx.prewarm.wait()  # the background check after the build is done
            st.file.verified.bits[:] = 0  # nothing verified: the fast path checks them
            first = [single.search_one_rerank(st, q[i : i + 1], K, sp, wide) for i in range(3)]
            assert st.file.verified.bits.any()
            st.file.verified.bits[:] = 0
            want = [
                _ordinary(monkeypatch, st, q[i : i + 1], K, sp, "search_one_rerank")
                for i in range(len(q))
            ]
            _same(first, want)
            for i, w in enumerate(want):
                got = single.search_one_rerank(st, q[i : i + 1], K, sp, wide)
                assert got is not None
                np.testing.assert_array_equal(got.slots, w.slots)
                assert got.distances.tobytes() == w.distances.tobytes()
                assert got.stats == w.stats
                assert got.stats.extra["rerank_rows"] == wide
                with monkeypatch.context() as m:  # the public call takes it
                    m.setattr(rerank, "search", None)  # (the ordinary path would fail)
                    via = idx.search(q[i], K, search_params)
                np.testing.assert_array_equal(via.slots, w.slots)
        sp = SearchParams.parse({"max_postings": 1})
        assert single.search_one_rerank(st, q[:1], K, sp, N) is None  # short: widen
        full = idx.search(q[0], K, {"max_postings": 1, "rerank_k": N})
        assert (full.slots[0] >= 0).all()
    finally:
        idx.close()
