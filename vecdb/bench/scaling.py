"""How much more work this host does on N threads than on one: the yardstick for a run's
"all threads" column.

A 2-vCPU virtual machine may give two threads of one physical core (SMT siblings) or two
time-shared cores; the guest cannot tell (lscpu says one thread per core either way). Work
that keeps a core's arithmetic units busy may then scale far less than work that waits on
memory (on the 2026-12-03 host, measured again and again: the in-cache loop below 1.01-1.92x
on two threads from one minute to the next, the pointer chase 1.67-2.0x), so "vecdb's all-thread QPS >= 1.8x its one-thread QPS" says more about the host than
about vecdb unless the host's own ratio is printed beside it. `measure` runs two numba
kernels, each once alone and then once per thread at the same time, and reports N x (alone
time) / (together time) for each: `compute` (multiply-adds over a 16 KiB array that stays in
the L1 cache) and `latency` (a chase through a random cycle of 32 MiB, one dependent load
after another). Takes 2-3 s; reads nothing, writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import numpy.typing as npt

COMPUTE_FLOATS = 4096  # 16 KiB: in every L1 data cache
COMPUTE_PASSES = 6000  # ~0.1 s alone on a 2 GHz core
CHASE_BYTES = 32 << 20  # beyond a core's L2, so each step is a miss to L3 or memory
CHASE_STEPS = 1_000_000
ROUNDS = 5  # alone / together pairs; the median ratio is reported


@nb.njit(cache=True, nogil=True, fastmath=True)
def compute_kernel(a: npt.NDArray[np.float32], passes: int) -> float:
    """passes x sum of a[i]^2 in 16 independent lanes (vectorised multiply-adds)."""
    acc = np.zeros(16, np.float32)
    for _ in range(passes):
        for i in range(0, a.shape[0] - 15, 16):
            for j in range(16):
                acc[j] += a[i + j] * a[i + j]
    return float(acc.sum())


@nb.njit(cache=True, nogil=True)
def chase_kernel(nxt: npt.NDArray[np.int64], start: int, steps: int) -> int:
    """The index reached after `steps` hops of i -> nxt[i] from `start`."""
    i = start
    for _ in range(steps):
        i = nxt[i]
    return i


def random_cycle(n: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """nxt such that i -> nxt[i] visits all n indices in one random cycle."""
    order = np.random.default_rng(seed).permutation(n)
    nxt = np.empty(n, np.int64)
    nxt[order] = np.roll(order, -1)
    return nxt


def _ratio(call: Callable[[], object], threads: int, pool: ThreadPoolExecutor) -> float:
    """threads x (one call alone) / (threads calls at once), median over ROUNDS."""
    ratios = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        call()
        alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        futures = [pool.submit(call) for _ in range(threads)]
        for f in futures:
            f.result()
        together = time.perf_counter() - t0
        ratios.append(threads * alone / together)
    return round(float(np.median(ratios)), 2)


def measure(threads: int) -> dict[str, float]:
    """{"threads", "compute", "latency"}: the speed-up of `threads` copies of each kernel run
    at once over one alone (1.0 each for one thread, without measuring)."""
    if threads <= 1:
        return {"threads": 1, "compute": 1.0, "latency": 1.0}
    a = np.random.default_rng(0).random(COMPUTE_FLOATS, dtype=np.float32)
    nxt = random_cycle(CHASE_BYTES // 8)
    compute_kernel(a, 1)  # compile (or load from numba's cache) outside the timing
    chase_kernel(nxt, 0, 1)
    with ThreadPoolExecutor(threads, "vecdb-scaling") as pool:
        return {
            "threads": threads,
            "compute": _ratio(lambda: compute_kernel(a, COMPUTE_PASSES), threads, pool),
            "latency": _ratio(lambda: chase_kernel(nxt, 0, CHASE_STEPS), threads, pool),
        }


def describe(start: dict[str, float] | None, end: dict[str, float] | None = None) -> str | None:
    """One line for a section's provenance (the measurements at a run's start and, if
    given, its end), or None without a measurement on more than one thread."""
    if not start or int(start.get("threads", 1)) <= 1:
        return None

    def pair(s: dict[str, float]) -> str:
        return f"compute-bound {s['compute']:.2f}x, memory-latency-bound {s['latency']:.2f}x"

    at_end = f"; at end {pair(end)}" if end and int(end.get("threads", 1)) > 1 else ""
    return (
        f"- Host thread scaling ({int(start['threads'])} copies of a kernel at once vs one "
        f"alone, `vecdb.bench.scaling`): at start {pair(start)}{at_end}."
    )
