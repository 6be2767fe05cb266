"""Greedy pooling of near-duplicate tokens inside each document.

This module owns one kernel: walking each document's tokens in order, a token joins the first
earlier group whose running mean direction has cosine >= `threshold` with it, else it starts a
group. The result is a group label per token (numbered from 0 within each document) and the
group count of each document; the caller averages the groups. O(n x groups x d) per document.
Pure numba (cache=True); no I/O, no state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True, fastmath=True)
def _pool(tokens, offsets, threshold, labels, groups):  # type: ignore[no-untyped-def]
    d = tokens.shape[1]
    for doc in range(offsets.shape[0] - 1):
        lo, hi = offsets[doc], offsets[doc + 1]
        sums = np.zeros((hi - lo, d), np.float32)
        norms = np.zeros(hi - lo, np.float32)
        ng = 0
        for t in range(lo, hi):
            x = tokens[t]
            xn = np.float32(0.0)
            for j in range(d):
                xn += x[j] * x[j]
            xn = np.sqrt(xn)
            chosen = -1
            for g in range(ng):
                s = np.float32(0.0)
                for j in range(d):
                    s += sums[g, j] * x[j]
                if norms[g] > 0 and xn > 0 and s >= threshold * norms[g] * xn:
                    chosen = g
                    break
            if chosen < 0:
                chosen = ng
                ng += 1
            n2 = np.float32(0.0)
            for j in range(d):
                sums[chosen, j] += x[j]
                n2 += sums[chosen, j] * sums[chosen, j]
            norms[chosen] = np.sqrt(n2)
            labels[t] = chosen
        groups[doc] = ng


def pool_labels(tokens: npt.NDArray[np.float32], offsets: I64, threshold: float) -> tuple[I64, I64]:
    """Group label of every token (within its document) and each document's group count."""
    labels = np.empty(len(tokens), np.int64)
    groups = np.empty(len(offsets) - 1, np.int64)
    _pool(tokens, offsets, np.float32(threshold), labels, groups)
    return labels, groups
