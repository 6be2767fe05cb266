"""vecdb's own systems in the multi-tenant benchmark, driven only through the public SDK.

Owns three ways of asking vecdb for one tenant's neighbours, each in an embedded database in
the run's work directory:

- `vecdb-tenants`: one `multi_tenant=True` collection; every tenant created, each owner's
  vectors upserted with `tenant=owner`, the extra grants made with `grant(ids, tenant=...)`,
  then `optimize`; a query is `search(..., tenant=name)` (the tenant-aware walk).
- `vecdb-spann-per-tenant`: one ordinary SPANN collection per tenant holding exactly its
  vectors (the private-index baseline on the same medium), for the sampled tenants only.
- `vecdb-spann-filter`: one ordinary SPANN collection of every vector, the payload naming
  the owner (`owner`) and extra tenants (`g1`..`g9`), each with an int payload index; a query
  filters on `{"$or": [{"owner": t}, {"g1": t}, ...]}`: today's path (an exact scan of the
  matching points up to `few_matches`, the `visible` set above it).

I/O per query comes from the answering collection's cumulative `stats()["index"]` counters,
read before and after each query (outside its timing). Must not
import the engine, index or storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.engine_features import optimize_and_wait
from vecdb.bench.systems import Params
from vecdb.bench.tenants import MAX_EXTRA, TenantWorkload, tenant_name
from vecdb.bench.tenants_systems import TenantSystem, pad
from vecdb.bench.vecdb_system import upsert_batch_rows
from vecdb.config import MAX_BATCH

COLLECTION = "tenants"
DATA_DIR = "vecdb-data"
GRANT_FIELDS = tuple(f"g{i}" for i in range(1, MAX_EXTRA + 1))

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


class _Vecdb(TenantSystem):
    """An embedded vecdb database in the work directory; search params per request."""

    is_ours = True
    default_sweep: Sequence[Params] | Mapping[str, Sequence[Any]] = {
        "max_postings": [2, 4, 8, 16, 32, 64, 128]
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None  # vecdb Client, embedded
        self.data_dir: Path | None = None
        self.params: Params = {}

    def resolve_build_params(self, given: Params) -> Params:
        return {"index": given.get("index", "spann"),
                "index_params": dict(given.get("index_params", {}))}  # fmt: skip

    def _connect(self, workdir: Path, threads: int) -> None:
        self.data_dir = workdir / DATA_DIR
        self.client = connect(str(self.data_dir))
        set_numba_threads(threads)

    def _create(self, name: str, **extra: Any) -> None:
        self.client.create_collection(
            name,
            dim=self.dim,
            metric=self.metric,
            index=self.build_params["index"],
            index_params=self.build_params["index_params"],
            **extra,
        )

    def set_params(self, params: Params) -> None:
        self.params = dict(params)
        set_numba_threads(1)

    def _search(self, collection: str, q: F32, k: int, **scope: Any) -> I64:
        res = self.client.search(collection, q[None, :], k=k, params=self.params or None, **scope)
        ids = np.asarray(res.ids)[0]
        return pad(np.where(ids == None, -1, ids).astype(np.int64), k)  # noqa: E711

    def collection_of(self, tenant: int) -> str:
        """The collection answering `tenant`'s queries."""
        return COLLECTION

    def io_counters(self, tenant: int) -> tuple[float, float] | None:
        try:
            index = self.client.stats(self.collection_of(tenant)).get("index", {})
        except Exception:  # counters are one column; never fail the run for them
            return None
        if not isinstance(index, Mapping) or index.get("postings_read") is None:
            return None
        return float(index["postings_read"]), float(index.get("bytes_read") or 0)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def connect(path: str) -> Any:
    """An embedded vecdb client (typed loosely: the benchmark calls tenant methods by name)."""
    import vecdb

    return vecdb.connect(path)


def set_numba_threads(n: int) -> None:
    try:
        import numba
    except ImportError:
        return
    limit = int(getattr(numba.config, "NUMBA_NUM_THREADS", n))
    numba.set_num_threads(max(1, min(n, limit)))


def chunks(rows: I64, step: int) -> list[I64]:
    return [rows[lo : lo + step] for lo in range(0, len(rows), step)]


class VecdbTenants(_Vecdb):
    """One multi-tenant collection: owners on upsert, extra grants with `grant`."""

    name = "vecdb-tenants"
    # The tenant walk's budget (index/tenancy.py) and max_postings, which bounds the global
    # walk a tenant holding a large share of the points takes, move together.
    default_sweep = [{"max_postings": m, "tenant_postings": m} for m in (8, 16, 32, 64, 128, 256)]

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        self._connect(workdir, threads)
        load_tenants(self.client, COLLECTION, base, wl, self._create)
        optimize_and_wait(self.client, COLLECTION)

    def search(self, q: F32, tenant: int, k: int) -> I64:
        return self._search(COLLECTION, q, k, tenant=tenant_name(tenant))


def load_tenants(client: Any, collection: str, base: F32, wl: TenantWorkload, create: Any) -> None:
    """Create the multi-tenant collection and its tenants, upsert every owner's vectors with
    `tenant=owner`, then grant the shared vectors to their extra tenants."""
    create(collection, multi_tenant=True)
    for t in range(wl.spec.tenants):
        client.create_tenant(collection, tenant_name(t))
    order = np.argsort(wl.owner, kind="stable")
    bounds = np.searchsorted(wl.owner[order], np.arange(wl.spec.tenants + 1))
    step = upsert_batch_rows(base.shape[1])
    for t in range(wl.spec.tenants):
        for ids in chunks(order[bounds[t] : bounds[t + 1]], step):
            client.upsert(collection, ids=ids, vectors=base[ids], tenant=tenant_name(t))
    for t, rows in enumerate(wl.grants):
        for ids in chunks(rows, MAX_BATCH):
            client.grant(collection, ids, tenant=tenant_name(t))


class VecdbSpannPerTenant(_Vecdb):
    """One ordinary SPANN collection per sampled tenant, holding exactly its vectors."""

    name = "vecdb-spann-per-tenant"
    sampled_only = True

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        self._connect(workdir, threads)
        step = upsert_batch_rows(base.shape[1])
        for t in wl.sampled_tenants().tolist():
            name = tenant_name(t)
            self._create(name)
            for ids in chunks(wl.members[t], step):
                self.client.upsert(name, ids=ids, vectors=base[ids])
            optimize_and_wait(self.client, name)

    def collection_of(self, tenant: int) -> str:
        return tenant_name(tenant)

    def search(self, q: F32, tenant: int, k: int) -> I64:
        return self._search(tenant_name(tenant), q, k)


class VecdbSpannFilter(_Vecdb):
    """One ordinary SPANN collection of every vector; the tenant is a payload filter."""

    name = "vecdb-spann-filter"
    default_sweep = {"max_postings": [8, 16, 32, 64, 128, 256]}

    def build(self, base: F32, wl: TenantWorkload, threads: int, workdir: Path) -> None:
        self._connect(workdir, threads)
        self._create(COLLECTION)
        for key in ("owner", *GRANT_FIELDS):
            self.client.create_payload_index(COLLECTION, key, "int")
        extra: dict[int, list[int]] = {}
        for t, rows in enumerate(wl.grants):
            for r in rows.tolist():
                extra.setdefault(r, []).append(t)
        step = upsert_batch_rows(base.shape[1])
        for ids in chunks(np.arange(len(base), dtype=np.int64), step):
            payloads = [tenant_payload(int(wl.owner[r]), extra.get(r, [])) for r in ids.tolist()]
            self.client.upsert(COLLECTION, ids=ids, vectors=base[ids], payloads=payloads)
        optimize_and_wait(self.client, COLLECTION)

    def search(self, q: F32, tenant: int, k: int) -> I64:
        return self._search(COLLECTION, q, k, filter=tenant_filter(tenant))


def tenant_payload(owner: int, extra: list[int]) -> dict[str, int]:
    """{"owner": owner, "g1": first extra tenant, ...}."""
    return {"owner": owner, **dict(zip(GRANT_FIELDS, extra, strict=False))}


def tenant_filter(tenant: int) -> dict[str, Any]:
    """The payload filter selecting every point `tenant` owns or was granted."""
    return {"$or": [{key: tenant} for key in ("owner", *GRANT_FIELDS)]}
