"""The SPANN search's fast paths give the answers of the plain ones: a batch scanned in chunks
on several threads equals the serial scan (ids and distances, with and without a `visible`
set, float32 / float16 / int8 postings), and the numba pruning and block gathering equal
their numpy definitions (zero distances, inner products, ids past the table)."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
from test_spann_support import clustered, recall

from vecdb.index.base import as_visible
from vecdb.index.params import (
    DEFAULT_PRUNE_RATIO,
    DEFAULT_PRUNE_RATIO_IP,
    SearchParams,
    prune_ratio_for,
)
from vecdb.index.spann import open_spann
from vecdb.kernels.posting import ALWAYS_READ, block_bytes, gather_blocks, prune_postings
from vecdb.kernels.postscan import PARALLEL_MIN_QUERIES, search_threads

N, D, K = 6_000, 24, 10


def _numpy_prune(labels: np.ndarray, dists: np.ndarray, ip: bool, ratio: float) -> np.ndarray:
    """The pruning rule written with numpy (the definition the kernel must match)."""
    d1 = dists[:, :1]
    if ip:
        keep = (dists - d1) <= (ratio - 1.0) * np.abs(d1)
    else:
        positive = np.where(dists > 0, dists, np.inf).min(axis=1, keepdims=True)
        keep = dists <= ratio * np.where(d1 > 0, d1, positive)
    keep[:, : max(2, labels.shape[1] // 2)] = True  # the nearest two, and half of them all
    return np.where(keep, labels, -1)


@pytest.mark.parametrize("ip", [False, True])
def test_prune_postings_matches_numpy(ip: bool) -> None:
    """Kept / pruned exactly as the numpy rule, including rows whose nearest head is at 0."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 1000, (300, 40)).astype(np.int64)
    dists = np.sort(rng.random((300, 40)).astype(np.float32) * 4 - (2 if ip else 0), axis=1)
    dists[:20, :3] = 0.0  # queries sitting on heads
    dists[20:25] = 0.0  # every head at distance 0
    for ratio in (1.0, 1.5, 8.0, 1e9):
        for m in (3, 40):  # the nearest two kept, or the nearest half
            got = prune_postings(labels[:, :m], dists[:, :m], ip, ratio, 2)
            np.testing.assert_array_equal(got, _numpy_prune(labels[:, :m], dists[:, :m], ip, ratio))


@pytest.mark.parametrize("n", [120, 225])
def test_a_small_index_is_read_whole_whatever_the_ratio(n: int, tmp_path: Path) -> None:
    """The nearest ALWAYS_READ postings are read whatever the prune ratio: an index of a few
    heads is searched whole (random 12-d: 2 of 5 postings kept by the ratio gave recall 0.96)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, 12)).astype(np.float32)
    q = rng.standard_normal((100, 12)).astype(np.float32)
    idx, _ = open_spann(12, "l2", {}, tmp_path)
    idx.build(np.arange(n), x)
    heads = idx.stats()["heads"]
    assert heads < 2 * ALWAYS_READ
    got = idx.search(q, K)
    assert got.stats.postings_read >= len(q) * min(heads, ALWAYS_READ)  # (the ratio adds some)
    for i in range(5):  # the one-kernel single-query path prunes alike
        one = idx.search(q[i : i + 1], K)
        assert one.stats.postings_read >= min(heads, ALWAYS_READ)
        assert one.slots.tolist() == got.slots[i : i + 1].tolist()
    assert recall(got.slots, dict(enumerate(x)), q, K, "l2") >= 0.99


def test_prune_ratio_default_by_metric() -> None:
    """A request without prune_ratio prunes at the metric's default ("ip" keeps the old,
    looser 8.0); a request's own value is used as given, for every metric."""
    sp = SearchParams.parse(None)
    assert sp.prune_ratio is None
    assert prune_ratio_for(sp, "cosine") == prune_ratio_for(sp, "l2") == DEFAULT_PRUNE_RATIO
    assert prune_ratio_for(sp, "ip") == DEFAULT_PRUNE_RATIO_IP > DEFAULT_PRUNE_RATIO
    for metric in ("l2", "ip", "cosine"):
        assert prune_ratio_for(SearchParams.parse({"prune_ratio": 3.0}), metric) == 3.0


def test_gather_blocks_counts_bytes_pages_and_postings() -> None:
    """CSR of the chains of selected postings; ids < 0 or past the table are skipped; bytes
    per block and pages spanned as `block_bytes` and the page arithmetic say."""
    post_first = np.array([0, 2, -1], np.int64)  # posting 0: blocks 0 -> 1; 1: block 2; 2: none
    blk_next = np.array([1, -1, -1], np.int64)
    blk_off = np.array([0, 4096 * 3 - 128, 4096 * 10], np.int64)
    blk_cnt = np.array([40, 7, 1], np.int64)
    sel = np.array([[0, -1, 1], [2, 5, 1]], np.int64)
    ptr, off, cnt, nbytes, pages, postings = gather_blocks(
        sel, post_first, blk_next, blk_off, blk_cnt, 16, 2, 4096
    )
    np.testing.assert_array_equal(ptr, [0, 3, 4])
    np.testing.assert_array_equal(off, blk_off[[0, 1, 2, 2]])
    np.testing.assert_array_equal(cnt, blk_cnt[[0, 1, 2, 2]])
    np.testing.assert_array_equal(nbytes, block_bytes(cnt, 16, 2))
    spans = -(-(off + nbytes) // 4096) - off // 4096
    assert pages == int(spans.sum()) and postings == 4


def test_search_threads_follow_numba_setting() -> None:
    """Small batches stay on the calling thread; larger ones use numba's thread count."""
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        assert search_threads(PARALLEL_MIN_QUERIES - 1) == 1
        assert search_threads(PARALLEL_MIN_QUERIES) == numba.get_num_threads()
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_threaded_batch_equals_serial(tmp_path: Path, dtype: str, metric: str) -> None:
    """Chunks on two threads give the serial scan's ids and distances exactly, and the
    results are those of one query at a time; recall against the exact oracle holds."""
    x = clustered(N, D, seed=5)
    idx, _ = open_spann(D, metric, {"threads": 2, "vector_dtype": dtype}, tmp_path / "ix")
    try:
        idx.build(np.arange(N), x)
        q = clustered(3 * PARALLEL_MIN_QUERIES + 1, D, seed=6)
        vis = as_visible(np.arange(0, N, 3))
        before = numba.get_num_threads()
        try:
            for visible in (None, vis):
                numba.set_num_threads(1)
                one = idx.search(q, K, {"max_postings": 12}, visible)
                numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
                two = idx.search(q, K, {"max_postings": 12}, visible)
                np.testing.assert_array_equal(two.slots, one.slots)
                np.testing.assert_array_equal(two.distances, one.distances)
                assert two.stats.as_dict() == one.stats.as_dict()
                alone = idx.search(q[7:8], K, {"max_postings": 12}, visible)
                np.testing.assert_array_equal(alone.slots[0], two.slots[7])
                if visible is not None:
                    assert np.isin(two.slots[two.slots >= 0], np.arange(0, N, 3)).all()
        finally:
            numba.set_num_threads(before)
        base = dict(enumerate(x))
        full = idx.search(q, K, {"max_postings": 12})
        assert recall(full.slots, base, q, K, metric) >= 0.85
    finally:
        idx.close()


def test_fan_out_in_a_forked_child(tmp_path: Path) -> None:
    """A child forked after the pool started gets its own pool (the parent's threads do not
    exist there) and its threaded search finishes with the parent's answer."""
    import multiprocessing as mp

    from vecdb.index.spann import fanout

    x = clustered(2000, D, seed=8)
    idx, _ = open_spann(D, "l2", {"threads": 2}, tmp_path / "ix")
    try:
        idx.build(np.arange(2000), x)
        q = clustered(2 * PARALLEL_MIN_QUERIES, D, seed=9)
        before = numba.get_num_threads()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        try:
            want = idx.search(q, K).slots
            fanout._executor()  # the parent's pool exists before the fork
            ctx = mp.get_context("fork")
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_search_in_child, args=(idx, q, send))
            child.start()  # forked: the index is the parent's, not a pickled copy
            assert recv.poll(120), "the child's threaded search did not finish"
            got = recv.recv()
            child.join(30)
        finally:
            numba.set_num_threads(before)
        np.testing.assert_array_equal(got, want)
    finally:
        idx.close()


def _search_in_child(idx: object, q: np.ndarray, send: object) -> None:
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    send.send(idx.search(q, K).slots)  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_single_query_path_equals_batch_rows(tmp_path: Path, dtype: str, metric: str) -> None:
    """A query searched alone (the single-query path: the scan kernel called directly, blocks
    widened in registers) gets its batch row bit for bit (batch: blocks shared by several
    queries decoded once, chunks on threads), with and without a `visible` set; a visible
    set too small for the first postings still gives k results alone (the widening pass)."""
    x = clustered(N, D, seed=7)
    idx, _ = open_spann(D, metric, {"threads": 2, "vector_dtype": dtype}, tmp_path / "ix")
    try:
        idx.build(np.arange(N), x)
        q = clustered(2 * PARALLEL_MIN_QUERIES, D, seed=8)
        for visible in (None, as_visible(np.arange(0, N, 5))):
            batch = idx.search(q, K, {"max_postings": 16}, visible)
            for i in range(len(q)):
                alone = idx.search(q[i], K, {"max_postings": 16}, visible)
                np.testing.assert_array_equal(alone.slots[0], batch.slots[i])
                np.testing.assert_array_equal(alone.distances[0], batch.distances[i])
        few = np.arange(0, N, N // (2 * K))[: 2 * K]  # 2k points scattered over the clusters
        for i in range(4):
            alone = idx.search(q[i], K, {"max_postings": 2}, as_visible(few))
            assert (alone.slots[0] >= 0).all() and np.isin(alone.slots[0], few).all()
    finally:
        idx.close()
