"""The async client's unary calls, with client-side routing of tenant reads.

`unary_call` is `AsyncClient._call`: one deadline for the whole call, a tenant read sent
straight to the tenant's shard when `AsyncDirectRoutes` knows it lives on one (the rules and
the cache are `vecdb.client.routes`'s, shared with the sync client), otherwise the target,
with idempotent calls retried on UNAVAILABLE as `vecdb.client.channel.retry_wait` says.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio

from vecdb.client.channel import backoff_delays, retry_wait, vectordb_stub
from vecdb.client.routes import (
    CONNECT_TIMEOUT_S,
    MISS,
    Route,
    RouteTable,
    finish,
    route_key,
)
from vecdb.errors import VecdbError
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb

Metadata = tuple[tuple[str, str], ...]


async def unary_call(
    stub: Any, direct: AsyncDirectRoutes | None, md: Metadata, rpc: str, request: Any,
    idempotent: bool, budget: float, failed: VecdbError | None = None,
    retry_window: float | None = None,
) -> Any:  # fmt: skip
    """One unary call of the async client (see the module docstring). `failed`: the error
    of a first attempt made elsewhere (the search lane's stream), judged by the same rule;
    `retry_window`: how long an unreachable server is retried (the client's own timeout;
    None: the whole `budget`)."""
    deadline = time.monotonic() + budget
    retry_end = deadline if retry_window is None else min(deadline, time.monotonic() + retry_window)
    delays = backoff_delays() if idempotent else iter(())
    if failed is not None:
        delay = retry_wait(failed, delays, retry_end)
        if delay is None:
            raise failed
        await asyncio.sleep(delay)
    if direct is not None:
        answer = await direct.call(rpc, request, md, deadline)
        if answer is not MISS:
            return answer
    method = getattr(stub, rpc)
    while True:
        try:
            return await method(request, timeout=max(0.001, deadline - time.monotonic()),
                                metadata=md)  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            err = status.error_of(exc)
            delay = retry_wait(err, delays, retry_end)
            if delay is None:
                raise err from None
            await asyncio.sleep(delay)


async def _connects(channel: grpc.aio.Channel) -> bool:
    """Wait until `channel` is READY (True) or has failed to connect (False)."""
    state = channel.get_state(try_to_connect=True)
    while state not in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)
    return bool(state == grpc.ChannelConnectivity.READY)


class AsyncDirectRoutes:
    """`vecdb.client.routes.DirectRoutes` on `grpc.aio` channels."""

    def __init__(self, router: Any, make_channel: Any) -> None:
        self.table = RouteTable()
        self._router = router  # the target's stub (asked GetRoute)
        self._make_channel = make_channel  # address -> a grpc.aio.Channel like the client's
        self._stubs: dict[str, Any] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._lock = asyncio.Lock()

    async def call(self, rpc: str, req: Any, md: Metadata, deadline: float) -> Any:
        key = route_key(rpc, req) if self.table.enabled else None
        if key is None:
            return MISS
        route = await self._route(key, md, deadline)
        if route is None:
            return MISS
        stub = await self._stub(route.address, deadline)
        if stub is None:
            return MISS
        try:
            resp = await getattr(stub, rpc)(req, timeout=max(0.001, deadline - time.monotonic()),
                                            metadata=route.metadata(md))  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            err = status.error_of(exc)
            if self.table.failed(key, route, err) and time.monotonic() < deadline:
                return MISS
            raise err from None
        self.table.counters["direct"] += 1
        return finish(rpc, resp)

    async def _route(self, key: tuple[str, str], md: Metadata, deadline: float) -> Route | None:
        known, route = self.table.known(key)
        if known:
            return route
        self.table.counters["lookups"] += 1
        req = pb.GetRouteRequest(collection=key[0], tenant=key[1])
        try:
            resp = await self._router.GetRoute(
                req, timeout=max(0.001, deadline - time.monotonic()), metadata=md
            )
        except grpc.aio.AioRpcError as exc:
            self.table.lookup_failed(status.error_of(exc))
            return None
        return self.table.learn(key, resp)

    async def _stub(self, address: str, deadline: float) -> Any:
        if not self.table.reachable(address):
            return None
        stub = self._stubs.get(address)
        if stub is not None:
            return stub
        async with self._lock:
            if address in self._stubs:
                return self._stubs[address]
            channel = self._make_channel(address)
            wait = min(CONNECT_TIMEOUT_S, max(0.001, deadline - time.monotonic()))
            try:
                ready = await asyncio.wait_for(_connects(channel), wait)
            except TimeoutError:
                ready = False
            if not ready:
                await channel.close()
                self.table.unreached(address)
                return None
            self._channels.append(channel)
            stub = vectordb_stub(channel)
            self._stubs[address] = stub
            return stub

    async def close(self) -> None:
        async with self._lock:
            for channel in self._channels:
                await channel.close()
            self._channels, self._stubs = [], {}
