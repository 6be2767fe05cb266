"""Spreading one batch scan over threads: contiguous query chunks taken from a shared counter.

Owns a process-wide thread pool and nothing else. The scan kernels release the GIL, so
chunks run in parallel; each query's top-k row is written by exactly one chunk, so results
are those of one serial call. Plain threads waiting on a future (a futex) rather than
numba's OpenMP pool, whose workers spin at each barrier: on a loaded host a batch of 16
queries cost 2.8x the CPU of the serial scan that way (measured, load average 10 on 2 cores).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

CHUNKS_PER_THREAD = 8  # chunks a batch is cut into, per thread

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # the process that started _pool's threads (a forked child starts its own)
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1), "vecdb-scan")
            _pool_pid = os.getpid()
        return _pool


def fan_out(
    kernel: Callable[..., None],
    head: tuple[Any, ...],
    tail: tuple[Any, ...],
    ids: npt.NDArray[np.int64],
    out_d: npt.NDArray[np.float32],
    threads: int,
) -> None:
    """kernel(*head[:-4], ptr, off, cnt, queries, *tail, ids, out_d) over chunks of the
    queries on `threads` threads: `head` ends with (ptr, off, cnt, queries) in `scan_blocks`
    order; a chunk lo:hi gets ptr[lo:hi+1] (absolute offsets into the shared off / cnt) and its
    rows of ids / out_d. The calling thread and `threads - 1` pool workers take chunks from
    one counter until none is left, so a thread the OS preempts holds up one small chunk, not
    a share of the batch."""
    *fixed, ptr, off, cnt, queries = head
    nq = len(queries)
    threads = max(1, min(threads, nq))
    if threads == 1:
        kernel(*head, *tail, ids, out_d)
        return
    # Chunk bounds at equal shares of the blocks (a query's cost is its blocks).
    chunks = min(nq, CHUNKS_PER_THREAD * threads)
    marks = np.searchsorted(ptr, np.linspace(0, ptr[-1], chunks + 1)[1:-1])
    bounds = np.unique(np.concatenate(([0], np.clip(marks, 1, nq - 1), [nq]))).tolist()
    taken = itertools.count()  # next() on a count is atomic under the GIL

    def work() -> None:
        while (c := next(taken)) < len(bounds) - 1:
            lo, hi = bounds[c], bounds[c + 1]
            part = (ptr[lo : hi + 1], off, cnt, queries[lo:hi])
            kernel(*fixed, *part, *tail, ids[lo:hi], out_d[lo:hi])

    pool = _executor()
    pending: list[Future[None]] = [pool.submit(work) for _ in range(threads - 1)]
    work()
    for f in pending:
        f.result()
