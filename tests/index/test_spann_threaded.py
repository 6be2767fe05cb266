"""The threaded batch search (`search.threaded`: heads in chunks, postings in parts, merged
tables) gives the one-thread search's ids, distances and read counters bit for bit; its
kernels (`bucket_parts`, `gather_part`) regroup exactly `gather_pairs`' pairs; the phase
runner (`fanout.run_phases`) runs every task once, a phase only after the one before it, and
raises a task's exception; a corrupt block met on a worker thread fails the search."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numba
import numpy as np
import pytest
from test_spann_support import clustered

from vecdb.errors import FormatError
from vecdb.index.base import SearchStats, as_visible
from vecdb.index.params import SearchParams
from vecdb.index.spann import open_spann, search
from vecdb.index.spann.fanout import run_phases
from vecdb.kernels.pairs import bucket_parts, gather_pairs, gather_part
from vecdb.kernels.posting import NO_VISIBLE

N, D, K = 6_000, 24, 10


def _two_threads() -> int:
    return min(2, numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("contexts", [1, 2, 3])
def test_run_phases_runs_each_task_once_after_the_phase_before(contexts: int) -> None:
    """Every task of every phase runs exactly once, and none starts before the last task of
    the phase before it has finished, however many threads take them."""
    lock = threading.Lock()
    events: list[tuple[str, int, int, float]] = []

    def task(ph: int, delay: float):  # type: ignore[no-untyped-def]
        def run(i: int, ctx: int) -> None:
            with lock:
                events.append(("start", ph, i, time.perf_counter()))
            time.sleep(delay * (i % 3))
            with lock:
                events.append(("end", ph, i, time.perf_counter()))

        return run

    sizes = [7, 1, 5]
    used = run_phases([(n, task(ph, 0.002)) for ph, n in enumerate(sizes)], list(range(contexts)))
    assert used[0] and len(used) == contexts
    for ph, n in enumerate(sizes):
        starts = [e for e in events if e[0] == "start" and e[1] == ph]
        assert sorted(e[2] for e in starts) == list(range(n))
        if ph > 0:
            last_end = max(e[3] for e in events if e[0] == "end" and e[1] == ph - 1)
            assert min(e[3] for e in starts) >= last_end


def test_run_phases_raises_a_task_error_and_stops() -> None:
    """A task's exception is raised to the caller and no task of a later phase runs."""
    later: list[int] = []

    def fail(i: int, ctx: int) -> None:
        if i == 3:
            raise ValueError("task 3")

    def after(i: int, ctx: int) -> None:
        later.append(i)

    with pytest.raises(ValueError, match="task 3"):
        run_phases([(6, fail), (4, after)], [0, 1])
    assert later == []


@pytest.mark.parametrize("nq", [2, 40, 333])
@pytest.mark.parametrize("parts", [1, 4, 13])
def test_gather_part_regroups_gather_pairs(nq: int, parts: int) -> None:
    """The parts of a batch, bucketed chunk by chunk and taken in order, list exactly
    gather_pairs' distinct blocks and (block, query) pairs in its order, with its pages
    and postings summed."""
    rng = np.random.default_rng(nq * 100 + parts)
    npost, nblk, m = 60, 90, 6
    post_first = np.full(npost, -1, np.int64)
    blk_next = np.full(nblk, -1, np.int64)
    owner = rng.integers(0, npost, nblk)
    for b in range(nblk):  # prepend b to its posting's chain
        blk_next[b], post_first[owner[b]] = post_first[owner[b]], b
    blk_cnt = rng.integers(1, 60, nblk).astype(np.int64)
    blk_off = np.arange(nblk, dtype=np.int64) * 8192 + rng.integers(0, 64, nblk) * 64
    sel = np.stack([rng.choice(npost + 5, m, replace=False) for _ in range(nq)]).astype(np.int64)
    sel[sel >= npost + 3] = -1  # padding; npost..npost+2 lie past the table
    args = (post_first, blk_next, blk_off, blk_cnt, 16, 2, 4096)
    want = gather_pairs(sel, *args)
    entries = rng.integers(0, 50, npost).astype(np.int32)
    entries[rng.random(npost) < 0.2] = 0  # empty postings, and an empty top of the table
    entries[-10:] = 0
    part_of, bounds = search.posting_parts(entries, parts)
    assert (np.diff(part_of) >= 0).all() and bounds[0] == 0 and bounds[-1] == npost
    rows = 7
    chunks = -(-nq // rows)
    keys = np.full(nq * m, -7, np.int64)
    ptr = np.empty((chunks, parts + 1), np.int64)
    for c in range(chunks):
        bucket_parts(sel, c * rows, min(nq, (c + 1) * rows), part_of, keys, ptr[c])
    got = [gather_part(keys, ptr, rows * m, j, nq, bounds, *args) for j in range(parts)]
    for field in range(6):
        np.testing.assert_array_equal(np.concatenate([g[field] for g in got]), want[field])
    assert sum(g[6] for g in got) == want[6] and sum(g[7] for g in got) == want[7]


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_threaded_search_equals_one_thread(tmp_path: Path, dtype: str, metric: str) -> None:
    """Hundreds of queries in many heads chunks and posting parts, on 2 and 3 threads, with
    and without a `visible` set: the one-thread search's ids, distances and counters."""
    x = clustered(N, D, seed=11)
    idx, _ = open_spann(D, metric, {"threads": 2, "vector_dtype": dtype}, tmp_path / "ix")
    try:
        idx.build(np.arange(N), x)
        q = clustered(300, D, seed=12)
        st = idx.state  # type: ignore[attr-defined]
        sp = SearchParams.parse({"max_postings": 12})
        before = numba.get_num_threads()
        try:
            for visible in (None, as_visible(np.arange(0, N, 4))):
                numba.set_num_threads(1)
                one = idx.search(q, K, {"max_postings": 12}, visible)
                numba.set_num_threads(_two_threads())
                two = idx.search(q, K, {"max_postings": 12}, visible)
                np.testing.assert_array_equal(two.slots, one.slots)
                np.testing.assert_array_equal(two.distances, one.distances)
                assert two.stats.as_dict() == one.stats.as_dict()
            ids = np.full((len(q), K), -1, np.int64)
            out_d = np.full((len(q), K), np.inf, np.float32)
            stats = SearchStats(queries=len(q))
            numba.set_num_threads(1)
            one = idx.search(q, K, {"max_postings": 12})
            m = min(12, st.live_heads)
            with st.lock.read():
                sel = search.threaded(
                    st, st.reader, q, sp, m, NO_VISIBLE, False, ids, out_d, stats, 3
                )
            np.testing.assert_array_equal(ids, one.slots)
            np.testing.assert_array_equal(out_d, one.distances)
            assert stats.postings_read == one.stats.postings_read
            assert stats.pages_read == one.stats.pages_read
            assert sel.shape == (len(q), m) and (sel[:, :2] >= 0).all()
        finally:
            numba.set_num_threads(before)
    finally:
        idx.close()


def test_corrupt_block_fails_the_threaded_search(tmp_path: Path) -> None:
    """Blocks whose headers were overwritten on disk are found by whichever thread scans
    them: the threaded search raises FormatError naming the posting file."""
    x = clustered(N, D, seed=13)
    idx, _ = open_spann(D, "l2", {"threads": 2, "io": "mmap"}, tmp_path / "ix")
    try:
        idx.build(np.arange(N), x)
        q = clustered(200, D, seed=14)
        st = idx.state  # type: ignore[attr-defined]
        before = numba.get_num_threads()
        numba.set_num_threads(_two_threads())
        try:
            idx.search(q, K, {"max_postings": 12})  # fine before
            first = st.table.post_first[st.table.post_first >= 0]
            with open(st.file.path, "r+b") as f:
                for off in st.table.blk_off[first].tolist():  # every posting's first block
                    f.seek(int(off))
                    f.write(b"\0\0\0\0")  # its magic
            with pytest.raises(FormatError, match=st.file.path.name):
                idx.search(q, K, {"max_postings": 12})
        finally:
            numba.set_num_threads(before)
    finally:
        idx.close()


def test_threaded_path_taken_by_warm_batches_from_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On two threads a warm batch of THREADED_MIN_QUERIES or more takes the task path and a
    smaller one the plain path (so the equality tests above compare the two paths)."""
    if _two_threads() < 2:
        pytest.skip("numba has a single thread here")
    calls: list[int] = []
    real = search.threaded

    def spy(st, reader, queries, *rest):  # type: ignore[no-untyped-def]
        calls.append(len(queries))
        return real(st, reader, queries, *rest)

    monkeypatch.setattr(search, "threaded", spy)
    x = clustered(2000, D, seed=15)
    idx, _ = open_spann(D, "l2", {"threads": 2}, tmp_path / "ix")
    try:
        idx.build(np.arange(2000), x)
        q = clustered(search.THREADED_MIN_QUERIES, D, seed=16)
        before = numba.get_num_threads()
        numba.set_num_threads(2)
        try:
            idx.search(q, K)
            idx.search(q[:-1], K)
        finally:
            numba.set_num_threads(before)
        assert calls == [search.THREADED_MIN_QUERIES]
    finally:
        idx.close()
