"""Client-side routing of tenant reads: a tenant that lives on one shard is asked directly,
skipping the router's hop (`RemoteClient(..., direct_routing=True)`; issue 14).

Routed calls: Search, Get, Scroll and Count naming one `tenant` (a Search with a `tenants`
list is not). On the first such call for (collection, tenant) the client asks the router
`GetRoute`; a placement of exactly one shard is cached as a `Route` (shard index, address from
the catalog's shard map, catalog epoch) and later calls go straight to that shard on a channel
of their own, carrying `x-vecdb-route: <shard>@<epoch>` besides the caller's credentials. The
shard answers only if its catalog still places the tenant there alone, else FAILED_PRECONDITION
`STALE_ROUTE` (`vecdb.cluster.shard_routes`): the client drops the route and sends the call
through the router, which is always right; the next call asks GetRoute again. Everything else
also goes through the router: several shards or no route (kept `ROUTE_TTL_S`, then asked
again), a target that is a plain node (GetRoute answers UNIMPLEMENTED: routing is off for this
client), a shard not reached directly (its connection failed, or was not up within
`CONNECT_TIMEOUT_S`, or a call failed in transport: that address is left alone `UNREACHABLE_S`). A shard's own error (a bad
filter, a quota) is raised as it came, as the router hands it on unchanged; a Search answer
gets the router's `shards` stat (1). Owns the cache and these rules (`RouteTable`), the sync
calls (`DirectRoutes`); the async calls are `vecdb.client.routes_aio`'s.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import grpc

from vecdb.client.channel import vectordb_stub
from vecdb.errors import VecdbError
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

ROUTE_KEY = "x-vecdb-route"  # call metadata of a direct call: "<shard index>@<catalog epoch>"
STALE_ROUTE = "STALE_ROUTE"  # the reason of a shard's refusal
DIRECT_RPCS = frozenset({"Search", "Get", "Scroll", "Count"})
ROUTE_TTL_S = 30.0  # "no direct route" (several shards, unknown) is believed this long
UNREACHABLE_S = 30.0  # a shard address not reached directly is left alone this long
CONNECT_TIMEOUT_S = 1.0  # the first connection to a shard must be up within this
MISSING_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNIMPLEMENTED"})
MISS = object()  # `call`'s answer when the call must go through the router


@dataclass(frozen=True)
class Route:
    """Where one tenant's calls go directly."""

    shard: int
    address: str
    epoch: int

    def metadata(self, base: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return (*base, (ROUTE_KEY, f"{self.shard}@{self.epoch}"))


def route_key(rpc: str, req: Any) -> tuple[str, str] | None:
    """(collection, tenant) of a call that may go direct, else None."""
    if rpc not in DIRECT_RPCS or not req.tenant:
        return None
    if rpc == "Search" and len(req.tenants) > 0:
        return None
    return str(req.collection), str(req.tenant)


def finish(rpc: str, resp: Any) -> Any:
    """A direct answer as the router gives it: a lone shard's Search carries `shards` = 1."""
    if rpc == "Search":
        stats = pb.SearchStats()
        stats.CopyFrom(resp.stats)
        stats.extra["shards"] = 1.0
        resp.stats.CopyFrom(stats)
    return resp


@dataclass
class RouteTable:
    """The routes a client learnt and the shards it could not reach; no I/O."""

    enabled: bool = True  # False once the target answered GetRoute UNIMPLEMENTED (a node)
    routes: dict[tuple[str, str], tuple[Route | None, float]] = field(default_factory=dict)
    unreachable: dict[str, float] = field(default_factory=dict)  # address -> until
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("lookups", "direct", "stale", "unreachable"), 0)
    )

    def known(self, key: tuple[str, str]) -> tuple[bool, Route | None]:
        """(whether the cache answers, the route); a lapsed "no route" is not an answer."""
        entry = self.routes.get(key)
        if entry is None:
            return False, None
        route, until = entry
        if route is None and time.monotonic() > until:
            return False, None
        return True, route

    def learn(self, key: tuple[str, str], resp: pb.GetRouteResponse) -> Route | None:
        route = None
        if len(resp.shards) == 1 and len(resp.addresses) == 1:
            route = Route(int(resp.shards[0]), str(resp.addresses[0]), int(resp.epoch))
        self.routes[key] = (route, time.monotonic() + ROUTE_TTL_S)
        return route

    def lookup_failed(self, err: VecdbError) -> None:
        if err.code == "UNIMPLEMENTED":  # a plain node (or an older server): nothing to route
            self.enabled = False

    def reachable(self, address: str) -> bool:
        until = self.unreachable.get(address)
        return until is None or time.monotonic() > until

    def unreached(self, address: str) -> None:
        """`address` did not answer: skip it for UNREACHABLE_S."""
        self.counters["unreachable"] += 1
        self.unreachable[address] = time.monotonic() + UNREACHABLE_S

    def failed(self, key: tuple[str, str], route: Route, err: VecdbError) -> bool:
        """Note a failed direct call; True when it must go through the router instead."""
        if err.code == "FAILED_PRECONDITION" and err.reason == STALE_ROUTE:
            self.counters["stale"] += 1
            self.routes.pop(key, None)
            return True
        if err.code in MISSING_CODES:
            self.unreached(route.address)
            return True
        return False


def _connects(channel: grpc.Channel, wait: float) -> bool:
    """Whether `channel` is READY within `wait` seconds (a refused or unresolvable address
    answers at once: TRANSIENT_FAILURE ends the wait)."""
    settled = threading.Event()
    states: list[grpc.ChannelConnectivity] = []

    def seen(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            settled.set()

    channel.subscribe(seen, try_to_connect=True)
    try:
        settled.wait(wait)
    finally:
        channel.unsubscribe(seen)
    return bool(states) and states[-1] == grpc.ChannelConnectivity.READY


def _close_all(channels: list[grpc.Channel]) -> None:
    for channel in channels:
        channel.close()
    channels.clear()


class DirectRoutes:
    """The sync client's direct calls: channels to shards, created on first use."""

    def __init__(self, router: pb_grpc.VectorDBStub, make_channel: Any) -> None:
        self.table = RouteTable()
        self._router = router  # the target's stub (asked GetRoute)
        self._make_channel = make_channel  # address -> a grpc.Channel like the client's
        self._stubs: dict[str, pb_grpc.VectorDBStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        # Closed with the client, or at the latest at exit: a shard channel left open past
        # then (a client never closed) held the interpreter's exit in grpc's channel
        # finalizer, after `_connects` watched its connectivity
        self._close_channels = weakref.finalize(self, _close_all, self._channels)

    def call(self, rpc: str, req: Any, md: tuple[tuple[str, str], ...], deadline: float) -> Any:
        """The answer of `req` from the tenant's shard, or MISS (then call the router)."""
        key = route_key(rpc, req) if self.table.enabled else None
        if key is None:
            return MISS
        route = self._route(key, md, deadline)
        if route is None:
            return MISS
        stub = self._stub(route.address, deadline)
        if stub is None:
            return MISS
        try:
            resp = getattr(stub, rpc)(req, timeout=max(0.001, deadline - time.monotonic()),
                                      metadata=route.metadata(md))  # fmt: skip
        except grpc.RpcError as exc:
            err = status.error_of(exc)
            if self.table.failed(key, route, err) and time.monotonic() < deadline:
                return MISS
            raise err from None
        self.table.counters["direct"] += 1
        return finish(rpc, resp)

    def _route(
        self, key: tuple[str, str], md: tuple[tuple[str, str], ...], deadline: float
    ) -> Route | None:
        known, route = self.table.known(key)
        if known:
            return route
        self.table.counters["lookups"] += 1
        req = pb.GetRouteRequest(collection=key[0], tenant=key[1])
        try:
            resp = self._router.GetRoute(req, timeout=max(0.001, deadline - time.monotonic()),
                                         metadata=md)  # fmt: skip
        except grpc.RpcError as exc:
            self.table.lookup_failed(status.error_of(exc))
            return None
        return self.table.learn(key, resp)

    def _stub(self, address: str, deadline: float) -> pb_grpc.VectorDBStub | None:
        """The stub of a shard reached within CONNECT_TIMEOUT_S, else None (and the address
        is left alone a while)."""
        if not self.table.reachable(address):
            return None
        stub = self._stubs.get(address)
        if stub is not None:
            return stub
        with self._lock:
            if address in self._stubs:
                return self._stubs[address]
            channel = self._make_channel(address)
            wait = min(CONNECT_TIMEOUT_S, max(0.001, deadline - time.monotonic()))
            if not _connects(channel, wait):
                channel.close()
                self.table.unreached(address)
                return None
            self._channels.append(channel)
            stub = vectordb_stub(channel)
            self._stubs[address] = stub
            return stub

    def close(self) -> None:
        with self._lock:
            self._close_channels()
            self._stubs = {}
