"""Spreading one batch search over threads: ranges of its block-ordered (query, block) pairs
taken from a shared counter (`fan_out_pairs`), or whole phases of tasks (`run_phases`).

Owns a process-wide thread pool and nothing else. The scan kernels release the GIL, so
ranges run in parallel; a query's pairs may fall in several ranges, so each thread keeps its
own top-k table and the tables are merged at the end: the results are those of one serial
call. Plain threads waiting on a future (a futex) rather than
numba's OpenMP pool, whose workers spin at each barrier: on a loaded host a batch of 16
queries cost 2.8x the CPU of the serial scan that way (measured, load average 10 on 2 cores).
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from vecdb.kernels.groupscan import merge_topk

T = TypeVar("T")
CHUNKS_PER_THREAD = 8  # ranges a batch's pairs are cut into, per thread
MIN_PAIRS_PER_CHUNK = 256  # no range smaller than this (a single query reads ~50 blocks)

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


def fan_out_pairs(
    kernel: Callable[..., None],
    fixed: tuple[Any, ...],
    order: npt.NDArray[np.int64],
    pair_query: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    tail: tuple[Any, ...],
    ids: npt.NDArray[np.int64],
    out_d: npt.NDArray[np.float32],
    threads: int,
) -> None:
    """kernel(*fixed, order, pair_query, lo, hi, queries, *tail, ids, out_d) (the
    `groupscan.scan_pairs` order) over ranges lo:hi of the block-ordered pairs on `threads`
    threads. The calling thread folds its ranges into ids / out_d (which may hold earlier
    results); each pool worker folds its own into a private top-k table, merged in at the
    end (`merge_topk`: the top k distinct slots of the union, as one serial call finds).
    Ranges are taken from one counter until none is left, so a thread the OS preempts holds
    up one small range, not a share of the batch."""
    n = len(order)
    threads = max(1, min(threads, len(queries), -(-n // MIN_PAIRS_PER_CHUNK)))
    if threads == 1:
        kernel(*fixed, order, pair_query, 0, n, queries, *tail, ids, out_d)
        return
    chunks = min(CHUNKS_PER_THREAD * threads, -(-n // MIN_PAIRS_PER_CHUNK))
    bounds = np.linspace(0, n, chunks + 1).astype(np.int64).tolist()
    taken = itertools.count()  # next() on a count is atomic under the GIL

    def work(mine_ids: npt.NDArray[np.int64], mine_d: npt.NDArray[np.float32]) -> None:
        while (c := next(taken)) < chunks:
            lo, hi = bounds[c], bounds[c + 1]
            kernel(*fixed, order, pair_query, lo, hi, queries, *tail, mine_ids, mine_d)

    tables = [
        (np.full(ids.shape, -1, np.int64), np.full(out_d.shape, np.inf, np.float32))
        for _ in range(threads - 1)
    ]
    pool = _executor()
    pending: list[Future[None]] = [pool.submit(work, *t) for t in tables]
    work(ids, out_d)
    for f in pending:
        f.result()
    for t_ids, t_d in tables:
        merge_topk(t_ids, t_d, ids, out_d)


Task = Callable[[int, T], None]  # task(number within its phase, the running thread's context)


def run_phases(phases: Sequence[tuple[int, Task[T]]], contexts: Sequence[T]) -> list[bool]:
    """Run phases[j] = (n, task) as task(0..n-1, ctx) on len(contexts) threads (the calling
    thread with contexts[0], pool workers with the others), every task of a phase after
    every task of the phase before it has finished. Tasks are numbered across phases and
    taken from one counter, so a thread finished early takes the next task, of whichever
    phase, and waits only when that task's phase must still wait for its predecessor (the
    barrier costs at most the last running task). Workers the pool has not started by the
    time the caller runs out of tasks are cancelled. The first exception a task raises
    stops the taking and is raised here. Returns which contexts were used (the calling
    thread's always)."""
    ends = list(itertools.accumulate(n for n, _ in phases))
    total = ends[-1] if ends else 0
    done = [0] * len(phases)
    taken = itertools.count()  # next() on a count is atomic under the GIL
    cond = threading.Condition()
    failed: list[BaseException] = []
    used = [False] * len(contexts)

    def work(me: int) -> None:
        used[me] = True
        while not failed and (t := next(taken)) < total:
            ph = bisect.bisect_right(ends, t)
            if ph > 0 and done[ph - 1] < phases[ph - 1][0]:
                with cond:
                    while not failed and done[ph - 1] < phases[ph - 1][0]:
                        cond.wait()
                if failed:
                    return
            try:
                phases[ph][1](t - (ends[ph - 1] if ph else 0), contexts[me])
            except BaseException as e:
                with cond:
                    failed.append(e)
                    cond.notify_all()
                return
            with cond:
                done[ph] += 1
                if done[ph] == phases[ph][0]:
                    cond.notify_all()

    pool = _executor() if len(contexts) > 1 else None
    pending = [pool.submit(work, me) for me in range(1, len(contexts))] if pool else []
    work(0)
    for f in pending:
        if not f.cancel():
            f.result()
    if failed:
        raise failed[0]
    return used
