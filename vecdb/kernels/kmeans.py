"""k-means on float32 rows, plain or balanced, in bounded memory.

The one k-means of the project: the SPANN head tree, posting splits and (next) the tenant tree
and the multi-vector codebook use it. `kmeans` trains on a random sample of the rows (k-means++
seeding for small k, distinct random rows for large k; empty clusters are re-seeded with the
worst-served sample rows), then assigns every row in chunks whose distance block stays under
`CHUNK_BYTES`, so memory is O(sample + chunk), never O(n x k) and never a full-size temporary.
With `balance > 0` every assignment pays a size penalty `lam * size[c]` (SPTAG's balanced
k-means: a cluster of average size costs `balance` x the mean squared distance; sizes are
counted as rows are assigned, in a random order), which keeps cluster sizes even; `balance = 0` is plain Lloyd. Squared L2 throughout. Pure numpy and
numba (cache=True): no I/O, no globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.distance import blas_threads as blas_threads_limit
from vecdb.kernels.simd import LANES, vfma, vload, vsplat, vstore

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Tick = Callable[[int, int], None]  # (work done, work in all) as steps end; may raise to stop

CHUNK_BYTES = 16 << 20  # a chunk's (rows x k) float32 distance block stays under this
MIN_CHUNK_ROWS = 64  # ... but a chunk has at least this many rows
PLUSPLUS_MAX_K = 64  # k-means++ seeding up to this k (it costs k passes over the sample)
DEFAULT_SAMPLE_PER_CLUSTER = 64  # training rows per cluster when `sample` is not given
MIN_SAMPLE = 2048  # ... but at least this many
REFINE_PROBE = 8  # groups a row looks in during a two-level clustering's refinement
GROUP_PARTS = 8  # parts of a chunk's rows `assign_grouped` scores as separate tasks
GROUP_BALANCE = 0.25  # size penalty of the k-means that groups centroids (`group_centroids`)
PROBE_EXCESS = 0.01  # a calibrated probe's mean squared distance is within this of exact
CALIBRATION_ROWS = 2048  # rows `calibrate_probe` measures on


@dataclass(frozen=True)
class KMeans:
    """A clustering: centroids, and the cluster of every row with its squared distance."""

    centroids: F32  # (k', d) with k' = min(k, n)
    labels: I64  # (n,) cluster of each row (empty when assignment was not asked for)
    distances: F32  # (n,) squared L2 distance of each row to its centroid

    @property
    def inertia(self) -> float:
        """Sum of squared distances of the rows to their centroids."""
        return float(self.distances.astype(np.float64).sum())


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    """`seed` itself when it is a Generator (a caller's stream continues), else a new one."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def chunk_rows(k: int, d: int) -> int:
    """Rows per assignment chunk for k centroids of d dims: the chunk's distance block and
    its copy of the rows both stay under CHUNK_BYTES."""
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (4 * max(1, k, d)))


def sq_norms(x: F32) -> F32:
    """Squared L2 norm of each row (no n x d temporary)."""
    out: F32 = np.einsum("ij,ij->i", x, x)
    return out


def sq_dists(x: F32, c: F32, c_norms: F32 | None = None, x_norms: F32 | None = None) -> F32:
    """Squared L2 distances (n, k) between the rows of x and of c, clipped at 0. Callers
    keep n x k small (see `assign`)."""
    cn = sq_norms(c) if c_norms is None else c_norms
    d = x @ c.T
    d *= -2.0
    d += (sq_norms(x) if x_norms is None else x_norms)[:, None]
    d += cn[None, :]
    out: F32 = np.maximum(d, 0.0, out=d).astype(np.float32, copy=False)
    return out


def assign(
    x: F32, centroids: F32, lam: float = 0.0, rng: np.random.Generator | None = None
) -> tuple[I64, F32]:
    """Nearest centroid of every row and the squared distance to it, chunk by chunk. With
    `lam > 0` a row pays `lam` per row already in a cluster (sizes counted as rows are
    assigned, visiting rows in a random order so the result does not follow row order)."""
    n, k = len(x), len(centroids)
    labels = np.zeros(n, dtype=np.int64)
    dist = np.zeros(n, dtype=np.float32)
    if n == 0 or k == 0:
        return labels, dist
    cn = sq_norms(centroids)
    step = chunk_rows(k, x.shape[1])
    if lam <= 0:
        for lo in range(0, n, step):
            d = sq_dists(x[lo : lo + step], centroids, cn)
            lab = d.argmin(1)
            labels[lo : lo + step] = lab
            dist[lo : lo + step] = np.take_along_axis(d, lab[:, None], 1)[:, 0]
        return labels, dist
    order = (rng or np.random.default_rng(0)).permutation(n)
    sizes = np.zeros(k, dtype=np.float64)
    if n <= step:  # one block: the rows' distances in place, visited in `order` (a copy of
        # the rows in that order was 56% of a 1,536-d split's 2-means)
        d = sq_dists(x, centroids, cn)[order]
        labels[order], dist[order] = _assign_online(d, sizes, lam)
        return labels, dist
    for lo in range(0, n, step):
        rows = order[lo : lo + step]
        d = sq_dists(x[rows], centroids, cn)
        lab, dd = _assign_online(d, sizes, lam)
        labels[rows], dist[rows] = lab, dd
    return labels, dist


@nb.njit(cache=True, nogil=True)
def _assign_online(d, sizes, lam):  # type: ignore[no-untyped-def]
    """Rows in order: argmin_c d + lam * sizes[c], counting each row into its cluster."""
    n, k = d.shape
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for i in range(n):
        best = np.inf
        bc = 0
        for c in range(k):
            v = d[i, c] + lam * sizes[c]
            if v < best:
                best = v
                bc = c
        labels[i] = bc
        dist[i] = d[i, bc]
        sizes[bc] += 1.0
    return labels, dist


@nb.njit(cache=True, nogil=True)
def _sums(x, labels, k):  # type: ignore[no-untyped-def]
    """Per-cluster sums (float64) and counts of the rows of x."""
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for i in range(x.shape[0]):
        c = labels[i]
        counts[c] += 1
        for t in range(x.shape[1]):
            sums[c, t] += x[i, t]
    return sums, counts


def _seed(xs: F32, k: int, rng: np.random.Generator, plusplus: bool) -> F32:
    """Initial centroids: k-means++ (D^2 sampling) or k distinct random rows."""
    n = len(xs)
    if not plusplus:
        return xs[np.sort(rng.choice(n, k, replace=False))].copy()
    # Greedy k-means++ (as scikit-learn): of 2 + log k D^2-sampled candidates per step, keep
    # the one that lowers the potential most; a single draw often puts two seeds in one blob.
    trials = 2 + int(np.log(k))
    centres = np.empty((k, xs.shape[1]), dtype=np.float32)
    centres[0] = xs[rng.integers(n)]
    xn = sq_norms(xs)
    best = sq_dists(xs, centres[:1], x_norms=xn)[:, 0].astype(np.float64)
    for j in range(1, k):
        total = best.sum()
        if total <= 0:
            centres[j] = xs[rng.integers(n)]
            continue
        cand = np.searchsorted(np.cumsum(best), rng.random(trials) * total).clip(0, n - 1)
        d = sq_dists(xs, xs[cand], xn[cand], xn)  # (n, trials)
        np.minimum(d, best[:, None], out=d)
        pick = int(d.sum(0).argmin())
        centres[j] = xs[cand[pick]]
        best = d[:, pick].astype(np.float64)
    return centres


def _lam(dist: F32, n: int, k: int, balance: float) -> float:
    """Size penalty per row: a cluster of average size n/k pays `balance` x the mean
    squared distance of rows to their centroids."""
    if balance <= 0 or len(dist) == 0:
        return 0.0
    return balance * float(dist.mean()) / (n / k)


def kmeans(
    x: F32,
    k: int,
    *,
    iters: int = 10,
    sample: int | None = None,
    balance: float = 0.0,
    seed: int | np.random.Generator = 0,
    assign_all: bool = True,
    blas_threads: int = 1,
    tick: Tick | None = None,
) -> KMeans:
    """Cluster the rows of x (n, d) float32 into k clusters.

    Trains `iters` Lloyd iterations on `sample` random rows (default max(2048, 64 k), at
    most n), then assigns all n rows unless `assign_all` is False. `balance > 0` adds the
    size penalty of balanced k-means (sizes counted online while rows are assigned in a
    random order, so the result does not depend on row order). BLAS runs on
    `blas_threads` threads (1 by default: its threads cost more than they save on the
    small blocks of a tree node; raise it for one big clustering). With k >= n
    every row is its own centroid (k' = n). Deterministic for a given seed. `tick(i, iters)`
    is called after each Lloyd iteration; an exception it raises stops the clustering (how
    a closing database abandons a long training).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-d, got shape {x.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(x)
    rng = _generator(seed)
    if n <= k:
        lab = np.arange(n, dtype=np.int64)
        return KMeans(x.copy(), lab, np.zeros(n, dtype=np.float32))
    with blas_threads_limit(blas_threads):
        return _kmeans(x, k, iters, sample, balance, rng, assign_all, tick)


def _kmeans(
    x: F32,
    k: int,
    iters: int,
    sample: int | None,
    balance: float,
    rng: np.random.Generator,
    assign_all: bool,
    tick: Tick | None,
) -> KMeans:
    n = len(x)
    ns = min(n, sample or max(MIN_SAMPLE, DEFAULT_SAMPLE_PER_CLUSTER * k))
    xs = x if ns == n else x[np.sort(rng.choice(n, ns, replace=False))]
    centres = _seed(xs, k, rng, k <= PLUSPLUS_MAX_K)
    labels, dist = assign(xs, centres)
    for it in range(iters):
        sums, counts = _sums(xs, labels, k)
        full = counts > 0
        centres[full] = (sums[full] / counts[full, None]).astype(np.float32)
        if not full.all():  # re-seed empty clusters with the worst-served rows
            worst = np.argsort(dist)[::-1][: int((~full).sum())]
            centres[~full] = xs[worst]
        labels, dist = assign(xs, centres, _lam(dist, ns, k, balance), rng)
        if tick:
            tick(it + 1, iters)
    if not assign_all:
        return KMeans(centres, np.empty(0, np.int64), np.empty(0, np.float32))
    if ns == n:
        return KMeans(centres, labels, dist)
    labels, dist = assign(x, centres, _lam(dist, n, k, balance), rng)
    return KMeans(centres, labels, dist)


@nb.njit(cache=True, nogil=True)
def paired_sq_dists(x, centroids, labels):  # type: ignore[no-untyped-def]
    """Squared L2 distance of each row of x to `centroids[labels[i]]` (no temporaries)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        c = centroids[labels[i]]
        s = np.float32(0.0)
        for t in range(x.shape[1]):
            diff = x[i, t] - c[t]
            s += diff * diff
        out[i] = s
    return out


# --- two levels: k large ------------------------------------------------------------------------


def split_counts(sizes: I64, k: int) -> I64:
    """k shared over groups of `sizes` rows in proportion (largest remainders first): every
    non-empty group gets at least one (with fewer than k groups; else the k largest get
    one), none more than its rows; the total is min(k, rows)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    k = min(k, total)
    if k <= 0:
        return np.zeros(len(sizes), np.int64)
    if k <= int((sizes > 0).sum()):
        out = np.zeros(len(sizes), np.int64)
        out[np.argsort(-sizes, kind="stable")[:k]] = 1
        return out
    exact = k * sizes / total
    out = np.minimum(
        sizes, np.maximum(np.floor(exact).astype(np.int64), (sizes > 0).astype(np.int64))
    )
    while (left := k - int(out.sum())) != 0:  # at most a few rounds
        if left > 0:  # the largest remainders among groups with rows to spare
            room = np.flatnonzero(out < sizes)
            pick = room[np.argsort(out[room] - exact[room], kind="stable")[:left]]
            out[pick] += 1
        else:  # over (the one-per-group floor): the groups furthest above their share
            room = np.flatnonzero(out > 1)
            pick = room[np.argsort(exact[room] - out[room], kind="stable")[:-left]]
            out[pick] -= 1
    return out


def _within(tick: Tick | None, at: int, work: int, total: int) -> Tick | None:
    """A tick for one step of a larger job: its (i, n) becomes `at` plus the share i / n of
    the step's `work`, out of the job's `total`."""
    if tick is None:
        return None
    return lambda i, n: tick(at + work * i // max(1, n), total)


def kmeans_two_level(
    x: F32,
    k: int,
    *,
    iters: int = 10,
    sample: int | None = None,
    seed: int | np.random.Generator = 0,
    blas_threads: int = 1,
    refine: int = 0,
    tick: Tick | None = None,
) -> F32:
    """k centroids of the rows of x in two levels: the sample (the rule of `kmeans`) is
    clustered into about sqrt(k) groups, then each group into its share of the k centroids
    (`split_counts`). A Lloyd iteration then costs each row about 2 sqrt(k) distances
    instead of k (at k = 32,768: 362 against 32,768), for centroids a little less tight than
    one flat clustering's (bench/RESULTS.md measures the residuals). Plain (unbalanced)
    k-means at both levels; deterministic for a given seed. `tick(done, total)` is called
    after each top-level iteration, each group's clustering and each chunk of rows of a
    refining iteration, counting distances computed per sample row (so a progress bar
    moves with the time taken: at k = 16,384 one refining iteration costs more than all
    the groups' clusterings together); an exception it raises stops the clustering."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rng = _generator(seed)
    n = len(x)
    ns = min(n, sample or max(MIN_SAMPLE, DEFAULT_SAMPLE_PER_CLUSTER * k))
    xs = x if ns == n else x[np.sort(rng.choice(n, ns, replace=False))]
    groups = max(1, min(ns, round(k**0.5)))
    per_group = -(-k // groups)
    top_work = iters * groups  # each iteration: every row against every group centre
    group_work = iters * per_group  # each group's rows against its share, in all
    refine_work = REFINE_PROBE * per_group + groups  # a row: its groups' members, the centres
    total = top_work + group_work + refine * refine_work

    top = kmeans(xs, groups, iters=iters, seed=rng, blas_threads=blas_threads,
                 tick=_within(tick, 0, top_work, total))  # fmt: skip
    order = np.argsort(top.labels, kind="stable")
    bounds = np.searchsorted(top.labels[order], np.arange(len(top.centroids) + 1))
    shares = split_counts(np.diff(bounds), k)
    out = []
    grouped = _within(tick, top_work, group_work, total)  # (by the rows clustered so far)
    for g, share in enumerate(shares.tolist()):
        if share > 0:
            rows = xs[order[bounds[g] : bounds[g + 1]]]
            res = kmeans(rows, share, iters=iters, sample=len(rows), seed=rng,
                         assign_all=False, blas_threads=blas_threads)  # fmt: skip
            out.append(res.centroids)
        if grouped:
            grouped(int(bounds[g + 1]), ns)
    centres = np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
    for r in range(refine):  # Lloyd over all k, each row assigned among nearby groups
        step = _within(tick, top_work + group_work + r * refine_work, refine_work, total)
        labels, _d = assign_grouped(xs, centres, group_centroids(centres), REFINE_PROBE, step)
        sums, counts = _sums(xs, labels, len(centres))
        full = counts > 0
        centres[full] = (sums[full] / counts[full, None]).astype(np.float32)
    return centres


@dataclass(frozen=True)
class Groups:
    """Centroids grouped for `assign_grouped`: group centres, each group's members, and the
    members' column blocks and squared norms its kernel scores them from."""

    centres: F32  # (G, d)
    members: I64  # centroid ids, group by group
    bounds: I64  # (G + 1,) group g's members are members[bounds[g]:bounds[g + 1]]
    blocks: F32  # group g's members as a (d, widths[g]) block at starts[g] (`_column_blocks`)
    starts: I64  # (G,)
    widths: I64  # (G,) members padded to 16 lanes
    norms: F32  # (K,) squared norm of each member, in `members` order


def group_centroids(centroids: F32, seed: int = 0) -> Groups:
    """About sqrt(K) groups of the K centroids (a balanced k-means of the centroids
    themselves, so the grouping follows from the codebook alone and needs no storing).
    Balanced because a row's cost is the members of the groups it probes: on tokens around
    many near-orthogonal topics, plain k-means made a few hub groups near the origin (one
    held 4,079 of 16,384 centroids) that every row probed, 12x the work of even groups."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    g = max(1, min(len(c), round(len(c) ** 0.5)))
    res = kmeans(c, g, iters=10, seed=seed, balance=GROUP_BALANCE)
    members = np.argsort(res.labels, kind="stable").astype(np.int64)
    bounds = np.searchsorted(res.labels[members], np.arange(len(res.centroids) + 1))
    bounds = bounds.astype(np.int64)
    blocks, starts, widths = _column_blocks(c, members, bounds)
    return Groups(res.centroids, members, bounds, blocks, starts, widths, sq_norms(c[members]))


def calibrate_probe(
    x: F32,
    centroids: F32,
    groups: Groups,
    start: int,
    *,
    rows: int = CALIBRATION_ROWS,
    seed: int | np.random.Generator = 0,
) -> int:
    """The fewest groups `assign_grouped` should probe, trying `start`, then twice as many
    and so on: the first count at which a sample of x's rows gets a mean squared distance
    to its centroid within PROBE_EXCESS of the exact nearest's (`assign`); every group
    (exact) when no smaller count does. A group's centre says little when each group mixes
    many unrelated clusters: on 1M tokens around 10,000 topics at K = 16,384, 16 of 128
    groups gave 1.029x the exact distance and a multi-vector recall@10 of 0.842, 32 (this
    rule's pick) 1.004x and 0.881, 64 1.0003x and 0.889 (bench/RESULTS.md). The bar is
    loose because each doubling costs: a 0.3% bar took the 10M-token scale row from 16 to
    32 groups (1.0028x -> 1.0001x) for 1.7x the assignment time and recall within noise.
    The real tokens measured and the other synthetic sets keep 16 (<= 1.0015x)."""
    ng = len(groups.centres)
    p = max(1, min(start, ng))
    if len(x) == 0:
        return p
    rng = _generator(seed)
    pick = np.sort(rng.choice(len(x), rows, replace=False)) if len(x) > rows else slice(None)
    xs = np.ascontiguousarray(x[pick], dtype=np.float32)  # (the sample only: no copy of x)
    exact = float(assign(xs, centroids)[1].sum(dtype=np.float64))
    bar = (1.0 + PROBE_EXCESS) * exact + 1e-6 * len(xs)  # (+: rows on their centroid)
    while p < ng:
        if float(assign_grouped(xs, centroids, groups, p)[1].sum(dtype=np.float64)) <= bar:
            return p
        p = min(ng, 2 * p)
    return ng


def assign_grouped(
    x: F32, centroids: F32, groups: Groups, probe: int, tick: Tick | None = None
) -> tuple[I64, F32]:
    """Nearest centroid of each row among the members of its `probe` nearest groups, and
    the squared distance to it: `assign`'s answer for almost every row (a row whose nearest
    centroid sits in a group further away gets the best of those it looked at), at about
    (G + probe K / G) distances a row instead of K. The groups are found by one GEMM a
    chunk, the members scored by `_grouped_nearest` (no row copied per group). `tick(rows
    done, n)` is called after each chunk; an exception it raises stops the assignment."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    labels = np.zeros(n, dtype=np.int64)
    best = np.full(n, np.inf, dtype=np.float32)
    ng = len(groups.centres)
    p = max(1, min(probe, ng))
    step = chunk_rows(ng, d)  # the (rows, G) block of the group distances
    for lo in range(0, n, step):
        xc = x[lo : lo + step]
        xn = sq_norms(xc)
        dg = sq_dists(xc, groups.centres, x_norms=xn)
        m = len(xc)
        near = (
            np.argpartition(dg, p - 1, axis=1)[:, :p] if p < ng else np.tile(np.arange(ng), (m, 1))
        )
        # (row, group) pairs by part of the rows, then by group: a part's rows are scored a
        # group at a time, so the group's block stays in cache across them
        parts = max(1, min(GROUP_PARTS, m))
        part = np.repeat(np.arange(m, dtype=np.int64) * parts // m, p)
        key = part * ng + near.ravel()
        order = np.argsort(key, kind="stable")
        ptr = np.searchsorted(key[order], np.arange(parts * ng + 1))
        rows = order // p
        lab = labels[lo : lo + m]
        bst = best[lo : lo + m]
        _grouped_nearest(xc, xn, rows, ptr, ng, groups.blocks, groups.starts, groups.widths,
                         groups.norms, groups.bounds, groups.members, lab, bst)  # fmt: skip
        if tick:
            tick(lo + m, n)
    return labels, best


def _column_blocks(centroids: F32, members: I64, bounds: I64) -> tuple[F32, I64, I64]:
    """Each group's centroids as one (d, w) block, w their count padded to 16 lanes (zero
    columns), back to back in one flat array: (blocks, start of each group's block, w)."""
    d = centroids.shape[1]
    sizes = np.diff(bounds)
    widths = (-(-sizes // LANES) * LANES).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(widths * d)]).astype(np.int64)
    blocks = np.zeros(int(starts[-1]) + LANES, np.float32)  # (+ one vector: loads stay inside)
    for g in range(len(sizes)):
        block = blocks[starts[g] : starts[g + 1]].reshape(d, int(widths[g]))
        block[:, : sizes[g]] = centroids[members[bounds[g] : bounds[g + 1]]].T
    return blocks, starts[:-1].copy(), widths


@nb.njit(cache=True, nogil=True, inline="always", fastmath=True)
def _tile4x4(x, i0, i1, i2, i3, blocks, at0, w, d, dots, c):  # type: ignore[no-untyped-def]
    """Dot products of rows i0..i3 of x with the 64 columns of a (d, w) column block
    starting at flat position at0, into dots[0..3, c:c + 64]: sixteen accumulators held in
    registers, four vector loads a dimension for sixteen fused multiply-adds."""
    a00 = vsplat(0.0)
    a01 = vsplat(0.0)
    a02 = vsplat(0.0)
    a03 = vsplat(0.0)
    a10 = vsplat(0.0)
    a11 = vsplat(0.0)
    a12 = vsplat(0.0)
    a13 = vsplat(0.0)
    a20 = vsplat(0.0)
    a21 = vsplat(0.0)
    a22 = vsplat(0.0)
    a23 = vsplat(0.0)
    a30 = vsplat(0.0)
    a31 = vsplat(0.0)
    a32 = vsplat(0.0)
    a33 = vsplat(0.0)
    for t in range(d):
        at = at0 + t * w
        b0 = vload(blocks, at)
        b1 = vload(blocks, at + 1 * LANES)
        b2 = vload(blocks, at + 2 * LANES)
        b3 = vload(blocks, at + 3 * LANES)
        xt = vsplat(x[i0, t])
        a00 = vfma(xt, b0, a00)
        a01 = vfma(xt, b1, a01)
        a02 = vfma(xt, b2, a02)
        a03 = vfma(xt, b3, a03)
        xt = vsplat(x[i1, t])
        a10 = vfma(xt, b0, a10)
        a11 = vfma(xt, b1, a11)
        a12 = vfma(xt, b2, a12)
        a13 = vfma(xt, b3, a13)
        xt = vsplat(x[i2, t])
        a20 = vfma(xt, b0, a20)
        a21 = vfma(xt, b1, a21)
        a22 = vfma(xt, b2, a22)
        a23 = vfma(xt, b3, a23)
        xt = vsplat(x[i3, t])
        a30 = vfma(xt, b0, a30)
        a31 = vfma(xt, b1, a31)
        a32 = vfma(xt, b2, a32)
        a33 = vfma(xt, b3, a33)
    vstore(dots[0], c, a00)
    vstore(dots[0], c + 1 * LANES, a01)
    vstore(dots[0], c + 2 * LANES, a02)
    vstore(dots[0], c + 3 * LANES, a03)
    vstore(dots[1], c, a10)
    vstore(dots[1], c + 1 * LANES, a11)
    vstore(dots[1], c + 2 * LANES, a12)
    vstore(dots[1], c + 3 * LANES, a13)
    vstore(dots[2], c, a20)
    vstore(dots[2], c + 1 * LANES, a21)
    vstore(dots[2], c + 2 * LANES, a22)
    vstore(dots[2], c + 3 * LANES, a23)
    vstore(dots[3], c, a30)
    vstore(dots[3], c + 1 * LANES, a31)
    vstore(dots[3], c + 2 * LANES, a32)
    vstore(dots[3], c + 3 * LANES, a33)


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _grouped_nearest(x, xn, rows, ptr, ng, blocks, starts, widths, norms, bounds, members, labels, best):  # type: ignore[no-untyped-def]  # fmt: skip
    """For each part h of the rows (one task each) and each group g, the rows
    rows[ptr[h ng + g]:ptr[h ng + g + 1]] (of part h, probing g) are scored against g's
    members; a row's least squared distance so far is in best (start: +inf), its centroid
    id in labels, the distance clipped at 0 at the end. A group's members are scored from
    its (d, w) column block (`_column_blocks`) four rows at a time against 64 members (16
    at the block's end): per dimension four vector loads serve sixteen fused multiply-adds
    (one load per multiply-add scoring one row at a time: 1.8-1.9x slower, the block being
    read from L2 rather than L1); a part takes its rows a group at a time, so the group's
    block stays in cache across them. A tile of fewer than four rows repeats its first."""
    d = x.shape[1]
    parts = (len(ptr) - 1) // ng
    for h in nb.prange(parts):
        dots = np.empty((4, widths.max()), np.float32)
        for g in range(ng):
            w = widths[g]
            base = starts[g]
            lo = bounds[g]
            size = bounds[g + 1] - lo
            e1 = ptr[h * ng + g + 1]
            for e in range(ptr[h * ng + g], e1, 4):
                r = min(4, e1 - e)
                i0 = rows[e]
                i1 = rows[e + 1] if r > 1 else i0
                i2 = rows[e + 2] if r > 2 else i0
                i3 = rows[e + 3] if r > 3 else i0
                c = 0
                while c + 4 * LANES <= w:
                    _tile4x4(x, i0, i1, i2, i3, blocks, base + c, w, d, dots, c)
                    c += 4 * LANES
                while c < w:
                    a0 = vsplat(0.0)
                    a1 = vsplat(0.0)
                    a2 = vsplat(0.0)
                    a3 = vsplat(0.0)
                    for t in range(d):
                        b = vload(blocks, base + t * w + c)
                        a0 = vfma(vsplat(x[i0, t]), b, a0)
                        a1 = vfma(vsplat(x[i1, t]), b, a1)
                        a2 = vfma(vsplat(x[i2, t]), b, a2)
                        a3 = vfma(vsplat(x[i3, t]), b, a3)
                    vstore(dots[0], c, a0)
                    vstore(dots[1], c, a1)
                    vstore(dots[2], c, a2)
                    vstore(dots[3], c, a3)
                    c += LANES
                for q in range(r):
                    i = rows[e + q]
                    top = best[i]
                    arg = -1
                    for j in range(size):
                        dist = xn[i] + norms[lo + j] - np.float32(2.0) * dots[q, j]
                        if dist < top:
                            top = dist
                            arg = lo + j
                    if arg >= 0:
                        best[i] = top
                        labels[i] = members[arg]
    for i in nb.prange(x.shape[0]):
        best[i] = max(best[i], np.float32(0.0))
