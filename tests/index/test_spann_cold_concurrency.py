"""Cold (io=direct) rerank searches started all at once right after the index opens: the
store's O_DIRECT descriptor, AIO pool and thread pool are opened by the first caller while
the others wait for them (a caller that saw the descriptor before the pools existed failed
on `assert self._pool is not None`), and every thread's results equal the warm ones."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_spann_support import clustered

from vecdb.index.spann import open_spann, vectors

D = 16
RERANK = {"vector_dtype": "int8", "rerank": "float16", "threads": 1}


def test_first_cold_rerank_calls_at_once_all_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 threads' first searches after reopening: a slow AIO setup (io_setup made to take
    50 ms) leaves a window in which the descriptor is known and the pools are not; no call
    may fall into it, and the results are the warm ones."""
    x = clustered(3000, D, seed=5)
    idx, _ = open_spann(D, "l2", dict(RERANK, io="mmap"), tmp_path)
    idx.build(np.arange(len(x)), x)
    idx.checkpoint(1)
    q = clustered(16, D, seed=6)
    warm = idx.search(q, 10, {"max_postings": 6, "rerank_k": 16})
    idx.close()
    real = vectors.AioPool.create

    def slow() -> vectors.AioPool | None:
        time.sleep(0.05)
        return real()

    monkeypatch.setattr(vectors.AioPool, "create", staticmethod(slow))
    idx, _ = open_spann(D, "l2", dict(RERANK, io="direct"), tmp_path)
    start = threading.Barrier(16)

    def one(i: int) -> np.ndarray:
        start.wait()
        return idx.search(q[i : i + 1], 10, {"max_postings": 6, "rerank_k": 16}).slots[0]

    try:
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(one, range(16)))
    finally:
        idx.close()
    np.testing.assert_array_equal(np.stack(got), warm.slots)
