"""What every part of the router servicer shares: the cached catalog, the shard set, and the
questions "which collection is this", "which shards does this call touch".

The catalog is only read through `Catalog.state()`, the cache that never blocks on etcd, so
data calls go on while etcd is away; only catalog changes (create/drop collection, a new
tenant, a grant needing a new shard) wait for etcd and fail with `CatalogUnavailable` when it
is down. A collection the cache does not know is looked up once more in the store itself
(`Catalog.refresh`, skipped while the store is away), since another router may have created
it a moment ago and this one's watch not caught up: placing its points by a stale cache
would write them all to shard 0. So is a tenant the cache does not place (a tenant search
would ask shard 0 only). Such reads are made one at a time and at most one per
MISS_REFRESH_S; a call that finds one too recent or under way waits for the next read begun
after it asked (so a name created before the call is always seen), at most MISS_REFRESH_S
and a read. A write about a collection still unknown is then sent whole to shard 0, so the
caller gets exactly the error a single node gives (NOT_FOUND naming it). A read of a
collection the cache lacks does not wait: it goes to every shard (`_scope`), whose answer is
whole whether the cache lags or not. Owns no state of its own besides the shard channels
and that lookup's last read and clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from vecdb.cluster import routing
from vecdb.engine import validate as v
from vecdb.errors import PermissionDenied, ResourceExhausted, Unavailable, VecdbError, echo
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import IdType

if TYPE_CHECKING:
    from vecdb.cluster.catalog import Catalog, CatalogState, CollectionEntry
    from vecdb.cluster.shards import FanOut, ShardSet

MISS_REFRESH_S = 0.1  # at most one store lookup per this many seconds for unknown names


class RouterBase:
    """Catalog and shard helpers of the router servicer (see the module docstring)."""

    def __init__(self, catalog: Catalog, shards: ShardSet, stream_window: int = 4) -> None:
        self._catalog = catalog  # cached catalog state; changes by compare-and-swap
        self._shards = shards  # channels to the shards of the catalog's shard map
        self._window = stream_window  # credits advertised to streaming clients
        self._miss_lock = threading.Lock()  # one store lookup for an unknown name at a time
        self._miss_at = -MISS_REFRESH_S  # monotonic time the last such lookup began
        self._fresh: CatalogState | None = None  # what it read

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

    def _entry(self, name: str, wait: bool = True) -> CollectionEntry | None:
        """The catalog entry of collection `name`, or None if neither the cache nor, when
        the store answers, a fresh read knows it (see the module docstring; `wait=False`:
        none made if one is too recent or under way)."""
        entry = self._state().collections.get(name)
        if entry is None and (fresh := self._store_state(wait)) is not None:
            return fresh.collections.get(name)
        return entry

    def _store_state(self, wait: bool = True) -> CatalogState | None:
        """The catalog as read from the store by a read begun after this call, for a name
        the cache lacks; None while the store is away. A read is made at most once per
        MISS_REFRESH_S, one at a time: a call finding one too recent or under way waits for
        the next (or, without `wait`, takes None: the cache answers)."""
        if not self._catalog.connected:
            return None
        asked = time.monotonic()
        if not self._miss_lock.acquire(blocking=wait):
            return None
        try:
            if self._fresh is not None and self._miss_at >= asked:
                return self._fresh  # read by a call that began it after this one asked
            pause = self._miss_at + MISS_REFRESH_S - time.monotonic()
            if pause > 0:
                if not wait:
                    return None
                time.sleep(pause)
            self._miss_at = time.monotonic()
            self._fresh = None  # a failed read leaves nothing a later caller could take
            self._fresh = self._catalog.refresh()
            return self._fresh
        except VecdbError:  # the store went away meanwhile: the cache is what there is
            return None
        finally:
            self._miss_lock.release()

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
        if any((collection, t) not in st.tenants for t in tenants):
            st = self._store_state() or st  # placed through another router a moment ago?
        out: set[int] = set()
        for t in tenants:
            placement = st.tenants.get((collection, t))
            if placement is None:
                return None
            out |= set(placement.shards) | {placement.home}
        return sorted(s for s in out if s < len(st.shards))

    def _home(self, collection: str, tenant: str) -> int | None:
        placement = self._state().tenants.get((collection, tenant))
        if placement is None and (fresh := self._store_state()) is not None:
            placement = fresh.tenants.get((collection, tenant))
        return None if placement is None else placement.home

    # -- calls -----------------------------------------------------------------------------

    def _scope(self, collection: str, tenants: list[str]) -> list[int] | None:
        """Shards a call scoped to `tenants` touches in a multi-tenant collection (None: all
        shards; [0]: the catalog knows no such tenant, let a node say so). A collection the
        router's catalog does not know is asked of every shard: each node says NotFound if
        it is truly absent (the first error is the answer), and if the catalog only lags
        (created through another router, a watch catching up) the answer is whole, never
        shard 0's part of it."""
        entry = self._entry(collection, wait=bool(tenants))  # unknown, untenanted: all shards
        if entry is None:
            return None
        if not tenants or not self._multi_tenant(entry):
            return None
        shards = self._tenant_shards(collection, tenants)
        return [0] if shards is None else shards

    def _per_shard_tenants(
        self, req: Any, tenants: list[str], targets: list[int]
    ) -> dict[int, Any]:
        """A union search (`tenants`; points or documents) asks each shard only about the
        tenants present there (a shard knows a tenant only where it is home or holds points
        granted to it)."""
        if len(tenants) < 2 or self._tenant_shards(req.collection, tenants) is None:
            return dict.fromkeys(targets, req)
        st = self._state()
        parts = {}
        for shard in targets:
            here = [t for t in tenants if (p := st.tenants.get((req.collection, t))) is not None
                    and (shard == p.home or shard in p.shards)]  # fmt: skip
            part = type(req)()
            part.CopyFrom(req)
            del part.tenants[:]
            part.tenants.extend(here)
            parts[shard] = part
        return parts

    def _check_foreign_ids(self, req: Any, home: int, ctx: grpc.ServicerContext | None) -> None:
        """Best effort, before anything is written: ids of a multi-tenant upsert (points or
        documents: `req.collection`, `req.ids`) held on another shard than the owner's
        home are refused. The probe (a Get by the caller's key) sees what that key sees: with
        a key bound to one tenant only that tenant's points; a key bound to several tenants
        cannot probe (TENANT_REQUIRED) and the check is skipped; a concurrent upsert of the
        same id to another home is not seen. Any other probe failure fails the upsert."""
        others = [s for s in self._all() if s != home]
        if not others or routing.id_count(req.ids) == 0 or req.ids.HasField("mixed"):
            return
        probe = pb.GetRequest(collection=req.collection, ids=req.ids, with_vectors=False)
        out = self._shards.fan_out("Get", dict.fromkeys(others, probe), ctx, check=False)
        if out.missing:
            raise self._shards.missing_error(out.missing)
        for shard, err in sorted(out.errors.items()):
            # NOT_FOUND: the key's tenant does not exist there, so nothing of it is there.
            if err.code != "NOT_FOUND" and err.reason != "TENANT_REQUIRED":
                raise type(err)(
                    f"upsert not written: checking its ids on shard {self._shards.name(shard)} "
                    f"failed: {err.message}", field=err.field, reason=err.reason,
                    retry_after=err.retry_after,
                )  # fmt: skip
        taken = {i for a in out.answers.values() for i in convert.ids_from_proto(a.points.ids)}
        for i, value in enumerate(convert.ids_from_proto(req.ids)):
            if value in taken:  # a node's words: the id is another owner's
                raise PermissionDenied(
                    f"ids[{i}] = {echo(value)} is owned by another tenant; only its owner "
                    "may replace it", field=f"ids[{i}]", reason="NOT_OWNER",
                )  # fmt: skip

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
        # The home's stored quotas go with it: made without them, the tenant would have the
        # shard's [quotas] default there, not the limits create_tenant / update_tenant set.
        ask = pb.GetTenantRequest(collection=collection, tenant=tenant)
        got = self._shards.fan_out("GetTenant", {placement.home: ask}, ctx, check=False)
        req = pb.CreateTenantRequest(collection=collection, tenant=tenant)
        if placement.home in got.answers:
            info = got.answers[placement.home].info
            req.max_vectors, req.max_bytes = info.max_vectors, info.max_bytes
        out = self._shards.fan_out("CreateTenant", {shard: req}, ctx, check=False)
        err = out.errors.get(shard)
        if err is not None and err.code != "ALREADY_EXISTS":
            raise err
        if out.missing:
            raise self._shards.missing_error(out.missing)
        self._catalog.add_tenant_shards(collection, tenant, [shard])

    def _check_vector_quotas(
        self, collection: str, parts: dict[int, pb.Ids], tenants: dict[str, str],
        ctx: grpc.ServicerContext | None, held_by: str | None = None,
    ) -> None:  # fmt: skip
        """Best effort, before anything is written: a write letting each of `tenants` (name
        -> the request field naming it) see the points `parts[shard]` on those shards must
        not take it past its `max_vectors` counted over every shard of its placement, as one
        node counts it (each shard checks only the points it holds: a tenant granted points
        on two shards could reach twice its quota). A tenant placed on the written shard
        alone is left to that shard's own check, which is exact. `held_by` (a grant: its
        owner, "" for any owner): only the ids a shard holds for it count. The counts are
        asked with the caller's key; what the key may not ask is left to the shards; two
        concurrent writes may both pass."""
        st = self._state()
        held: dict[int, set[Any]] = {}
        for tenant, field in tenants.items():
            placement = st.tenants.get((collection, tenant))
            if placement is None:
                continue
            placed = sorted({placement.home, *placement.shards, *parts} & set(self._all()))
            if len(placed) == 1:
                continue
            ask = pb.GetTenantRequest(collection=collection, tenant=tenant)
            out = self._shards.fan_out("GetTenant", dict.fromkeys(placed, ask), ctx, check=False)
            home = out.answers.get(placement.home)
            if home is None or not home.info.max_vectors:
                continue  # unlimited, or not askable: the shards' own checks stand
            gain = 0
            for shard, ids in parts.items():
                if shard not in held:
                    held[shard] = set(convert.ids_from_proto(ids))
                    if held_by is not None:
                        held[shard] &= self._visible(collection, ids, held_by, shard, ctx)
                gain += len(held[shard] - self._visible(collection, ids, tenant, shard, ctx))
            after = sum(int(a.info.vectors) for a in out.answers.values()) + gain
            limit = int(home.info.max_vectors)
            if gain > 0 and after > limit:  # a node's words (engine.tenant_quota)
                raise ResourceExhausted(
                    f"tenant {tenant!r} would hold {after:,} vectors, over its {limit:,}-vector "
                    "quota", field=field, reason="TENANT_VECTOR_QUOTA",
                )  # fmt: skip

    @staticmethod
    def _seers(req: Any) -> dict[str, str]:
        """The tenants a multi-tenant upsert lets see its points, with the field naming each
        (the owner's `tenant`, its grantees' `grant_to`), for `_check_vector_quotas`."""
        out = {req.tenant: "tenant"}
        for grantee in req.grant_to:
            out.setdefault(grantee, "grant_to")
        return out

    def _visible(
        self, collection: str, ids: pb.Ids, tenant: str, shard: int,
        ctx: grpc.ServicerContext | None,
    ) -> set[Any]:  # fmt: skip
        """Which of `ids` `shard` holds that `tenant` may see (every tenant's: "")."""
        probe = pb.GetRequest(collection=collection, ids=ids, tenant=tenant, with_vectors=False)
        seen = self._shards.fan_out("Get", {shard: probe}, ctx, check=False).answers.get(shard)
        return set() if seen is None else set(convert.ids_from_proto(seen.points.ids))

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
