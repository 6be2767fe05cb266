"""The remote client: the SDK's methods over gRPC to a `vecdb serve` process.

`vecdb.connect("host:port", api_key=..., tls=..., timeout=...)` returns a `RemoteClient`. Every
call carries a deadline (optimize and snapshot create / restore: `long_call_timeout`);
idempotent calls (reads, upsert, delete, optimize, ...) are retried with jittered exponential
backoff on UNAVAILABLE until their deadline (waiting at least the server's RetryInfo);
every failure is raised as the same `vecdb.errors` class, with the same message, `field`,
`reason` and `retry_after`, that the embedded client raises (`vecdb.rpc.status` decodes the
rich details). Inputs are not re-validated here: `vecdb.client.requests` carries them as given
and the server's engine judges them. `upsert_stream` is the bulk-load path: sequence-numbered
batches on one stream, at most `credits` unacknowledged (backpressure), yielding one ack per
durable batch. Single searches ride one long-lived SearchStream when it is free
(`vecdb.client.search_lane`: the per-call set-up paid once; the server's error for a request
there is judged by the same retry rule, any other failure of the stream sends the search as a
Search call, so answers and errors are the same). A call too big for one gRPC message goes in
parts (`vecdb.client.splits`: requests above half of `max_message_bytes`, the server's
limit, by rows, documents or queries; answers the server refuses as too large by halves of
the ids or queries, or half the scroll limit). With `direct_routing=True`, a tenant's reads
go straight to its shard when a router says it lives on one (`vecdb.client.routes`). The
channel setup in `vecdb.client.channel` and the builders are shared with `vecdb.client.aio`.
Imports only `vecdb.rpc` for the wire, never the engine's state or server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from vecdb.client import prejudge, splits, upsert_streams
from vecdb.client import requests as rq
from vecdb.client import tenant_requests as tq
from vecdb.client.base import Client
from vecdb.client.channel import (
    DEFAULT_STREAM_WINDOW,
    DEFAULT_TIMEOUT,
    LIST_PAGE_SIZE,
    MAX_MESSAGE_BYTES,
    TLS,
    auth_metadata,
    backoff_delays,
    channel_credentials,
    channel_options,
    check_max_message_bytes,
    long_call_timeout,
    parse_target,
    retry_wait,
    vectordb_stub,
)
from vecdb.client.documents import RemoteDocuments
from vecdb.client.keys import ApiKeyMethods
from vecdb.client.plain_requests import AnySearch, plain_answer
from vecdb.client.routes import MISS, DirectRoutes
from vecdb.client.search_lane import SearchLane
from vecdb.client.snapshots import RemoteSnapshotMethods
from vecdb.client.tenants_remote import RemoteTenantMethods
from vecdb.client.upsert_streams import StreamAck
from vecdb.engine import validate as rules
from vecdb.errors import InvalidArgument, NotFound, Unavailable, VecdbError
from vecdb.rpc import convert, status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import CollectionInfo, Count, Id, Record, SearchResult

T = TypeVar("T")


def scroll_answer(resp: pb.ScrollResponse) -> tuple[list[Record], Id | None]:
    """The (records, next_offset) of a `ScrollResponse`."""
    nxt = convert.id_from_proto(resp.next_offset, "next_offset") if resp.HasField(
        "next_offset") else None  # fmt: skip
    return convert.points_from_proto(resp.points), nxt


class RemoteClient(
    RemoteTenantMethods, RemoteDocuments, RemoteSnapshotMethods, ApiKeyMethods, Client
):
    """A `Client` talking to a server; thread-safe (one channel, many concurrent calls)."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: Any = None,
        timeout: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        direct_routing: bool = False,
        search_stream: bool = True,
    ) -> None:
        self.target = target  # as given
        self._closed = False  # close() was called: calls raise Unavailable
        rules.check_flag("search_stream", search_stream)
        address, tls_ = parse_target(target, tls)
        self._timeout = timeout  # None: DEFAULT_TIMEOUT (long calls: `long_call_timeout`)
        # requests above half of it are split; lowered to a server's own limit when that
        # server refuses a request as larger (`vecdb.client.splits`)
        self._budget = splits.Budget(check_max_message_bytes(max_message_bytes))
        self._metadata = auth_metadata(api_key)
        opts = channel_options(tls_)
        if tls_ is None:
            self._channel = grpc.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.secure_channel(address, channel_credentials(tls_), options=opts)
        self._stub = vectordb_stub(self._channel)
        # Tenant reads sent straight to the tenant's one shard (`vecdb.client.routes`).
        self._direct = DirectRoutes(self._stub, lambda a: (
            grpc.insecure_channel(a, options=opts) if tls_ is None
            else grpc.secure_channel(a, channel_credentials(tls_), options=opts)
        )) if direct_routing else None  # fmt: skip
        # Single searches on one stream when free (`vecdb.client.search_lane`; issue 12),
        # unless asked not to (every search a Search call: balanced per call by an L7 proxy).
        self._lane = SearchLane(self._stub, self._metadata, enabled=search_stream)

    # -- plumbing --------------------------------------------------------------------------

    def _call(
        self, rpc: str, request: Any, *, idempotent: bool, timeout: float | None = None,
        deadline: float | None = None, failed: VecdbError | None = None,
    ) -> Any:  # fmt: skip
        """One call under the client's deadline and retry rule. `failed`: the error of a
        first attempt made elsewhere (the search lane's stream), judged by the same rule."""
        self._check_open()
        method = getattr(self._stub, rpc)
        everyday = self._timeout or DEFAULT_TIMEOUT
        if deadline is None:
            deadline = time.monotonic() + (timeout or everyday)
        # an unreachable server is waited for within the client's own timeout, even by a
        # call allowed longer to run (optimize: an hour, not an hour of retries)
        retry_end = min(deadline, time.monotonic() + everyday)
        delays = backoff_delays() if idempotent else iter(())
        if failed is not None:
            delay = retry_wait(failed, delays, retry_end)
            if delay is None:
                raise failed
            time.sleep(delay)
        if self._direct is not None:
            answer = self._direct.call(rpc, request, self._metadata, deadline)
            if answer is not MISS:
                return answer
        while True:
            try:
                return method(request, timeout=max(0.001, deadline - time.monotonic()),
                              metadata=self._metadata)  # fmt: skip
            except grpc.RpcError as exc:
                err = status.error_of(exc)
                delay = retry_wait(err, delays, retry_end)
                if delay is None:
                    raise err from None
                time.sleep(delay)

    def _judged(
        self,
        name: Any,
        make: Callable[[], T],
        before: prejudge.Before,
        tenant_args: tuple[Any, ...],
    ) -> T:
        """`make()` (a request builder); when it refuses an argument the wire cannot carry,
        the engine's checks that come before it and need the collection (and whether the
        tenants `tenant_args` name exist) run first, with what the server says of them
        (`vecdb.client.prejudge`)."""
        try:
            return make()
        except InvalidArgument as err:
            refused = err
        try:
            info = self.get_collection(name)  # NotFound (or the name's error) as embedded
            before(info, self._missing(name, tenant_args) if info.multi_tenant else ())
        except (NotFound, InvalidArgument):
            raise
        except VecdbError:  # the server cannot say: the argument's own error
            raise refused from None
        raise refused

    def _missing(self, name: Any, tenant_args: tuple[Any, ...]) -> set[str]:
        """Of the tenants `tenant_args` name, those the collection does not have (or is
        dropping)."""
        out = set()
        for n in prejudge.named(*tenant_args):
            try:
                if self.get_tenant(name, n).state != "active":
                    out.add(n)
            except NotFound:
                out.add(n)
            except InvalidArgument:  # not a valid name: judged as such before existence
                pass
        return out

    # -- collections -----------------------------------------------------------------------

    def create_collection(
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
        req = rq.create_request(name, dim, metric, id_type, index, index_params, kind,
                                multi_tenant, exist_ok)  # fmt: skip
        return convert.info_from_proto(self._call("CreateCollection", req, idempotent=False).info)

    def collection_exists(self, name: str) -> bool:
        req = pb.CollectionExistsRequest(name=rq.name_arg(name))
        return bool(self._call("CollectionExists", req, idempotent=True).exists)

    def list_collections(self) -> list[CollectionInfo]:
        out: list[CollectionInfo] = []
        token = ""
        while True:
            req = pb.ListCollectionsRequest(page_size=LIST_PAGE_SIZE, page_token=token)
            resp = self._call("ListCollections", req, idempotent=True)
            out.extend(convert.info_from_proto(i) for i in resp.collections)
            token = resp.next_page_token
            if not token:
                return out

    def get_collection(self, name: str) -> CollectionInfo:
        req = pb.GetCollectionRequest(name=rq.name_arg(name))
        return convert.info_from_proto(self._call("GetCollection", req, idempotent=True).info)

    def drop_collection(self, name: str) -> None:
        req = pb.DropCollectionRequest(name=rq.name_arg(name))
        self._call("DropCollection", req, idempotent=False)

    # -- points ----------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Any,
        vectors: Any,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        whole = self._judged(name, lambda: upsert_request(
            name, ids, vectors, payloads, tenant, grant_to
        ), lambda i, m: prejudge.upsert(i, m, ids, vectors, tenant, grant_to),
            (tenant, grant_to))  # fmt: skip
        answers = splits.sent(lambda r: self._call("Upsert", r, idempotent=True), whole,
                              splits.split_upsert, self._budget)  # fmt: skip
        return sum(int(a.upserted) for a in answers)

    def upsert_stream(
        self,
        name: str,
        batches: Iterable[tuple[Any, Any, Any]],
        *,
        window: int | None = None,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> Iterator[StreamAck]:
        """Stream `(ids, vectors, payloads)` batches; yield a `StreamAck` per durable batch.

        If `batches` raises, the batches before it are still sent and acknowledged, then the
        exception is re-raised; a batch the server rejects ends the stream with its error. A
        batch over half the message limit goes as several messages (`splits.StreamParts`).
        Past the server's bound on open streams, or once it ends an idle one, the batches go
        as Upsert calls (`vecdb.client.upsert_streams`).
        """
        self._check_open()

        def request(ids: Any, vectors: Any, payloads: Any) -> pb.UpsertRequest:
            return self._judged(name, lambda: upsert_request(
                name, ids, vectors, payloads, tenant, grant_to
            ), lambda i, m: prejudge.upsert(i, m, ids, vectors, tenant, grant_to),
            (tenant, grant_to))  # fmt: skip

        return upsert_streams.upsert_stream(
            lambda messages: self._stub.UpsertStream(messages, metadata=self._metadata),
            lambda req: sum(int(a.upserted) for a in splits.sent(
                lambda r: self._call("Upsert", r, idempotent=True), req, splits.split_upsert,
                self._budget)),
            (request(ids, vectors, payloads) for ids, vectors, payloads in batches),
            self._budget, window, DEFAULT_STREAM_WINDOW,
        )  # fmt: skip

    def get(
        self, name: str, ids: Any, *, with_vectors: bool = True, tenant: str | None = None
    ) -> list[Record]:
        req = self._judged(name, lambda: tq.scoped(
            rq.get_request(name, ids, with_vectors), tenant
        ), lambda i, m: prejudge.read(i, m, tenant, "get", with_vectors),
            (tenant,))  # fmt: skip
        answers = splits.fitted(lambda r: self._call("Get", r, idempotent=True), [req],
                                splits.halve_ids)  # fmt: skip
        return [rec for a in answers for rec in convert.points_from_proto(a.points)]

    def scroll(
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
        req = self._judged(name, lambda: tq.scoped(rq.scroll_request(
            name, filter, limit, offset, with_vectors, with_payload), tenant),
            lambda i, m: prejudge.read(i, m, tenant, "scroll", with_vectors),
            (tenant,))  # fmt: skip
        (page,) = splits.fitted(lambda r: self._call("Scroll", r, idempotent=True), [req],
                                splits.halve_scroll)  # fmt: skip
        return scroll_answer(page)

    def delete(
        self,
        name: str,
        ids: Any = None,
        *,
        filter: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> int:
        req = tq.scoped(rq.delete_request(name, ids, filter), tenant)
        return int(self._call("Delete", req, idempotent=True).deleted)

    def count(
        self,
        name: str,
        filter: dict[str, Any] | None = None,
        *,
        tenant: str | None = None,
        allow_partial: bool = False,
    ) -> Count:
        req = self._judged(name, lambda: tq.scoped(rq.count_request(name, filter), tenant),
                           lambda i, m: prejudge.read_scope(i, m, tenant),
            (tenant,))  # fmt: skip
        req.allow_partial = bool(allow_partial)
        resp = self._call("Count", req, idempotent=True)
        return Count(resp.count, resp.missing_shards)

    def set_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        req = self._judged(name, lambda: tq.scoped(rq.payload_request(name, ids, payload),
                           tenant), lambda i, m: prejudge.payload_update(i, m, ids, tenant),
            (tenant,))  # fmt: skip
        return int(self._call("SetPayload", req, idempotent=True).updated)

    def overwrite_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        req = self._judged(name, lambda: tq.scoped(rq.payload_request(name, ids, payload),
                           tenant), lambda i, m: prejudge.payload_update(i, m, ids, tenant),
            (tenant,))  # fmt: skip
        return int(self._call("OverwritePayload", req, idempotent=True).updated)

    def create_payload_index(self, name: str, key: str, type: str) -> None:
        req = rq.payload_index_request(name, key, type)
        self._call("CreatePayloadIndex", req, idempotent=True)

    def drop_payload_index(self, name: str, key: str) -> None:
        req = rq.drop_payload_index_request(name, key)
        self._call("DropPayloadIndex", req, idempotent=False)

    def optimize(self, name: str, wait: bool = True) -> None:
        req = rq.optimize_request(name, wait)
        self._call("Optimize", req, idempotent=True, timeout=long_call_timeout(self._timeout))

    # -- search ----------------------------------------------------------------------------

    def search(
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
        if type(with_stats) is not bool:
            rq.flags(("with_stats", with_stats))  # the engine judges it first of all
        req = self._judged(name, lambda: search_request(
            name, queries, k, filter, params, with_payload, with_vectors, tenant, tenants,
            with_stats), lambda i, m: prejudge.search(i, m, tenant, tenants),
            (tenant, tenants))  # fmt: skip
        req.allow_partial = bool(allow_partial)
        routed = tenant is not None or tenants is not None
        fit = (self._budget, splits.split_search)
        parts = splits.split_search(req, self._budget.max_bytes)
        if len(parts) == 1:  # the usual call, without the parts' machinery (issue 12)
            try:
                return self._search_part(req, routed, with_stats)
            except VecdbError as err:
                parts = splits.retry_parts(err, req, splits.halve_search, fit)
        return splits.merge_results(splits.fitted(
            lambda r: self._search_part(r, routed, with_stats), parts, splits.halve_search,
            fit))  # fmt: skip

    def _search_part(self, req: AnySearch, routed: bool, with_stats: bool) -> SearchResult:
        """One search request (a whole search, or a part of a split one) under its deadline:
        on the lane when free, unless `routed` (a tenant's search may go to its shard)."""
        self._check_open()
        deadline = time.monotonic() + (self._timeout or DEFAULT_TIMEOUT)
        got = None if routed else self._lane.search(req, deadline)
        resp = got if isinstance(got, pb.SearchResponse) else self._call(
            "Search", req, idempotent=True, deadline=deadline, failed=got)  # fmt: skip
        if not with_stats:
            plain = plain_answer(resp)
            if plain is not None:
                return plain
        return convert.result_from_proto(resp, with_stats=with_stats)

    # -- admin -----------------------------------------------------------------------------

    def stats(self, name: str | None = None) -> dict[str, Any]:
        req = rq.stats_request(name)
        resp = self._call("Stats", req, idempotent=True)
        out: dict[str, Any] = convert.loads_json(resp.stats, "stats")
        return out

    def _check_open(self) -> None:
        """Raise `Unavailable` once the client is closed (as an embedded client's closed
        database does; grpc's own is a bare ValueError)."""
        if self._closed:
            raise Unavailable("the client is closed")

    def close(self) -> None:
        self._closed = True
        self._lane.close()
        if self._direct is not None:
            self._direct.close()
        self._channel.close()


def upsert_request(
    name: Any, ids: Any, vectors: Any, payloads: Any, tenant: Any, grant_to: Any
) -> pb.UpsertRequest:
    """An Upsert with its tenant block (shared with the async client)."""
    req = rq.upsert_request(name, ids, vectors, payloads)
    req.tenant = tq.tenant_arg(tenant)
    req.grant_to.extend(tq.grant_to_arg(grant_to))
    return req


def search_request(
    name: Any, queries: Any, k: Any, filter: Any, params: Any, with_payload: Any,
    with_vectors: Any, tenant: Any, tenants: Any, with_stats: Any = False,
) -> AnySearch:  # fmt: skip
    """A Search with its tenant block and `with_stats` (shared with the async client)."""
    if type(with_stats) is not bool:
        rq.flags(("with_stats", with_stats))  # the engine judges it first of all
    req = rq.search_request(name, queries, k, filter, params, with_payload, with_vectors)
    if with_stats:
        req.options.with_stats = True
    if tenant is not None:
        req.tenant = tq.tenant_arg(tenant)
    if tenants is not None:
        req.tenants.extend(tq.tenants_arg(tenants))
    return req


__all__ = ["TLS", "RemoteClient", "StreamAck"]
