"""A shard's check of client-side routes: a direct call is answered only if this shard's
catalog still says the tenant lives here alone.

A client that routes a tenant's read itself (`vecdb.client.routes`) sends it straight to the
tenant's one shard with `x-vecdb-route: <shard index>@<catalog epoch of the route>`. Before the
node's servicer answers Search / SearchBatch / Get / Scroll / Count carrying that header, the
shard checks against its own copy of the catalog (the one its `ShardSync` watches): it is the
shard named; its catalog is connected and at least as new as the route; the collection is
multi-tenant; the call names one `tenant` (no `tenants` list); and the tenant's placement is
this shard alone (home here, no other shard holding points granted to it). Anything else
answers FAILED_PRECONDITION with reason `STALE_ROUTE`, and the client asks the router again.
Calls without the header (the router's, a plain client's) pass unchecked. Owns the check and
the servicer wrapper that applies it; the wiring is `vecdb.cluster.shard_node`'s.
"""

from __future__ import annotations

from typing import Any

import grpc

from vecdb.client.routes import ROUTE_KEY, STALE_ROUTE
from vecdb.cluster.catalog_base import Catalog
from vecdb.errors import FailedPrecondition

CHECKED = ("Search", "SearchBatch", "Get", "Scroll", "Count")  # the calls a client routes


def route_of(ctx: grpc.ServicerContext) -> str | None:
    """The `x-vecdb-route` header of a call, or None."""
    for item in ctx.invocation_metadata() or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key == ROUTE_KEY:
            return str(value)
    return None


def stale(why: str) -> FailedPrecondition:
    return FailedPrecondition(f"stale route: {why}; ask the router again", field="route",
                              reason=STALE_ROUTE)  # fmt: skip


class RouteCheck:
    """Judges the routes of direct calls to shard `shard_index` by `catalog`'s cache."""

    def __init__(self, catalog: Catalog, shard_index: int) -> None:
        self.catalog = catalog  # the shard's catalog (never blocks: its cached state)
        self.shard_index = shard_index

    def check(self, route: str, req: Any) -> None:
        """Raise STALE_ROUTE unless `route` (the header's value) still holds for `req`."""
        shard, _, epoch_text = route.partition("@")
        if not (shard.isdigit() and epoch_text.isdigit()):
            raise stale(f"malformed route {route[:40]!r}")
        if int(shard) != self.shard_index:
            raise stale(f"this is shard {self.shard_index}, the route names shard {shard}")
        if not self.catalog.connected:
            raise stale("this shard's catalog watch is down, it cannot vouch for a route")
        st = self.catalog.state()
        if st.epoch < int(epoch_text):
            raise stale(f"this shard's catalog (epoch {st.epoch}) is older than the route's")
        entry = st.collections.get(req.collection)
        if entry is None or not entry.spec.get("multi_tenant"):
            raise stale(f"collection {req.collection!r} is not a multi-tenant one here")
        if not req.tenant or len(getattr(req, "tenants", ())) > 0:
            raise stale("a direct call names exactly one tenant")
        placed = st.tenants.get((req.collection, req.tenant))
        if placed is None or placed.home != self.shard_index or placed.shards - {placed.home}:
            raise stale(f"tenant {req.tenant!r} is not on this shard alone")


class RouteChecked:
    """The node's servicer with `RouteCheck` in front of the routed calls; every other RPC is
    the servicer's own (attribute access is handed through)."""

    def __init__(self, servicer: Any, check: RouteCheck) -> None:
        self._servicer = servicer
        self._check = check
        for name in CHECKED:
            setattr(self, name, self._guard(getattr(servicer, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._servicer, name)

    def _guard(self, method: Any) -> Any:
        def checked(req: Any, ctx: grpc.ServicerContext) -> Any:
            route = route_of(ctx)
            if route is not None:
                self._check.check(route, req)
            return method(req, ctx)

        return checked
