"""Spreading one batch scan over threads: contiguous query chunks, one per thread.

Owns a process-wide thread pool and nothing else. The scan kernels release the GIL, so
chunks run in parallel; each query's top-k row is written by exactly one chunk, so results
are those of one serial call. Plain threads waiting on a future (a futex) rather than
numba's OpenMP pool, whose workers spin at each barrier: on a loaded host a batch of 16
queries cost 2.8x the CPU of the serial scan that way (measured, load average 10 on 2 cores).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

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
    """kernel(*head[:-4], ptr, off, cnt, queries, *tail, ids, out_d) over `threads` chunks of
    the queries, balanced by blocks: `head` ends with (ptr, off, cnt, queries) in
    `scan_blocks` order; chunk c gets queries lo:hi, ptr[lo:hi+1] (absolute offsets into the
    shared off / cnt) and its rows of ids / out_d. The calling thread runs the first chunk."""
    *fixed, ptr, off, cnt, queries = head
    nq = len(queries)
    threads = max(1, min(threads, nq))
    if threads == 1:
        kernel(*head, *tail, ids, out_d)
        return
    # Chunk bounds at equal shares of the blocks (a query's cost is its blocks).
    marks = np.searchsorted(ptr, np.linspace(0, ptr[-1], threads + 1)[1:-1])
    bounds = [0, *np.clip(marks, 1, nq - 1).tolist(), nq]

    def run(lo: int, hi: int) -> None:
        part = (ptr[lo : hi + 1], off, cnt, queries[lo:hi])
        kernel(*fixed, *part, *tail, ids[lo:hi], out_d[lo:hi])

    pending: list[Future[None]] = []
    pool = _executor()
    for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True):
        if hi > lo:
            pending.append(pool.submit(run, lo, hi))
    run(bounds[0], bounds[1])
    for f in pending:
        f.result()
