"""Building a tenant's clustered copy: k-means into blocks, a few replicas per vector.

Owns the layout made for a large tenant set (`engine.tenant_clusters` keeps and searches it):
the set's prepared vectors clustered by k-means (the shared `kernels.kmeans`) into about
`len / size` clusters, every vector placed in its nearest cluster and in up to
`replicas - 1` more of its nearest ones when (closure) its squared distance to that centroid is
within `closure` x the distance to its nearest: a vector on a border is found from either
side, one deep inside a cluster is stored once. (SPANN's RNG rule on top, measured on GloVe-50
40k-vector tenants, accepted almost no replica: recall 0.91 at 64 probes of 32-row clusters
against 0.99 with closure alone; PARAMS.md.) The rows are then grouped
by cluster into contiguous blocks. Pure computation on arrays: no I/O, no tenant state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vecdb.kernels.kmeans import kmeans
from vecdb.kernels.tenant_scan import nearest_centroids

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
KMEANS_ITERS = 8  # Lloyd iterations of the build
SAMPLE_PER_CLUSTER = 32  # k-means trains on this many rows per cluster (at most all rows)


@dataclass(frozen=True)
class Clusters:
    """One clustered copy's arrays (rows grouped by cluster)."""

    centroids: F32  # (c, d)
    offsets: I64  # (c + 1,) block c is rows offsets[c]:offsets[c + 1]
    slots: I64  # (rows,) slot of each row
    vectors: F32  # (rows, d) prepared vector of each row
    members: I64  # the distinct slots, ascending (what the copy holds)


def build(
    slots: I64, vectors: F32, size: int, replicas: int, closure: float, seed: int = 0
) -> Clusters:
    """The clustered copy of `slots` (distinct) with their prepared `vectors`."""
    n, dim = vectors.shape
    x = np.ascontiguousarray(vectors, np.float32)
    s = np.asarray(slots, np.int64)
    n_c = max(1, -(-n // max(1, size)))
    if n == 0:
        empty = np.zeros(0, np.int64)
        return Clusters(np.zeros((0, dim), np.float32), np.zeros(1, np.int64), empty,
                        np.zeros((0, dim), np.float32), empty)  # fmt: skip
    km = kmeans(x, n_c, iters=KMEANS_ITERS, sample=min(n, SAMPLE_PER_CLUSTER * n_c),
                seed=seed, assign_all=False)  # fmt: skip
    cents = np.ascontiguousarray(km.centroids, np.float32)
    near, d = nearest_centroids(x, cents, max(1, replicas))
    keep = np.zeros(near.shape, np.bool_)
    keep[:, 0] = True
    for j in range(1, near.shape[1]):
        keep[:, j] = d[:, j] <= closure * d[:, 0]
    row_c = near[keep]
    row_i = np.broadcast_to(np.arange(n)[:, None], near.shape)[keep]
    order = np.argsort(row_c, kind="stable")
    row_c, row_i = row_c[order], row_i[order]
    offsets = np.zeros(len(cents) + 1, np.int64)
    np.cumsum(np.bincount(row_c, minlength=len(cents)), out=offsets[1:])
    return Clusters(cents, offsets, s[row_i], np.ascontiguousarray(x[row_i]), np.sort(s))
