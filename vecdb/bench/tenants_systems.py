"""The systems of the multi-tenant benchmark: the contract, the registry and the peers.

Owns `TenantSystem` (build on a workload, set one sweep setting, answer one query for one
tenant) and the systems that are not vecdb: exact search over the tenant's vectors (numpy),
one private hnswlib index per tenant, and one shared index over every vector searched with
the tenant as a filter (hnswlib with a filter function, faiss IVF-Flat with an
`IDSelectorBitmap`). vecdb's own systems live in `vecdb.bench.tenants_vecdb`. Per-tenant
structures (private indexes, filter sets, bitmaps) are made for the tenants that get queries
(`TenantWorkload.sampled_tenants`); a system that builds only those says so
(`sampled_only`). Every system answers with base row ids, padded with -1. Must not time
anything (see `vecdb.bench.tenants_run`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.peers import default_nlist
from vecdb.bench.systems import Params
from vecdb.bench.tenants import TenantWorkload
from vecdb.errors import InvalidArgument

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

# Name -> (module, class), in report order: ours first.
TENANT_SYSTEMS: dict[str, tuple[str, str]] = {
    "vecdb-tenants": ("vecdb.bench.tenants_vecdb", "VecdbTenants"),
    "vecdb-spann-per-tenant": ("vecdb.bench.tenants_vecdb", "VecdbSpannPerTenant"),
    "vecdb-spann-filter": ("vecdb.bench.tenants_vecdb", "VecdbSpannFilter"),
    "hnswlib-per-tenant": ("vecdb.bench.tenants_systems", "HnswlibPerTenant"),
    "hnswlib-filter": ("vecdb.bench.tenants_systems", "HnswlibFilter"),
    "faiss-ivf-filter": ("vecdb.bench.tenants_systems", "FaissIVFFilter"),
    "exact": ("vecdb.bench.tenants_systems", "ExactTenant"),
}
DEFAULT_TENANT_SYSTEMS = "all"


class TenantSystem(ABC):
    """One way of answering tenant-scoped queries. Lifecycle: build -> [set_params ->
    search*]* -> close."""

    name = ""  # registry name
    is_ours = False  # vecdb's own (ratios are ours / peer)
    sampled_only = False  # True: built for the sampled tenants only, not all T
    default_sweep: Sequence[Params] | Mapping[str, Sequence[Any]] = ({},)

    def __init__(self, metric: str, dim: int, build_params: Mapping[str, Any]) -> None:
        self.metric = metric  # "l2" | "ip" | "cosine"
        self.dim = dim
        self.build_params: Params = self.resolve_build_params(dict(build_params))

    def resolve_build_params(self, given: Params) -> Params:
        return given

    @abstractmethod
    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        """Index the workload (row i of base has id i) with `threads` threads."""

    @abstractmethod
    def set_params(self, params: Params) -> None:
        """Apply one setting of the sweep."""

    @abstractmethod
    def search(self, q: F32, tenant: int, k: int) -> I64:
        """Top-k row ids among those tenant `tenant` may see, for one (d,) query; -1 padded."""

    def io_counters(self, tenant: int) -> tuple[float, float] | None:
        """Cumulative (postings read, bytes read) of what answers `tenant`'s queries, or None
        when the system has no counters."""
        return None

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release indexes, files and threads."""


def make_tenant_system(
    name: str, metric: str, dim: int, build_params: Mapping[str, Any] | None = None
) -> TenantSystem:
    if name not in TENANT_SYSTEMS:
        raise InvalidArgument(f"unknown tenant system {name!r}; known: {', '.join(TENANT_SYSTEMS)}")
    module, cls_name = TENANT_SYSTEMS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    system: TenantSystem = cls(metric, dim, build_params or {})
    return system


def parse_tenant_systems(spec: str) -> list[str]:
    """`--systems` for a tenant run: names or "all", in registry order."""
    wanted = {p.strip() for p in spec.split(",") if p.strip()}
    if "all" in wanted:
        return list(TENANT_SYSTEMS)
    unknown = sorted(wanted - set(TENANT_SYSTEMS))
    if unknown:
        raise InvalidArgument(
            f"--systems: unknown tenant system {unknown[0]!r}; known: {', '.join(TENANT_SYSTEMS)}"
        )
    if not wanted:
        raise InvalidArgument("--systems: no system named")
    return [n for n in TENANT_SYSTEMS if n in wanted]


def pad(ids: npt.ArrayLike, k: int) -> I64:
    """(m,) ids as a (k,) int64 row padded with -1."""
    out = np.full(k, -1, dtype=np.int64)
    a = np.asarray(ids, dtype=np.int64).ravel()[:k]
    out[: len(a)] = a
    return out


def space(metric: str) -> str:
    """hnswlib's space for a metric (cosine data is unit-norm: inner product)."""
    return "l2" if metric == "l2" else "ip"


class ExactTenant(TenantSystem):
    """numpy brute force over a contiguous copy of the tenant's vectors: recall 1.0, the
    latency floor of a scan."""

    name = "exact"
    sampled_only = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vectors: dict[int, F32] = {}  # tenant -> its vectors, row order of `rows`
        self.rows: dict[int, I64] = {}  # tenant -> its row ids

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        for t in wl.sampled_tenants().tolist():
            self.rows[t] = wl.members[t]
            self.vectors[t] = np.ascontiguousarray(base[wl.members[t]])

    def set_params(self, params: Params) -> None:
        pass

    def search(self, q: F32, tenant: int, k: int) -> I64:
        x, rows = self.vectors[tenant], self.rows[tenant]
        dots = x @ q
        d = np.einsum("ij,ij->i", x, x) - 2.0 * dots if self.metric == "l2" else -dots
        kk = min(k, len(rows))
        top = np.argpartition(d, kk - 1)[:kk] if kk < len(rows) else np.arange(len(rows))
        return pad(rows[top[np.argsort(d[top], kind="stable")]], k)


class HnswlibPerTenant(TenantSystem):
    """A private in-memory hnswlib index per tenant (M=16, ef_construction=200); sweeps ef."""

    name = "hnswlib-per-tenant"
    sampled_only = True
    default_sweep = {"ef": [10, 20, 40, 80, 160]}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.indexes: dict[int, Any] = {}  # tenant -> hnswlib.Index

    def resolve_build_params(self, given: Params) -> Params:
        return {"M": 16, "ef_construction": 200, "random_seed": 100, **given}

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        import hnswlib

        p = self.build_params
        for t in wl.sampled_tenants().tolist():
            rows = wl.members[t]
            index = hnswlib.Index(space=space(self.metric), dim=self.dim)
            index.init_index(max_elements=len(rows), M=int(p["M"]),
                             ef_construction=int(p["ef_construction"]),
                             random_seed=int(p["random_seed"]))  # fmt: skip
            index.add_items(base[rows], rows, num_threads=threads)
            index.set_num_threads(1)
            self.indexes[t] = index

    def set_params(self, params: Params) -> None:
        for index in self.indexes.values():
            index.set_ef(int(params.get("ef", 10)))

    def search(self, q: F32, tenant: int, k: int) -> I64:
        index = self.indexes[tenant]
        labels, _ = index.knn_query(q[None, :], k=min(k, index.get_current_count()), num_threads=1)
        return pad(labels[0], k)

    def close(self) -> None:
        self.indexes.clear()


class HnswlibFilter(TenantSystem):
    """One hnswlib index over every vector; a query keeps only its tenant's rows through a
    filter function (a Python set's __contains__, called per candidate); sweeps ef."""

    name = "hnswlib-filter"
    default_sweep = {"ef": [10, 20, 40, 80, 160, 320, 640]}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index: Any = None  # hnswlib.Index over all rows
        self.filters: dict[int, Any] = {}  # tenant -> row id -> bool

    def resolve_build_params(self, given: Params) -> Params:
        return {"M": 16, "ef_construction": 200, "random_seed": 100, **given}

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        import hnswlib

        p = self.build_params
        self.index = hnswlib.Index(space=space(self.metric), dim=self.dim)
        self.index.init_index(max_elements=len(base), M=int(p["M"]),
                              ef_construction=int(p["ef_construction"]),
                              random_seed=int(p["random_seed"]))  # fmt: skip
        self.index.add_items(base, np.arange(len(base)), num_threads=threads)
        self.index.set_num_threads(1)
        for t in wl.sampled_tenants().tolist():
            self.filters[t] = frozenset(wl.members[t].tolist()).__contains__

    def set_params(self, params: Params) -> None:
        self.index.set_ef(int(params.get("ef", 10)))

    def search(self, q: F32, tenant: int, k: int) -> I64:
        labels, _ = self.index.knn_query(q[None, :], k=k, num_threads=1,
                                         filter=self.filters[tenant])  # fmt: skip
        return pad(labels[0], k)

    def close(self) -> None:
        self.index = None
        self.filters.clear()


class FaissIVFFilter(TenantSystem):
    """One faiss IndexIVFFlat over every vector; a query passes its tenant's rows as an
    IDSelectorBitmap in per-call SearchParametersIVF; sweeps nprobe."""

    name = "faiss-ivf-filter"
    default_sweep = {"nprobe": [4, 8, 16, 32, 64, 128, 256, 512, 1024]}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index: Any = None  # faiss.IndexIVFFlat
        self.bitmaps: dict[int, npt.NDArray[np.uint8]] = {}  # tenant -> packed row bits
        self.selectors: dict[int, Any] = {}  # tenant -> IDSelectorBitmap into its bits
        self.nprobe = 1

    def resolve_build_params(self, given: Params) -> Params:
        return dict(given)  # nlist is filled in at build, from n

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.build_params.setdefault("nlist", default_nlist(len(base)))
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlat(self.dim, metric)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, int(self.build_params["nlist"]),
                                        metric)  # fmt: skip
        self.index.train(base)
        self.index.add(base)
        faiss.omp_set_num_threads(1)
        for t in wl.sampled_tenants().tolist():
            mask = np.zeros(len(base), dtype=bool)
            mask[wl.members[t]] = True
            # faiss keeps a pointer only: the bits must live as long as the selector.
            self.bitmaps[t] = np.packbits(mask, bitorder="little")
            self.selectors[t] = faiss.IDSelectorBitmap(len(base), faiss.swig_ptr(self.bitmaps[t]))

    def set_params(self, params: Params) -> None:
        self.nprobe = int(params.get("nprobe", 1))

    def search(self, q: F32, tenant: int, k: int) -> I64:
        faiss: Any = importlib.import_module("faiss")  # untyped use: its stubs lag the API
        sp = faiss.SearchParametersIVF(sel=self.selectors[tenant], nprobe=self.nprobe)
        _d, ids = self.index.search(q[None, :], k, params=sp)
        return pad(ids[0], k)

    def close(self) -> None:
        self.index = None
        self.selectors.clear()
        self.bitmaps.clear()
