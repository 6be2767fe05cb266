"""Dense distance kernels between query rows and base rows.

This module owns the metric vocabulary (``METRICS``) and the "smaller is better" distance
convention used everywhere in vecdb: "l2" is squared Euclidean distance, "ip" is the negative
inner product, "cosine" is one minus the inner product of rows the caller has already
L2-normalised. ``l2_sq`` and ``dot`` are numba loops writing into a caller-provided ``out``;
``pairwise`` picks the faster of the numba loop and a BLAS matrix product (see its
docstring). It also owns how kernels use BLAS: ``parallel_ranges`` spreads BLAS work over
``numba.get_num_threads()`` threads while ``single_threaded_blas`` keeps OpenBLAS's own pool
idle; that reference count is the only process-wide state. Inputs are C-contiguous float32;
nothing here does I/O, and it must not import other vecdb modules.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numba
import numpy as np
import numpy.typing as npt
from numba import njit, prange
from threadpoolctl import ThreadpoolController

METRICS = ("l2", "ip", "cosine")

_T = TypeVar("_T")

# Below this many multiply-adds per pairwise call the numba loop beats BLAS setup cost, and
# for "l2" it is also exact (no cancellation from the ||q||^2 + ||x||^2 - 2 q.x expansion).
_BLAS_MIN_WORK = 1 << 22
# Multiply-adds below which another worker thread costs more than it saves.
MIN_WORK_PER_THREAD = 1 << 22

# reassoc/contract let LLVM vectorise the reductions (changes only float rounding);
# no nnan/ninf flags, so NaN and inf propagate as IEEE says.
_FAST = {"reassoc", "contract"}


# Each kernel comes twice: serial (GIL-free) for small inputs, where waking numba's thread
# pool costs more than the work (measured 150 us on a busy 2-core host), and prange above
# _PARALLEL_MIN_WORK multiply-adds. The row bodies are shared, inlined helpers.
_PARALLEL_MIN_WORK = 1 << 18


@njit(cache=True, inline="always", fastmath=_FAST)
def _l2_row(q: np.ndarray, xb: np.ndarray, o: np.ndarray) -> None:
    d = q.shape[0]
    for j in range(xb.shape[0]):
        x = xb[j]
        s = np.float32(0.0)
        for t in range(d):
            diff = q[t] - x[t]
            s += diff * diff
        o[j] = s


@njit(cache=True, inline="always", fastmath=_FAST)
def _dot_row(q: np.ndarray, xb: np.ndarray, o: np.ndarray) -> None:
    d = q.shape[0]
    for j in range(xb.shape[0]):
        x = xb[j]
        s = np.float32(0.0)
        for t in range(d):
            s += q[t] * x[t]
        o[j] = s


@njit(cache=True, nogil=True, fastmath=_FAST)
def _l2_sq_serial(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    for i in range(xq.shape[0]):
        _l2_row(xq[i], xb, out[i])


@njit(cache=True, parallel=True, fastmath=_FAST)
def _l2_sq_parallel(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    for i in prange(xq.shape[0]):
        _l2_row(xq[i], xb, out[i])


@njit(cache=True, nogil=True, fastmath=_FAST)
def _dot_serial(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    for i in range(xq.shape[0]):
        _dot_row(xq[i], xb, out[i])


@njit(cache=True, parallel=True, fastmath=_FAST)
def _dot_parallel(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    for i in prange(xq.shape[0]):
        _dot_row(xq[i], xb, out[i])


def _l2_sq(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    if xq.shape[0] > 1 and xq.size * xb.shape[0] >= _PARALLEL_MIN_WORK:
        _l2_sq_parallel(xq, xb, out)
    else:
        _l2_sq_serial(xq, xb, out)


def _dot(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    if xq.shape[0] > 1 and xq.size * xb.shape[0] >= _PARALLEL_MIN_WORK:
        _dot_parallel(xq, xb, out)
    else:
        _dot_serial(xq, xb, out)


def check_metric(metric: str) -> None:
    """Raise ValueError unless ``metric`` is one of ``METRICS``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def _check_pair(xq: np.ndarray, xb: np.ndarray) -> None:
    if xq.ndim != 2 or xb.ndim != 2 or xq.shape[1] != xb.shape[1]:
        raise ValueError(f"expected (nq, d) and (n, d) arrays, got {xq.shape} and {xb.shape}")


def _check_out(xq: np.ndarray, xb: np.ndarray, out: np.ndarray) -> None:
    _check_pair(xq, xb)
    if out.shape != (xq.shape[0], xb.shape[0]) or out.dtype != np.float32:
        raise ValueError(
            f"out must be float32 {(xq.shape[0], xb.shape[0])}, got {out.dtype} {out.shape}"
        )
    for name, a in (("xq", xq), ("xb", xb), ("out", out)):
        if not a.flags.c_contiguous or a.dtype != np.float32:
            raise ValueError(f"{name} must be C-contiguous float32, got {a.dtype}")


def l2_sq(
    xq: npt.NDArray[np.float32], xb: npt.NDArray[np.float32], out: npt.NDArray[np.float32]
) -> None:
    """out[i, j] = ||xq[i] - xb[j]||^2, computed directly (no norm expansion)."""
    _check_out(xq, xb, out)
    _l2_sq(xq, xb, out)


def dot(
    xq: npt.NDArray[np.float32], xb: npt.NDArray[np.float32], out: npt.NDArray[np.float32]
) -> None:
    """out[i, j] = <xq[i], xb[j]>."""
    _check_out(xq, xb, out)
    _dot(xq, xb, out)


@njit(cache=True, nogil=True, fastmath=_FAST)
def _sq_norms(x: np.ndarray, out: np.ndarray) -> None:
    n, d = x.shape
    for j in range(n):
        r = x[j]
        s = np.float32(0.0)
        for t in range(d):
            s += r[t] * r[t]
        out[j] = s


def sq_norms(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Squared L2 norm of each row of C-contiguous float32 ``x``, float32 (n,); GIL-free."""
    out = np.empty(x.shape[0], dtype=np.float32)
    _sq_norms(x, out)
    return out


def pairwise(
    metric: str, xq: npt.NDArray[np.float32], xb: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Smaller-is-better distances (nq, n) float32 between rows of ``xq`` and ``xb``.

    "l2" squared L2, "ip" negative dot, "cosine" 1 - dot (rows already normalised). Under
    ~4M multiply-adds this runs the numba loops. Above, it runs a BLAS ``xq @ xb.T``, which
    measured 1.4-1.6x faster single-threaded (d = 50, 1000 x 10000 and 100 x 1000); for
    "l2" that is ``||q||^2 + ||x||^2 - 2 q.x`` clamped at 0, whose absolute error is about
    float32 epsilon times the squared norms (the trade faiss makes). Callers that need exact
    small l2 distances between near duplicates should use ``l2_sq``. Either way the work is
    spread over ``numba.get_num_threads()`` threads and BLAS itself runs single-threaded.
    """
    check_metric(metric)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    _check_pair(xq, xb)
    nq, d = xq.shape
    n = xb.shape[0]
    out = np.empty((nq, n), dtype=np.float32)
    if nq * n * d < _BLAS_MIN_WORK:
        if metric == "l2":
            _l2_sq(xq, xb, out)
            return out
        _dot(xq, xb, out)
        if metric == "ip":
            np.negative(out, out=out)
        else:
            np.subtract(np.float32(1.0), out, out=out)
        return out

    xb_norms = sq_norms(xb) if metric == "l2" else None

    def rows(lo: int, hi: int) -> None:
        o = out[lo:hi]
        np.matmul(xq[lo:hi], xb.T, out=o)
        if xb_norms is not None:
            o *= np.float32(-2.0)
            o += sq_norms(xq[lo:hi])[:, None]
            o += xb_norms[None, :]
            np.maximum(o, np.float32(0.0), out=o)
        elif metric == "ip":
            np.negative(o, out=o)
        else:
            np.subtract(np.float32(1.0), o, out=o)

    parallel_ranges(nq, nq * n * d, rows)
    return out


def parallel_ranges(
    nrows: int, work: int, fn: Callable[[int, int], _T], blas: bool = True
) -> list[_T]:
    """``[fn(lo, hi) ...]`` over consecutive slices of ``range(nrows)``, in order.

    Uses up to ``numba.get_num_threads()`` Python threads, one per ``MIN_WORK_PER_THREAD``
    multiply-adds of ``work``; ``fn`` must release the GIL to gain (BLAS, numpy ufuncs and
    nogil numba kernels do). With ``blas`` the calls run under ``single_threaded_blas``:
    explicit threads instead of OpenBLAS's own pool, whose workers spin after each call and
    starve numba's (measured 5x slower on 2 cores). A single slice runs on the caller.
    """
    workers = max(1, min(numba.get_num_threads(), nrows, work // MIN_WORK_PER_THREAD))
    with single_threaded_blas() if blas else contextlib.nullcontext():
        if workers == 1:
            return [fn(0, nrows)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(fn, nrows * w // workers, nrows * (w + 1) // workers)
                for w in range(workers)
            ]
            return [f.result() for f in futures]


@functools.cache
def _controller() -> Any:
    # Inspecting the loaded libraries costs ~200 us; the handle itself is reusable.
    return ThreadpoolController()


# Process-wide count of BLAS users in flight, so that overlapping callers on several threads
# pin BLAS to one thread once and restore the previous setting only when the last one ends.
_blas_lock = threading.Lock()
_blas_state: dict[str, Any] = {"users": 0, "limiter": None}


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold BLAS to one thread for the duration (reference-counted, thread-safe)."""
    with _blas_lock:
        if _blas_state["users"] == 0:
            _blas_state["limiter"] = _controller().limit(limits=1, user_api="blas")
        _blas_state["users"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["users"] -= 1
            if _blas_state["users"] == 0:
                _blas_state["limiter"].restore_original_limits()
                _blas_state["limiter"] = None


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Hold BLAS to `n` threads for the duration, through the cached controller (a fresh
    `threadpool_limits` inspects the loaded libraries on every call: ~1 ms, which dominated
    the two-means of small posting splits)."""
    if n == 1:
        with single_threaded_blas():
            yield
        return
    limiter = _controller().limit(limits=n, user_api="blas")
    try:
        yield
    finally:
        limiter.restore_original_limits()


def normalize_rows(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A float32 C-contiguous copy of ``x`` (n, d; any real dtype) with unit-L2-norm rows.

    All-zero rows stay zero (callers reject them before).
    """
    y = np.array(x, dtype=np.float32, copy=True, order="C")
    if y.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {y.shape}")
    # float64 so that rows with huge or tiny entries neither overflow nor underflow.
    norms = np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))
    norms[norms == 0] = 1.0
    y /= norms[:, None]
    return y
