"""The asyncio client: `vecdb.AsyncClient`, the SDK's method names as coroutines.

For "host:port" targets it speaks gRPC through `grpc.aio` with the same request builders,
deadlines, retry rule (idempotent calls retried on UNAVAILABLE with jittered backoff) and
error classes as `vecdb.client.remote`. For a directory or ":memory:" it wraps the embedded
client and runs each call in a worker thread, so application code is the same in both modes.
Must not import the engine or the server (the embedded case goes through `vecdb.client`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from vecdb.client import _is_remote, connect
from vecdb.client.base import Client
from vecdb.client.channel import (
    DEFAULT_STREAM_WINDOW,
    DEFAULT_TIMEOUT,
    MAX_MESSAGE_BYTES,
    OPTIMIZE_TIMEOUT,
    auth_metadata,
    backoff_delays,
    channel_credentials,
    channel_options,
    parse_target,
)
from vecdb.client.remote import (
    StreamAck,
    build,
    create_request,
    resolve,
    search_options,
    search_request,
    stream_request,
    upsert_requests,
)
from vecdb.errors import InvalidArgument
from vecdb.rpc import convert
from vecdb.rpc import vecdb_pb2 as pb
from vecdb.rpc import vecdb_pb2_grpc as pb_grpc
from vecdb.types import CollectionInfo, Record, SearchResult

T = TypeVar("T")


class AsyncClient:
    """`async with vecdb.AsyncClient("localhost:7700") as client: await client.search(...)`."""

    def __init__(
        self,
        target: str = ":memory:",
        *,
        api_key: str | None = None,
        tls: Any = None,
        timeout: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target  # as given
        self._timeout = timeout  # None: DEFAULT_TIMEOUT (OPTIMIZE_TIMEOUT for optimize)
        self._max_bytes = max_message_bytes
        self._local: Client | None = None  # the embedded client, for non-remote targets
        self._channel: grpc.aio.Channel | None = None
        if not _is_remote(str(target)):
            self._local = connect(str(target))
            return
        address, tls_ = parse_target(target, tls)
        self._metadata = auth_metadata(api_key)
        opts = channel_options(tls_, max_message_bytes)
        if tls_ is None:
            self._channel = grpc.aio.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(address, channel_credentials(tls_), opts)
        self._stub = pb_grpc.VectorDBStub(self._channel)  # type: ignore[no-untyped-call]

    # -- plumbing --------------------------------------------------------------------------

    async def _local_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self._local is not None
        return await asyncio.to_thread(getattr(self._local, method), *args, **kwargs)

    async def _call(
        self, rpc: str, request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        method = getattr(self._stub, rpc)
        deadline = time.monotonic() + (timeout or self._timeout or DEFAULT_TIMEOUT)
        delays = backoff_delays() if idempotent else iter(())
        while True:
            try:
                return await method(request, timeout=max(0.001, deadline - time.monotonic()),
                                    metadata=self._metadata)  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    delay = next(delays, None)
                    if delay is not None and time.monotonic() + delay < deadline:
                        await asyncio.sleep(delay)
                        continue
                raise convert.error_from_status(code, exc.details()) from None

    async def _checked(self, name: str, make: Callable[[], T]) -> T:
        """See `RemoteClient._checked`."""
        try:
            return make()
        except (convert.Ragged, convert.UntypedIds) as exc:
            raise resolve(exc, await self.get_collection(name)) from None

    # -- collections -----------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        id_type: str = "int",
        index: str | None = None,
        index_params: dict[str, Any] | None = None,
        kind: str = "dense",
        multi_tenant: bool = False,
    ) -> CollectionInfo:
        """See `vecdb.Client.create_collection`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "create_collection", name, dim, metric, id_type=id_type, index=index,
                index_params=index_params, kind=kind, multi_tenant=multi_tenant,
            )  # fmt: skip
        req = create_request(name, dim, metric, id_type, index, index_params, kind, multi_tenant)
        resp = await self._call("CreateCollection", req, idempotent=False)
        return convert.info_from_proto(resp.info)

    async def list_collections(self) -> list[CollectionInfo]:
        """See `vecdb.Client.list_collections`."""
        if self._local is not None:
            return await self._local_call("list_collections")  # type: ignore[no-any-return]
        resp = await self._call("ListCollections", pb.ListCollectionsRequest(), idempotent=True)
        return [convert.info_from_proto(i) for i in resp.collections]

    async def get_collection(self, name: str) -> CollectionInfo:
        """See `vecdb.Client.get_collection`."""
        if self._local is not None:
            return await self._local_call("get_collection", name)  # type: ignore[no-any-return]
        req = build(lambda: pb.GetCollectionRequest(name=name))
        return convert.info_from_proto(
            (await self._call("GetCollection", req, idempotent=True)).info
        )

    async def drop_collection(self, name: str) -> None:
        """See `vecdb.Client.drop_collection`."""
        if self._local is not None:
            return await self._local_call("drop_collection", name)  # type: ignore[no-any-return]
        req = build(lambda: pb.DropCollectionRequest(name=name))
        await self._call("DropCollection", req, idempotent=False)

    # -- points ----------------------------------------------------------------------------

    async def upsert(self, name: str, ids: Any, vectors: Any, payloads: Any = None) -> int:
        """See `vecdb.Client.upsert`."""
        if self._local is not None:
            return await self._local_call("upsert", name, ids, vectors, payloads)  # type: ignore[no-any-return]
        total = 0
        reqs = await self._checked(
            name, lambda: upsert_requests(name, ids, vectors, payloads, self._max_bytes)
        )
        for req in reqs:
            total += int((await self._call("Upsert", req, idempotent=True)).upserted)
        return total

    async def upsert_stream(
        self, name: str, batches: Iterable[tuple[Any, Any, Any]], *, window: int | None = None
    ) -> AsyncIterator[StreamAck]:
        """See `RemoteClient.upsert_stream`; remote targets only."""
        if self._local is not None:
            for seq, (ids, vectors, payloads) in enumerate(batches):
                n = await self._local_call("upsert", name, ids, vectors, payloads)
                yield StreamAck(seq, int(n))
            return
        call = self._stub.UpsertStream(metadata=self._metadata)
        in_flight, limit = 0, window or DEFAULT_STREAM_WINDOW
        failure: BaseException | None = None
        source = enumerate(batches)
        try:
            while True:
                try:  # a bad input batch ends the stream after the good ones are acknowledged
                    seq, (ids, vectors, payloads) = next(source)
                    req = await self._checked(
                        name, functools.partial(stream_request, name, ids, vectors, payloads)
                    )
                except StopIteration:
                    break
                except Exception as exc:
                    failure = exc
                    break
                while in_flight >= limit:  # backpressure: wait for an ack before sending more
                    ack = await call.read()
                    if ack is grpc.aio.EOF:
                        break
                    in_flight -= 1
                    limit = limit if window or not ack.credits else ack.credits
                    yield StreamAck(int(ack.seq), int(ack.upserted))
                await call.write(pb.UpsertStreamRequest(seq=seq, batch=req))
                in_flight += 1
            await call.done_writing()
            while (ack := await call.read()) is not grpc.aio.EOF:
                yield StreamAck(int(ack.seq), int(ack.upserted))
        except grpc.aio.AioRpcError as exc:
            raise convert.error_from_status(exc.code(), exc.details()) from None
        finally:
            call.cancel()
        if failure is not None:
            raise failure

    async def get(self, name: str, ids: Any) -> list[Record]:
        """See `vecdb.Client.get`."""
        if self._local is not None:
            return await self._local_call("get", name, ids)  # type: ignore[no-any-return]
        ids_msg = await self._checked(name, lambda: convert.ids_to_proto(ids))
        req = build(lambda: pb.GetRequest(collection=name, ids=ids_msg))
        return convert.records_from_proto(await self._call("Get", req, idempotent=True))

    async def delete(self, name: str, ids: Any) -> int:
        """See `vecdb.Client.delete`."""
        if self._local is not None:
            return await self._local_call("delete", name, ids)  # type: ignore[no-any-return]
        ids_msg = await self._checked(name, lambda: convert.ids_to_proto(ids))
        req = build(lambda: pb.DeleteRequest(collection=name, ids=ids_msg))
        return int((await self._call("Delete", req, idempotent=True)).deleted)

    async def count(self, name: str) -> int:
        """See `vecdb.Client.count`."""
        if self._local is not None:
            return await self._local_call("count", name)  # type: ignore[no-any-return]
        req = build(lambda: pb.CountRequest(collection=name))
        return int((await self._call("Count", req, idempotent=True)).count)

    async def optimize(self, name: str, wait: bool = True) -> None:
        """See `vecdb.Client.optimize`."""
        if self._local is not None:
            return await self._local_call("optimize", name, wait=wait)  # type: ignore[no-any-return]
        if not isinstance(wait, bool):
            raise InvalidArgument(f"wait must be true or false, got {wait!r}")
        req = build(lambda: pb.OptimizeRequest(collection=name, no_wait=not wait))
        await self._call(
            "Optimize", req, idempotent=True, timeout=self._timeout or OPTIMIZE_TIMEOUT
        )

    # -- search and admin ------------------------------------------------------------------

    async def search(
        self,
        name: str,
        queries: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
    ) -> SearchResult:
        """See `vecdb.Client.search`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "search", name, queries, k, filter=filter, params=params,
                with_payload=with_payload,
            )  # fmt: skip
        opts = search_options(k, filter, params, with_payload)
        rpc, req = await self._checked(name, lambda: search_request(name, queries, opts))
        return convert.result_from_proto(await self._call(rpc, req, idempotent=True))

    async def stats(self, name: str | None = None) -> dict[str, Any]:
        """See `vecdb.Client.stats`."""
        if self._local is not None:
            return await self._local_call("stats", name)  # type: ignore[no-any-return]
        resp = await self._call("Stats", build(lambda: pb.StatsRequest(collection=name or "")),
                                idempotent=True)  # fmt: skip
        out: dict[str, Any] = convert.loads_json(resp.stats_json, "stats")
        return out

    async def close(self) -> None:
        """Close the channel (or the embedded database)."""
        if self._local is not None:
            await asyncio.to_thread(self._local.close)
        elif self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
