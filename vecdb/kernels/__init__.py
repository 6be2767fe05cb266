"""Numba and BLAS compute kernels: distances, top-k selection, exact scan, Hamming codes.

This package owns pure functions on C-contiguous arrays: no I/O, no persistent state, no
imports from the rest of vecdb (it is the bottom layer). Index, storage and engine code call
these; the exact scan is the oracle every approximate result is checked against.
Hamming codes are not re-exported: a function named ``hamming`` here would shadow the
``vecdb.kernels.hamming`` module, so import them from that module.
"""

import vecdb.kernels.jitcache  # noqa: F401  first: stamps numba's cache before any decoration
from vecdb.kernels.distance import METRICS, dot, l2_sq, normalize_rows, pairwise
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk, topk_rows

__all__ = [
    "METRICS",
    "dot",
    "exact_topk",
    "l2_sq",
    "merge_topk",
    "normalize_rows",
    "pairwise",
    "topk_rows",
]
