"""The multi-tenant benchmark's workload: tenants, owners, grants, queries and ground truth.

Owns what `vecdb bench --tenants zipf:T[:s]` searches for, built deterministically from a
dataset and a seed. Every base vector has exactly one owner; owned sizes follow Zipf
(`c / rank^s`, at least 1, the largest capped at `max_share` of N, c chosen so the sizes sum to
N). Locality "clustered" gives each tenant the union of a few nearest-neighbour balls around
random seeds (largest tenants first, each ball the nearest still-unowned points); "random" a
uniform sample. Sharing: a `share` fraction of the vectors is also granted to 1-9 more
tenants (2-10 in all), drawn in proportion to their owned size. A tenant's set is what it owns
plus what it was granted; its size bucket comes from that set. Queries: a seeded sample of
tenants per bucket (every tenant of a sparse bucket), each with held-out vectors (the dataset's
queries) nearest to random members of its set; ground truth is the exact top-k over exactly
that tenant's set. Must not run or time any index (see `vecdb.bench.tenants_run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import Dataset
from vecdb.bench.filtered import filtered_topk
from vecdb.errors import InvalidArgument

OPTION = "--tenants"  # named in errors about the spec
K = 10  # ground-truth depth (recall@10)
DEFAULT_EXPONENT = 1.1  # Zipf s
MIN_EXPONENT, MAX_EXPONENT = 0.0, 4.0
MAX_TENANTS = 1_000_000
DEFAULT_MAX_SHARE = 0.075  # the largest tenant owns at most this share of N (issue 10: 5-10%)
DEFAULT_SHARE = 0.10  # fraction of vectors granted to more tenants than their owner
MIN_EXTRA, MAX_EXTRA = 1, 9  # a shared vector gets this many extra tenants (2-10 in all)
MAX_BALLS = 4  # clustered: a tenant is the union of 1..MAX_BALLS nearest-neighbour balls
DEFAULT_EDGES = (100, 1_000, 10_000)  # size buckets: <= 100, <= 1k, <= 10k, > 10k
DEFAULT_TENANTS_PER_BUCKET = 40  # tenants sampled per bucket for queries
DEFAULT_QUERIES_PER_TENANT = 5
LOCALITIES = ("clustered", "random")

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TenantSpec:
    """How to make tenants: `zipf:T[:s]` plus the options the config may set."""

    tenants: int  # T
    exponent: float = DEFAULT_EXPONENT  # Zipf s
    locality: str = "clustered"  # "clustered" | "random"
    max_share: float = DEFAULT_MAX_SHARE  # cap of the largest owner (raised to 2/T if below)
    share: float = DEFAULT_SHARE  # fraction of vectors with extra grants
    seed: int = 0
    edges: tuple[int, ...] = DEFAULT_EDGES  # bucket upper bounds; one more bucket above
    tenants_per_bucket: int = DEFAULT_TENANTS_PER_BUCKET
    queries_per_tenant: int = DEFAULT_QUERIES_PER_TENANT

    def describe(self) -> str:
        return (f"zipf:{self.tenants}:{self.exponent:g}, {self.locality}, largest <= "
                f"{self.max_share:g} of N, {self.share:g} shared with {MIN_EXTRA + 1}-"
                f"{MAX_EXTRA + 1} tenants, seed {self.seed}")  # fmt: skip


def parse_tenant_spec(spec: str, **options: Any) -> TenantSpec:
    """ "zipf:1000" or "zipf:1000:1.1" (plus TenantSpec fields as keywords) -> TenantSpec."""
    parts = spec.split(":")
    if parts[0] != "zipf" or len(parts) not in (2, 3):
        raise InvalidArgument(f"{OPTION}: expected zipf:T[:s], got {spec!r}")
    try:
        t = int(parts[1])
        s = float(parts[2]) if len(parts) == 3 else DEFAULT_EXPONENT
    except ValueError:
        raise InvalidArgument(f"{OPTION}: expected zipf:T[:s] with numbers, got {spec!r}") from None
    if not 1 <= t <= MAX_TENANTS:
        raise InvalidArgument(f"{OPTION}: T must be in [1, {MAX_TENANTS:,}], got {t}")
    if not MIN_EXPONENT <= s <= MAX_EXPONENT:
        raise InvalidArgument(f"{OPTION}: s must be in [{MIN_EXPONENT}, {MAX_EXPONENT}], got {s}")
    out = TenantSpec(t, s, **options)
    if out.locality not in LOCALITIES:
        raise InvalidArgument(f"tenant locality must be one of {LOCALITIES}, got {out.locality!r}")
    if not 0.0 < out.max_share <= 1.0 or not 0.0 <= out.share <= 1.0:
        raise InvalidArgument("tenant max_share must be in (0, 1] and share in [0, 1]")
    if list(out.edges) != sorted(set(out.edges)) or not out.edges or out.edges[0] < 1:
        raise InvalidArgument(f"tenant bucket edges must be increasing and >= 1: {out.edges}")
    if out.tenants_per_bucket < 1 or out.queries_per_tenant < 1:
        raise InvalidArgument("tenants_per_bucket and queries_per_tenant must be >= 1")
    return out


@dataclass(frozen=True)
class TenantWorkload:
    """Tenants over a dataset's base rows, and the queries with their ground truth."""

    spec: TenantSpec
    n: int  # base rows (= ids) in the collection
    owner: I64  # (n,) owning tenant of each row
    members: list[I64]  # tenant -> sorted rows it may see (owned + granted)
    grants: list[I64]  # tenant -> sorted rows granted to it (not owned)
    query_tenant: I64  # (nq,) tenant of each query
    queries: F32  # (nq, d) the query vectors (held-out rows of the dataset)
    gt_ids: I64  # (nq, K) exact top-K within the query's tenant, -1 padded
    gt_dist: F32  # (nq, K) their distances, +inf padded

    @property
    def sizes(self) -> I64:
        return np.array([len(m) for m in self.members], dtype=np.int64)

    def bucket_of(self, size: int) -> int:
        return int(np.searchsorted(np.asarray(self.spec.edges), size, side="left"))

    def bucket_names(self) -> list[str]:
        return bucket_names(self.spec.edges)

    def sampled_tenants(self) -> I64:
        return np.unique(self.query_tenant)


def bucket_names(edges: Sequence[int]) -> list[str]:
    """(100, 1000, 10000) -> ["<= 100", "<= 1k", "<= 10k", "> 10k"]."""

    def short(x: int) -> str:
        return f"{x // 1000}k" if x >= 1000 and x % 1000 == 0 else str(x)

    return [f"<= {short(e)}" for e in edges] + [f"> {short(edges[-1])}"]


def tenant_name(t: int) -> str:
    return f"t{t:06d}"


def zipf_sizes(n: int, t: int, s: float, max_share: float) -> I64:
    """Owned sizes of T tenants summing to n: round(c / rank^s), each >= 1, the largest capped
    at max(max_share, 2/T) x n, c found by bisection; largest first."""
    if t > n:
        raise InvalidArgument(f"{OPTION}: {t:,} tenants need at least as many vectors, got {n:,}")
    cap = max(max_share, min(1.0, 2.0 / t)) * n
    cap = max(cap, n / t)
    ranks = np.arange(1, t + 1, dtype=np.float64) ** -s

    def total(c: float) -> float:
        return float(np.maximum(1.0, np.minimum(cap, c * ranks)).sum())

    lo, hi = 0.0, cap * float(t) ** s + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < n else (lo, mid)
    real = np.maximum(1.0, np.minimum(cap, hi * ranks))
    sizes = np.maximum(1, np.floor(real)).astype(np.int64)
    left = n - int(sizes.sum())  # largest-remainder rounding, never above the cap
    order = np.argsort(-(real - np.floor(real)), kind="stable")
    i = 0
    while left != 0:
        j = int(order[i % t])
        if left > 0 and sizes[j] + 1 <= max(cap, 1):
            sizes[j] += 1
            left -= 1
        elif left < 0 and sizes[j] > 1:
            sizes[j] -= 1
            left += 1
        i += 1
    return np.sort(sizes)[::-1].copy()


def _distances(base: F32, x: F32, metric: str, base_norm2: F32 | None = None) -> F32:
    """Distances (vecdb's convention) of every base row to each column of x (d,) or (d, m)."""
    dots = base @ x
    if metric == "l2":
        norms = np.einsum("ij,ij->i", base, base) if base_norm2 is None else base_norm2
        xx = np.einsum("i...,i...->...", x, x)
        out: F32 = (norms.reshape((-1,) + (1,) * (x.ndim - 1)) - 2.0 * dots + xx).astype(np.float32)
        return out
    return (-dots if metric == "ip" else 1.0 - dots).astype(np.float32)


def assign_owners(ds: Dataset, sizes: I64, locality: str, rng: np.random.Generator) -> I64:
    """(n,) owner of each base row: random, or each tenant the union of a few balls: the
    nearest still-unowned rows around a random seed row, largest tenants first."""
    n = len(ds.base)
    if locality == "random":
        return np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(n)].astype(np.int64)
    balls: list[tuple[int, int]] = []  # (tenant, rows) in order
    for t, size in enumerate(sizes.tolist()):
        b = int(rng.integers(1, MAX_BALLS + 1)) if size >= 2 * MAX_BALLS else 1
        balls += [(t, size // b + (i < size % b)) for i in range(b)]
    seeds = rng.integers(n, size=len(balls))  # a taken seed still centres its ball
    owner = np.full(n, -1, dtype=np.int64)
    norms = np.einsum("ij,ij->i", ds.base, ds.base) if ds.metric == "l2" else None
    step = max(1, (64 << 20) // (4 * n))  # seeds per distance block: 64 MiB
    for lo in range(0, len(balls), step):
        block = _distances(ds.base, ds.base[seeds[lo : lo + step]].T, ds.metric, norms)
        for j in range(block.shape[1]):
            t, m = balls[lo + j]
            d = np.where(owner < 0, block[:, j], np.inf)
            take = np.argpartition(d, m - 1)[:m]
            owner[take] = t
    return owner


def assign_grants(
    owner: I64, sizes: I64, share: float, rng: np.random.Generator
) -> tuple[I64, I64]:
    """(rows, tenants) pairs of extra grants: `share` of the rows, each to 1-9 more tenants
    drawn in proportion to owned size, never its owner, no tenant twice."""
    t = len(sizes)
    n = len(owner)
    n_shared = round(share * n) if t > 1 else 0
    shared = np.sort(rng.choice(n, size=n_shared, replace=False))
    p = sizes / sizes.sum()
    rows: list[int] = []
    tens: list[int] = []
    for r in shared.tolist():
        extra = min(int(rng.integers(MIN_EXTRA, MAX_EXTRA + 1)), t - 1)
        picked: set[int] = set()
        while len(picked) < extra:
            for c in rng.choice(t, size=2 * extra, p=p).tolist():
                if c != owner[r] and len(picked) < extra:
                    picked.add(c)
        rows += [r] * extra
        tens += sorted(picked)
    return np.asarray(rows, dtype=np.int64), np.asarray(tens, dtype=np.int64)


def make_workload(ds: Dataset, spec: TenantSpec) -> TenantWorkload:
    """The whole workload of `spec` on `ds`, deterministic in spec.seed."""
    rng = np.random.default_rng([spec.seed, spec.tenants])
    n = len(ds.base)
    sizes = zipf_sizes(n, spec.tenants, spec.exponent, spec.max_share)
    owner = assign_owners(ds, sizes, spec.locality, rng)
    g_rows, g_tens = assign_grants(owner, sizes, spec.share, rng)
    grants = _group(g_tens, g_rows, spec.tenants)
    owned = _group(owner, np.arange(n, dtype=np.int64), spec.tenants)
    members = [np.union1d(o, g).astype(np.int64) for o, g in zip(owned, grants, strict=True)]
    q_ten, queries = _queries(ds, members, spec, rng)
    gt_ids = np.full((len(q_ten), K), -1, dtype=np.int64)
    gt_dist = np.full((len(q_ten), K), np.inf, dtype=np.float32)
    for t in np.unique(q_ten).tolist():
        sel = np.flatnonzero(q_ten == t)
        gt_ids[sel], gt_dist[sel] = filtered_topk(ds.base, queries[sel], ds.metric, members[t], K)
    return TenantWorkload(spec, n, owner, members, grants, q_ten, queries, gt_ids, gt_dist)


def _group(keys: I64, values: I64, t: int) -> list[I64]:
    """values grouped by key 0..t-1, each group sorted."""
    order = np.lexsort((values, keys))
    bounds = np.searchsorted(keys[order], np.arange(t + 1))
    vals = values[order]
    return [vals[bounds[i] : bounds[i + 1]].copy() for i in range(t)]


def sample_tenants(sizes: I64, spec: TenantSpec, rng: np.random.Generator) -> I64:
    """Up to tenants_per_bucket tenants of each size bucket (all of a sparse bucket)."""
    buckets = np.searchsorted(np.asarray(spec.edges), sizes, side="left")
    out = []
    for b in range(len(spec.edges) + 1):
        ts = np.flatnonzero(buckets == b)
        if len(ts) > spec.tenants_per_bucket:
            ts = rng.choice(ts, size=spec.tenants_per_bucket, replace=False)
        out.append(ts)
    return np.sort(np.concatenate(out)).astype(np.int64)


def _queries(
    ds: Dataset, members: list[I64], spec: TenantSpec, rng: np.random.Generator
) -> tuple[I64, F32]:
    """Per sampled tenant, queries_per_tenant held-out vectors, each the nearest held-out
    vector (not yet used by that tenant) to a random member of the tenant."""
    pool = ds.queries
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    q = spec.queries_per_tenant
    tenants: list[int] = []
    picks: list[int] = []
    for t in sample_tenants(sizes, spec, rng).tolist():
        anchors = rng.choice(members[t], size=q, replace=len(members[t]) < q)
        used: set[int] = set()
        for a in anchors.tolist():
            d = _distances(pool, ds.base[a], ds.metric)
            near = np.argsort(d, kind="stable")[: q + 1].tolist()
            pick = next((i for i in near if i not in used), near[0])
            used.add(pick)
            tenants.append(t)
            picks.append(pick)
    qv = np.ascontiguousarray(pool[np.asarray(picks, dtype=np.int64)], dtype=np.float32)
    return np.asarray(tenants, dtype=np.int64), qv
