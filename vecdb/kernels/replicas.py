"""The RNG replica rule as one fused numba kernel (the build's and the updates' hot loop).

For each row: the squared L2 distance to each candidate head (taken from the candidate search
when it already computed them, else a SIMD dot product with the head's stored squared norm),
then the walk by ascending distance that accepts candidate c unless an already accepted a has
factor * d(c, a) < d(x, c). Head-to-head distances come from the norms and one dot product,
and each candidate stops at the first accepted head that rules it out (early exit). Pure
functions on C-contiguous arrays; rows run in parallel above `PARALLEL_MIN_ROWS`.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

PARALLEL_MIN_ROWS = 2048  # below this, rows run on the calling thread


@nb.njit(cache=True, fastmath=True, inline="always")
def _dot(a, b):  # type: ignore[no-untyped-def]
    s = np.float32(0.0)
    for t in range(a.shape[0]):
        s += a[t] * b[t]
    return s


@nb.njit(cache=True, fastmath=True, inline="always")
def _rng_row(x, xn, cand, cand_d, have_d, heads, norms, factor, out, outd):  # type: ignore[no-untyped-def]
    m = cand.shape[0]
    replicas = out.shape[0]
    d = np.empty(m, dtype=np.float32)
    for j in range(m):
        c = cand[j]
        if c < 0:
            d[j] = np.inf
        elif have_d:
            d[j] = max(cand_d[j], np.float32(0.0))
        else:
            d[j] = max(xn + norms[c] - np.float32(2.0) * _dot(x, heads[c]), np.float32(0.0))
    order = np.argsort(d)
    taken = 0
    for jj in range(m):
        j = order[jj]
        if taken >= replicas or d[j] == np.inf:
            break
        c = cand[j]
        hc = heads[c]
        ok = True
        for r in range(taken):
            a = out[r]
            s = norms[c] + norms[a] - np.float32(2.0) * _dot(hc, heads[a])
            if factor * s < d[j]:
                ok = False
                break
        if ok:
            out[taken] = c
            outd[taken] = d[j]
            taken += 1


@nb.njit(cache=True, fastmath=True, parallel=True)
def _rng_parallel(x, xn, cand, cand_d, have_d, heads, norms, factor, out, outd):  # type: ignore[no-untyped-def]
    for i in nb.prange(x.shape[0]):
        _rng_row(x[i], xn[i], cand[i], cand_d[i], have_d, heads, norms, factor, out[i], outd[i])


@nb.njit(cache=True, fastmath=True)
def _rng_serial(x, xn, cand, cand_d, have_d, heads, norms, factor, out, outd):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        _rng_row(x[i], xn[i], cand[i], cand_d[i], have_d, heads, norms, factor, out[i], outd[i])


def rng_replicas(
    x: npt.NDArray[np.float32],
    cand: npt.NDArray[np.int64],
    heads: npt.NDArray[np.float32],
    norms: npt.NDArray[np.float32],
    factor: float,
    replicas: int,
    cand_d: npt.NDArray[np.float32] | None = None,
    threads_ok: bool = True,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """RNG rule over each row's candidates: `cand` (n, m) are row indices into `heads`
    (-1 = none), `norms` the heads' squared norms, `cand_d` (n, m) the rows' squared L2
    distances to them if already known. Returns (n, replicas) accepted head indices (-1
    padded, nearest first) and their squared distances (inf padded). The nearest candidate is
    always accepted, so a row with any candidate gets at least one."""
    n = x.shape[0]
    out = np.full((n, replicas), -1, dtype=np.int64)
    outd = np.full((n, replicas), np.inf, dtype=np.float32)
    if n == 0:
        return out, outd
    have_d = cand_d is not None
    dd = cand_d if cand_d is not None else np.empty((n, 1), np.float32)
    xn = np.einsum("ij,ij->i", x, x).astype(np.float32) if not have_d else np.zeros(n, np.float32)
    kernel = _rng_parallel if threads_ok and n >= PARALLEL_MIN_ROWS else _rng_serial
    kernel(x, xn, cand, dd, have_d, heads, norms, np.float32(factor), out, outd)
    return out, outd
