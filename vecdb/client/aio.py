"""The asyncio client: `vecdb.AsyncClient`, the SDK's method names as coroutines.

For "host:port" targets it speaks gRPC through `grpc.aio` with the same request builders,
deadlines, retry rule (idempotent calls retried on UNAVAILABLE with jittered backoff) and
error classes as `vecdb.client.remote` (`direct_routing=True`: tenant reads straight to the
tenant's shard, `vecdb.client.routes_aio`; single searches on one SearchStream when it is
free, `vecdb.client.search_lane`; calls too big for one message in parts,
`vecdb.client.splits`). For a directory or ":memory:" it wraps the embedded
client and runs each call in a worker thread, so application code is the same in both modes.
Must not import the engine or the server (the embedded case goes through `vecdb.client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from vecdb.client import connect, prejudge, resolve, splits, upsert_streams
from vecdb.client import requests as rq
from vecdb.client import tenant_requests as tq
from vecdb.client.base import Client
from vecdb.client.channel import (
    DEFAULT_STREAM_WINDOW,
    DEFAULT_TIMEOUT,
    LIST_PAGE_SIZE,
    MAX_MESSAGE_BYTES,
    auth_metadata,
    channel_credentials,
    channel_options,
    check_max_message_bytes,
    long_call_timeout,
    parse_target,
    vectordb_stub,
)
from vecdb.client.documents import AsyncDocuments
from vecdb.client.keys import AsyncApiKeyMethods
from vecdb.client.plain_requests import AnySearch, plain_answer
from vecdb.client.remote import scroll_answer, search_request
from vecdb.client.remote import upsert_request as tenant_upsert
from vecdb.client.routes_aio import AsyncDirectRoutes, unary_call
from vecdb.client.search_lane import AsyncSearchLane
from vecdb.client.snapshots import AsyncSnapshotMethods
from vecdb.client.tenants_aio import AsyncTenantMethods
from vecdb.client.upsert_streams import StreamAck
from vecdb.engine import validate as rules
from vecdb.errors import InvalidArgument, NotFound, Unavailable, VecdbError
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import CollectionInfo, Count, Id, Record, SearchResult

T = TypeVar("T")


class _Refused(Exception):
    """A stream batch its builder refused, carried out of the (synchronous) batch iterator
    to where the collection can be asked for (`AsyncClient._refusal`)."""

    def __init__(self, error: InvalidArgument, before: prejudge.Before) -> None:
        super().__init__(error.message)
        self.error, self.before = error, before


class AsyncClient(AsyncTenantMethods, AsyncDocuments, AsyncSnapshotMethods, AsyncApiKeyMethods):
    """`async with vecdb.AsyncClient("localhost:7700") as client: await client.search(...)`."""

    def __init__(
        self,
        target: str | os.PathLike[str] = ":memory:",
        *,
        api_key: str | None = None,
        tls: Any = None,
        timeout: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        direct_routing: bool = False,
        search_stream: bool = True,
    ) -> None:
        self.target = target  # as given
        rules.check_flag("search_stream", search_stream)
        self._timeout = timeout  # None: DEFAULT_TIMEOUT (long calls: `long_call_timeout`)
        self._budget = splits.Budget(check_max_message_bytes(max_message_bytes))  # see RemoteClient
        self._local: Client | None = None  # the embedded client, for non-remote targets
        self._channel: grpc.aio.Channel | None = None
        self._closed = False  # close() was called: calls raise Unavailable, as embedded
        where = resolve(target)  # the rule of `vecdb.connect`: a URL is normalised
        if where.kind != "remote":
            # direct_routing=True or search_stream=False: refused, as `connect` refuses them
            self._local = connect(target, direct_routing=direct_routing,
                                  search_stream=search_stream)  # fmt: skip
            return
        address, tls_ = parse_target(where.where, tls)
        self._metadata = auth_metadata(api_key)
        opts = channel_options(tls_)
        if tls_ is None:
            self._channel = grpc.aio.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(address, channel_credentials(tls_), opts)
        self._stub = vectordb_stub(self._channel)
        self._direct = AsyncDirectRoutes(self._stub, lambda a: (  # see vecdb.client.routes
            grpc.aio.insecure_channel(a, options=opts) if tls_ is None
            else grpc.aio.secure_channel(a, channel_credentials(tls_), opts)
        )) if direct_routing else None  # fmt: skip
        # Single searches on one stream when free (`vecdb.client.search_lane`; issue 12),
        # unless asked not to (see `RemoteClient`).
        self._search_stream = search_stream
        self._lane = AsyncSearchLane(self._stub, self._metadata, enabled=search_stream)

    # -- plumbing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        """Raise `Unavailable` once the client is closed (the class an embedded client's
        closed database raises; grpc.aio's own UsageError is no vecdb error)."""
        if self._closed:
            raise Unavailable("the client is closed")

    async def _local_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self._local is not None
        return await asyncio.to_thread(getattr(self._local, method), *args, **kwargs)

    async def _call(
        self, rpc: str, request: Any, *, idempotent: bool, timeout: float | None = None,
        failed: VecdbError | None = None,
    ) -> Any:  # fmt: skip
        self._check_open()
        everyday = self._timeout or DEFAULT_TIMEOUT
        return await unary_call(self._stub, self._direct, self._metadata, rpc, request,
                                idempotent, timeout or everyday, failed, everyday)  # fmt: skip

    async def _judged(
        self,
        name: Any,
        make: Callable[[], T],
        before: prejudge.Before,
        tenant_args: tuple[Any, ...],
    ) -> T:
        """`RemoteClient._judged`: the engine's earlier checks that need the collection run
        first when a request builder refuses an argument the wire cannot carry."""
        try:
            return make()
        except InvalidArgument as err:
            refused = err
        raise await self._refusal(name, refused, before, tenant_args)

    async def _refusal(
        self,
        name: Any,
        refused: InvalidArgument,
        before: prejudge.Before,
        tenant_args: tuple[Any, ...],
    ) -> VecdbError:
        """The error of a call whose builder refused `refused`: the engine's earlier check
        that fails, with the server's description of the collection, else `refused`."""
        try:
            info = await self.get_collection(name)
            before(info, await self._missing(name, tenant_args) if info.multi_tenant else ())
        except (NotFound, InvalidArgument) as err:
            return err
        except VecdbError:
            pass  # the server cannot say: the argument's own error
        return refused

    async def _missing(self, name: Any, tenant_args: tuple[Any, ...]) -> set[str]:
        """Of the tenants `tenant_args` name, those the collection does not have (or is
        dropping)."""
        out = set()
        for n in prejudge.named(*tenant_args):
            try:
                if (await self.get_tenant(name, n)).state != "active":
                    out.add(n)
            except NotFound:
                out.add(n)
            except InvalidArgument:
                pass
        return out

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
        exist_ok: bool = False,
    ) -> CollectionInfo:
        """See `vecdb.Client.create_collection`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "create_collection", name, dim, metric, id_type=id_type, index=index,
                index_params=index_params, kind=kind, multi_tenant=multi_tenant,
                exist_ok=exist_ok,
            )  # fmt: skip
        req = rq.create_request(name, dim, metric, id_type, index, index_params, kind,
                                multi_tenant, exist_ok)  # fmt: skip
        resp = await self._call("CreateCollection", req, idempotent=False)
        return convert.info_from_proto(resp.info)

    async def collection_exists(self, name: str) -> bool:
        """See `vecdb.Client.collection_exists`."""
        if self._local is not None:
            return await self._local_call("collection_exists", name)  # type: ignore[no-any-return]
        req = pb.CollectionExistsRequest(name=rq.name_arg(name))
        return bool((await self._call("CollectionExists", req, idempotent=True)).exists)

    async def list_collections(self) -> list[CollectionInfo]:
        """See `vecdb.Client.list_collections`."""
        if self._local is not None:
            return await self._local_call("list_collections")  # type: ignore[no-any-return]
        out: list[CollectionInfo] = []
        token = ""
        while True:
            req = pb.ListCollectionsRequest(page_size=LIST_PAGE_SIZE, page_token=token)
            resp = await self._call("ListCollections", req, idempotent=True)
            out.extend(convert.info_from_proto(i) for i in resp.collections)
            token = resp.next_page_token
            if not token:
                return out

    async def get_collection(self, name: str) -> CollectionInfo:
        """See `vecdb.Client.get_collection`."""
        if self._local is not None:
            return await self._local_call("get_collection", name)  # type: ignore[no-any-return]
        req = pb.GetCollectionRequest(name=rq.name_arg(name))
        return convert.info_from_proto(
            (await self._call("GetCollection", req, idempotent=True)).info
        )

    async def drop_collection(self, name: str) -> None:
        """See `vecdb.Client.drop_collection`."""
        if self._local is not None:
            return await self._local_call("drop_collection", name)  # type: ignore[no-any-return]
        req = pb.DropCollectionRequest(name=rq.name_arg(name))
        await self._call("DropCollection", req, idempotent=False)

    # -- points ----------------------------------------------------------------------------

    async def upsert(
        self, name: str, ids: Any, vectors: Any, payloads: Any = None, *,
        tenant: str | None = None, grant_to: list[str] | None = None,
    ) -> int:  # fmt: skip
        """See `vecdb.Client.upsert`."""
        tn = {"tenant": tenant, "grant_to": grant_to}
        if self._local is not None:
            return await self._local_call("upsert", name, ids, vectors, payloads, **tn)  # type: ignore[no-any-return]
        whole = await self._judged(name, lambda: tenant_upsert(
            name, ids, vectors, payloads, tenant, grant_to
        ), lambda i, m: prejudge.upsert(i, m, ids, vectors, tenant, grant_to),
            (tenant, grant_to))  # fmt: skip
        answers = await splits.asent(lambda r: self._call("Upsert", r, idempotent=True),
                                     whole, splits.split_upsert, self._budget)  # fmt: skip
        return sum(int(a.upserted) for a in answers)

    async def upsert_stream(
        self, name: str, batches: Iterable[tuple[Any, Any, Any]], *, window: int | None = None,
        tenant: str | None = None, grant_to: list[str] | None = None,
    ) -> AsyncIterator[StreamAck]:  # fmt: skip
        """See `RemoteClient.upsert_stream`."""
        if self._local is not None:
            for seq, (ids, vectors, payloads) in enumerate(batches):
                n = await self._local_call("upsert", name, ids, vectors, payloads,
                                           tenant=tenant, grant_to=grant_to)  # fmt: skip
                yield StreamAck(seq, int(n))
            return
        self._check_open()

        async def upsert(req: pb.UpsertRequest) -> int:
            answers = await splits.asent(lambda r: self._call("Upsert", r, idempotent=True),
                                         req, splits.split_upsert, self._budget)  # fmt: skip
            return sum(int(a.upserted) for a in answers)

        def request(ids: Any, vectors: Any, payloads: Any) -> pb.UpsertRequest:
            try:
                return tenant_upsert(name, ids, vectors, payloads, tenant, grant_to)
            except InvalidArgument as err:  # judged below, where the server can be asked
                raise _Refused(err, lambda i, m: prejudge.upsert(
                    i, m, ids, vectors, tenant, grant_to)) from None  # fmt: skip

        acks = upsert_streams.aupsert_stream(
            self._stub.UpsertStream(metadata=self._metadata), upsert,
            (request(ids, vectors, payloads) for ids, vectors, payloads in batches),
            self._budget, window, DEFAULT_STREAM_WINDOW,
        )  # fmt: skip
        async with contextlib.aclosing(acks):  # closed with this generator, not when collected
            try:
                async for ack in acks:
                    yield ack
            except _Refused as r:  # after the batches before it were acknowledged
                raise await self._refusal(name, r.error, r.before,
                                          (tenant, grant_to)) from None  # fmt: skip

    async def get(
        self, name: str, ids: Any, *, with_vectors: bool = True, tenant: str | None = None
    ) -> list[Record]:
        """See `vecdb.Client.get`."""
        if self._local is not None:
            return await self._local_call("get", name, ids, with_vectors=with_vectors,  # type: ignore[no-any-return]
                                          tenant=tenant)  # fmt: skip
        req = await self._judged(name, lambda: tq.scoped(
            rq.get_request(name, ids, with_vectors), tenant
        ), lambda i, m: prejudge.read(i, m, tenant, "get", with_vectors),
            (tenant,))  # fmt: skip
        answers = await splits.afitted(
            lambda r: self._call("Get", r, idempotent=True), [req], splits.halve_ids
        )
        return [rec for a in answers for rec in convert.points_from_proto(a.points)]

    async def scroll(
        self,
        name: str,
        *,
        filter: dict[str, Any] | None = None,
        limit: int = 1000,
        offset: Id | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> tuple[list[Record], Id | None]:
        """See `vecdb.Client.scroll`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "scroll", name, filter=filter, limit=limit, offset=offset,
                with_vectors=with_vectors, with_payload=with_payload, tenant=tenant,
            )  # fmt: skip
        req = await self._judged(name, lambda: tq.scoped(rq.scroll_request(
            name, filter, limit, offset, with_vectors, with_payload), tenant),
            lambda i, m: prejudge.read(i, m, tenant, "scroll", with_vectors),
            (tenant,))  # fmt: skip
        (page,) = await splits.afitted(
            lambda r: self._call("Scroll", r, idempotent=True), [req], splits.halve_scroll
        )
        return scroll_answer(page)

    async def delete(
        self, name: str, ids: Any = None, *, filter: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> int:  # fmt: skip
        """See `vecdb.Client.delete`."""
        if self._local is not None:
            return await self._local_call("delete", name, ids, filter=filter, tenant=tenant)  # type: ignore[no-any-return]
        req = tq.scoped(rq.delete_request(name, ids, filter), tenant)
        return int((await self._call("Delete", req, idempotent=True)).deleted)

    async def count(
        self,
        name: str,
        filter: dict[str, Any] | None = None,
        *,
        tenant: str | None = None,
        allow_partial: bool = False,
    ) -> Count:
        """See `vecdb.Client.count`."""
        if self._local is not None:
            return await self._local_call("count", name, filter, tenant=tenant)  # type: ignore[no-any-return]
        req = await self._judged(name, lambda: tq.scoped(rq.count_request(name, filter), tenant),
                                 lambda i, m: prejudge.read_scope(i, m, tenant),
            (tenant,))  # fmt: skip
        req.allow_partial = bool(allow_partial)
        resp = await self._call("Count", req, idempotent=True)
        return Count(resp.count, resp.missing_shards)

    async def set_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        """See `vecdb.Client.set_payload`."""
        if self._local is not None:
            return await self._local_call("set_payload", name, ids, payload, tenant=tenant)  # type: ignore[no-any-return]
        req = await self._judged(name, lambda: tq.scoped(
            rq.payload_request(name, ids, payload), tenant
        ), lambda i, m: prejudge.payload_update(i, m, ids, tenant),
            (tenant,))  # fmt: skip
        return int((await self._call("SetPayload", req, idempotent=True)).updated)

    async def overwrite_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        """See `vecdb.Client.overwrite_payload`."""
        if self._local is not None:
            return await self._local_call("overwrite_payload", name, ids, payload, tenant=tenant)  # type: ignore[no-any-return]
        req = await self._judged(name, lambda: tq.scoped(
            rq.payload_request(name, ids, payload), tenant
        ), lambda i, m: prejudge.payload_update(i, m, ids, tenant),
            (tenant,))  # fmt: skip
        return int((await self._call("OverwritePayload", req, idempotent=True)).updated)

    async def create_payload_index(self, name: str, key: str, type: str) -> None:
        """See `vecdb.Client.create_payload_index`."""
        if self._local is not None:
            return await self._local_call("create_payload_index", name, key, type)  # type: ignore[no-any-return]
        req = rq.payload_index_request(name, key, type)
        await self._call("CreatePayloadIndex", req, idempotent=True)

    async def drop_payload_index(self, name: str, key: str) -> None:
        """See `vecdb.Client.drop_payload_index`."""
        if self._local is not None:
            return await self._local_call("drop_payload_index", name, key)  # type: ignore[no-any-return]
        req = rq.drop_payload_index_request(name, key)
        await self._call("DropPayloadIndex", req, idempotent=False)

    async def optimize(self, name: str, wait: bool = True) -> None:
        """See `vecdb.Client.optimize`."""
        if self._local is not None:
            return await self._local_call("optimize", name, wait=wait)  # type: ignore[no-any-return]
        req = rq.optimize_request(name, wait)
        await self._call("Optimize", req, idempotent=True, timeout=long_call_timeout(self._timeout))

    # -- search and admin -------------------------------------------------------

    async def search(
        self,
        name: str,
        queries: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        with_vectors: bool = False,
        tenant: str | None = None,
        tenants: list[str] | None = None,
        with_stats: bool = False,
        allow_partial: bool = False,
    ) -> SearchResult:
        """See `vecdb.Client.search`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "search", name, queries, k, filter=filter, params=params,
                with_payload=with_payload, with_vectors=with_vectors, tenant=tenant,
                tenants=tenants, with_stats=with_stats, allow_partial=allow_partial,
            )  # fmt: skip
        if type(with_stats) is not bool:
            rq.flags(("with_stats", with_stats))  # the engine judges it first of all
        req = await self._judged(name, lambda: search_request(
            name, queries, k, filter, params, with_payload, with_vectors, tenant, tenants,
            with_stats), lambda i, m: prejudge.search(i, m, tenant, tenants),
            (tenant, tenants))  # fmt: skip
        req.allow_partial = bool(allow_partial)
        routed = tenant is not None or tenants is not None
        fit = (self._budget, splits.split_search)
        parts = splits.split_search(req, self._budget.max_bytes)
        if len(parts) == 1:  # the usual call, without the parts' machinery (issue 12)
            try:
                return await self._search_part(req, routed, with_stats)
            except VecdbError as err:
                parts = splits.retry_parts(err, req, splits.halve_search, fit)
        return splits.merge_results(await splits.afitted(
            lambda r: self._search_part(r, routed, with_stats), parts, splits.halve_search,
            fit))  # fmt: skip

    async def _search_part(self, req: AnySearch, routed: bool, with_stats: bool) -> SearchResult:
        """See `RemoteClient._search_part`."""
        self._check_open()
        deadline = time.monotonic() + (self._timeout or DEFAULT_TIMEOUT)
        got = None if routed else await self._on_lane(req, deadline)
        resp = got if isinstance(got, pb.SearchResponse) else await self._call(
            "Search", req, idempotent=True, timeout=max(0.001, deadline - time.monotonic()),
            failed=got)  # fmt: skip
        if not with_stats:
            plain = plain_answer(resp)
            if plain is not None:
                return plain
        return convert.result_from_proto(resp, with_stats=with_stats)

    async def _on_lane(
        self, req: AnySearch, deadline: float
    ) -> pb.SearchResponse | VecdbError | None:
        """The lane's answer to `req`. A search cancelled while on the lane (`task.cancel()`,
        `asyncio.wait_for` around it) leaves the lane's stream cancelled by grpc.aio, and
        the lane would write the next search into it and fail it (InvalidStateError, every
        search until the stream idled out): the lane is closed and a new one takes its place."""
        lane = self._lane
        try:
            return await lane.search(req, deadline)
        except asyncio.CancelledError:
            if self._lane is lane and not self._closed:
                lane.close()
                self._lane = AsyncSearchLane(self._stub, self._metadata,
                                             enabled=self._search_stream)  # fmt: skip
            raise

    async def stats(self, name: str | None = None) -> dict[str, Any]:
        """See `vecdb.Client.stats`."""
        if self._local is not None:
            return await self._local_call("stats", name)  # type: ignore[no-any-return]
        req = rq.stats_request(name)
        resp = await self._call("Stats", req, idempotent=True)
        out: dict[str, Any] = convert.loads_json(resp.stats, "stats")
        return out

    async def close(self) -> None:
        """Close the channel (or the embedded database)."""
        self._closed = True
        if self._local is not None:
            await asyncio.to_thread(self._local.close)
        elif self._channel is not None:
            self._lane.close()
            if self._direct is not None:
                await self._direct.close()
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
