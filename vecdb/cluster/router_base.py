"""What every part of the router servicer shares: the cached catalog, the shard set, and the
questions "which collection is this", "which shards does this call touch".

The catalog is only read through `Catalog.state()`, the cache that never blocks on etcd, so
data calls go on while etcd is away; only catalog changes (create/drop collection, a new
tenant, a grant needing a new shard) wait for etcd and fail with `CatalogUnavailable` when it
is down. A call about a collection the catalog does not know is sent whole to shard 0, so
the caller gets exactly the error a single node gives (NOT_FOUND naming it). Owns no state
of its own besides the shard channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from vecdb.engine import validate as v
from vecdb.errors import Unavailable, VecdbError
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import IdType

if TYPE_CHECKING:
    from vecdb.cluster.catalog import Catalog, CatalogState, CollectionEntry
    from vecdb.cluster.shards import FanOut, ShardSet


class RouterBase:
    """Catalog and shard helpers of the router servicer (see the module docstring)."""

    def __init__(self, catalog: Catalog, shards: ShardSet, stream_window: int = 4) -> None:
        self._catalog = catalog  # cached catalog state; changes by compare-and-swap
        self._shards = shards  # channels to the shards of the catalog's shard map
        self._window = stream_window  # credits advertised to streaming clients

    # -- catalog ---------------------------------------------------------------------------

    def _state(self) -> CatalogState:
        """The cached catalog (the shard channels follow its shard map through the catalog
        watch of `router_app`)."""
        st = self._catalog.state()
        if not st.shards:
            raise Unavailable("the router has no shards yet: the catalog holds no shard map "
                              "(start a router with --shards, or check etcd)",
                              reason="NO_SHARDS")  # fmt: skip
        return st

    def _entry(self, name: str) -> CollectionEntry | None:
        return self._state().collections.get(name)

    @staticmethod
    def _multi_tenant(entry: CollectionEntry) -> bool:
        return bool(entry.spec.get("multi_tenant"))

    @staticmethod
    def _dense(entry: CollectionEntry) -> bool:
        return bool(entry.spec.get("kind", "dense") == "dense")

    def _all(self) -> list[int]:
        return list(range(len(self._shards)))

    def _tenant_shards(self, collection: str, tenants: Iterable[str]) -> list[int] | None:
        """The shards holding what these tenants may see (their union), or None when the
        catalog does not know one of them (then shard 0 answers, as a node would)."""
        st = self._state()
        out: set[int] = set()
        for t in tenants:
            placement = st.tenants.get((collection, t))
            if placement is None:
                return None
            out |= set(placement.shards) | {placement.home}
        return sorted(s for s in out if s < len(st.shards))

    def _home(self, collection: str, tenant: str) -> int | None:
        placement = self._state().tenants.get((collection, tenant))
        return None if placement is None else placement.home

    # -- calls -----------------------------------------------------------------------------

    def _one(self, method: str, req: Any, ctx: grpc.ServicerContext | None, shard: int = 0) -> Any:
        """`req` sent whole to one shard, its answer or error handed on."""
        self._state()
        return self._shards.call(shard, method, req, ctx)

    def _each(
        self, method: str, req: Any, ctx: grpc.ServicerContext | None,
        shards: Sequence[int] | None = None, *, allow_partial: bool = False, long: bool = False,
    ) -> FanOut:  # fmt: skip
        """The same `req` sent to `shards` (default: all) at once (`long`: no per-shard
        deadline unless the client set one, see `ShardSet.timeout`)."""
        self._state()
        targets = self._all() if shards is None else shards
        return self._shards.fan_out(method, dict.fromkeys(targets, req), ctx,
                                    allow_partial=allow_partial, long=long)  # fmt: skip

    def _ensure_tenant_on(
        self, collection: str, tenant: str, shard: int, ctx: grpc.ServicerContext | None
    ) -> None:
        """Make `tenant` present on `shard` (it will hold points granted to it there): the
        catalog records the shard in its placement (a catalog change), and the shard gets
        the tenant (ALREADY_EXISTS is fine). A tenant the catalog does not know is left for
        the shard to refuse."""
        placement = self._state().tenants.get((collection, tenant))
        if placement is None or shard == placement.home or shard in placement.shards:
            return
        req = pb.CreateTenantRequest(collection=collection, tenant=tenant)
        out = self._shards.fan_out("CreateTenant", {shard: req}, ctx, check=False)
        err = out.errors.get(shard)
        if err is not None and err.code != "ALREADY_EXISTS":
            raise err
        if out.missing:
            raise self._shards.missing_error(out.missing)
        self._catalog.add_tenant_shards(collection, tenant, [shard])

    def _partial_write(self, what: str, applied: dict[int, Any], errors: dict[int, VecdbError],
                       missing: dict[int, str]) -> VecdbError:  # fmt: skip
        """The error of a write some shards applied and others did not."""
        failed = sorted(set(errors) | set(missing))
        first = errors[min(errors)] if errors else self._shards.missing_error(missing)
        if not applied:
            return first
        names = ", ".join(self._shards.name(s) for s in sorted(applied))
        bad = ", ".join(self._shards.name(s) for s in failed)
        return type(first)(
            f"{what} applied on shards {names}; failed on shards {bad}: {first.message} "
            "(retrying the whole call is safe: writes by id are idempotent)",
            field=first.field, reason=first.reason, retry_after=first.retry_after,
        )  # fmt: skip

    # -- checks a node would make before touching data --------------------------------------

    @staticmethod
    def _check_ids(entry: CollectionEntry, ids: pb.Ids) -> None:
        """The ids' errors exactly as a node reports them, before the request is split (so
        positions in messages are the caller's and no shard applies a part of it)."""
        id_type = IdType(entry.spec.get("id_type", "int"))
        v.prepare_ids(convert.ids_from_proto(ids), id_type)
