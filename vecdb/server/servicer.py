"""The `vecdb.v1.VectorDB` servicer: decode each request, call the engine, encode the answer.

One method per RPC, each a few lines: all decoding and encoding goes through
`vecdb.rpc.convert` (but for `plain_result`, the same Search answer built with fewer calls for
the common case, issue 12), all validation happens in the engine (`vecdb.engine.validate`, which
raises `VecdbError` naming the field), and all error-to-status mapping, auth, admission and
metrics live in `vecdb.server.interceptors`. Inputs reach the engine as the client gave them
(ragged rows, ids of any kind, JSON null payloads as `validate.JSON_NULL`) so that its one
validator produces the same error as an embedded call. Optional engine arguments are passed
only when the request sets them, so the defaults stay the engine's. The servicer holds the
`Database` but never opens or closes it (`vecdb.server.app` does). `UpsertStream`
acknowledges each batch after the engine returned, i.e. once it is durable.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from vecdb import config
from vecdb.engine.validate import JSON_NULL
from vecdb.errors import InvalidArgument, Unimplemented, VecdbError
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.admin_rpcs import ApiKeyRpcs
from vecdb.server.answer_size import hits_too_large
from vecdb.server.document_rpcs import DocumentRPCs
from vecdb.server.tenant_rpcs import TenantRpcs
from vecdb.types import CollectionKind, IdType, Metric, SearchResult

if TYPE_CHECKING:
    from vecdb.engine import Database
    from vecdb.server.metrics import ServerMetrics

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000  # ListCollections


def _opt_json(text: str, field: str, kwargs: dict[str, Any]) -> None:
    """Set kwargs[field] to the parsed JSON text, if the request carries one."""
    if text:
        kwargs[field] = convert.loads_json(text, field)


_FLAT = (str, int, float, bool, type(None))  # values a cached params object may hold
_PARAMS: dict[str, dict[str, Any]] = {}  # params text -> its flat object (see `_params`)
MAX_PARAMS_TEXTS = 256  # cached params texts; the cache starts over past this


def _params(text: str, kwargs: dict[str, Any]) -> None:
    """`_opt_json(text, "params", kwargs)`, the usual flat object parsed once per text
    (an app sends the same params on every search; issue 12): each call gets its own copy,
    so nothing the engine does to it reaches the next call."""
    if not text:
        return
    cached = _PARAMS.get(text)
    if cached is None:
        value = convert.loads_json(text, "params")
        if type(value) is not dict or not all(type(v) in _FLAT for v in value.values()):
            kwargs["params"] = value
            return
        if len(_PARAMS) >= MAX_PARAMS_TEXTS:
            _PARAMS.clear()
        cached = _PARAMS[text] = value
    kwargs["params"] = dict(cached)


class VectorDBServicer(TenantRpcs, DocumentRPCs, ApiKeyRpcs, pb_grpc.VectorDBServicer):
    """Maps each RPC onto the `Database` method of the same name."""

    def __init__(
        self, db: Database, metrics: ServerMetrics, stream_window: int,
        max_message_bytes: int = config.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:  # fmt: skip
        # The engine (thread-safe), typed Any: several of its methods (scroll, payload indexes,
        # snapshots, exist_ok / with_vectors / filter arguments) are the issue-9 engine API.
        self._db: Any = db
        self._metrics = metrics  # for counting written vectors
        self._window = stream_window  # credits advertised to streaming clients
        self._max_bytes = max_message_bytes  # a search whose hits cannot fit is not run

    # -- collections -----------------------------------------------------------------------

    def CreateCollection(
        self, req: pb.CreateCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateCollectionResponse:
        metric = convert.enum_from_proto(convert.METRICS, req.metric, "metric", Metric.COSINE)
        kwargs: dict[str, Any] = {
            "id_type": convert.enum_from_proto(convert.ID_TYPES, req.id_type, "id_type",
                                               IdType.INT).value,
            "kind": convert.enum_from_proto(convert.COLLECTION_KINDS, req.kind, "kind",
                                            CollectionKind.DENSE).value,
            "multi_tenant": req.multi_tenant,
            "index_params": convert.optional_from_json(req.index_params, "index_params"),
        }  # fmt: skip
        if req.index:
            kwargs["index"] = convert.enum_from_proto(convert.INDEX_KINDS, req.index, "index").value
        if req.exist_ok:
            kwargs["exist_ok"] = True
        info = self._db.create_collection(req.name, req.dim, metric.value, **kwargs)
        return pb.CreateCollectionResponse(info=convert.info_to_proto(info))

    def CollectionExists(
        self, req: pb.CollectionExistsRequest, ctx: grpc.ServicerContext
    ) -> pb.CollectionExistsResponse:
        return pb.CollectionExistsResponse(exists=bool(self._db.collection_exists(req.name)))

    def ListCollections(
        self, req: pb.ListCollectionsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListCollectionsResponse:
        size = list_page_size(req.page_size)
        after = _page_after(req.page_token)
        infos = [i for i in self._db.list_collections() if after is None or i.name > after]
        page = infos[:size]
        token = _page_token(page[-1].name) if len(infos) > size else ""
        return pb.ListCollectionsResponse(
            collections=[convert.info_to_proto(i) for i in page], next_page_token=token
        )

    def GetCollection(
        self, req: pb.GetCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.GetCollectionResponse:
        return pb.GetCollectionResponse(
            info=convert.info_to_proto(self._db.get_collection(req.name))
        )

    def DropCollection(
        self, req: pb.DropCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.DropCollectionResponse:
        self._db.drop_collection(req.name)
        return pb.DropCollectionResponse()

    # -- points ----------------------------------------------------------------------------

    def _upsert(self, req: pb.UpsertRequest) -> int:
        n = self._db.upsert(
            req.collection,
            convert.ids_from_proto(req.ids),
            convert.vectors_from_proto(req.vectors),
            convert.payloads_from_proto(req.payloads, JSON_NULL),
            **convert.tenant_args(req.tenant, grant_to=req.grant_to),
        )
        self._metrics.vectors_written.inc(n)
        return int(n)

    def Upsert(self, req: pb.UpsertRequest, ctx: grpc.ServicerContext) -> pb.UpsertResponse:
        return pb.UpsertResponse(upserted=self._upsert(req))

    def UpsertStream(
        self, requests: Iterator[pb.UpsertStreamRequest], ctx: grpc.ServicerContext
    ) -> Iterator[pb.UpsertStreamAck]:
        return stream_upserts(requests, self._upsert, self._window)

    def Get(self, req: pb.GetRequest, ctx: grpc.ServicerContext) -> pb.GetResponse:
        ids = convert.ids_from_proto(req.ids)
        tn = convert.tenant_args(req.tenant)
        if req.HasField("with_vectors") and not req.with_vectors:
            records = self._db.get(req.collection, ids, with_vectors=False, **tn)
        else:
            records = self._db.get(req.collection, ids, **tn)
        return pb.GetResponse(points=convert.points_to_proto(records))

    def Scroll(self, req: pb.ScrollRequest, ctx: grpc.ServicerContext) -> pb.ScrollResponse:
        kwargs: dict[str, Any] = {"with_vectors": req.with_vectors}
        kwargs.update(convert.tenant_args(req.tenant))
        _opt_json(req.filter, "filter", kwargs)
        if req.HasField("limit"):
            kwargs["limit"] = req.limit
        if req.HasField("offset"):
            kwargs["offset"] = convert.id_from_proto(req.offset, "offset")
        if req.HasField("with_payload"):
            kwargs["with_payload"] = req.with_payload
        records, next_offset = self._db.scroll(req.collection, **kwargs)
        resp = pb.ScrollResponse(points=convert.points_to_proto(records))
        if next_offset is not None:
            resp.next_offset.CopyFrom(convert.id_to_proto(next_offset))
        return resp

    def Delete(self, req: pb.DeleteRequest, ctx: grpc.ServicerContext) -> pb.DeleteResponse:
        kwargs: dict[str, Any] = convert.tenant_args(req.tenant)
        _opt_json(req.filter, "filter", kwargs)
        ids = convert.ids_from_proto(req.ids) if req.HasField("ids") else None
        if kwargs:
            n = self._db.delete(req.collection, ids, **kwargs)
        else:
            n = self._db.delete(req.collection, ids)
        return pb.DeleteResponse(deleted=n)

    def Count(self, req: pb.CountRequest, ctx: grpc.ServicerContext) -> pb.CountResponse:
        kwargs: dict[str, Any] = convert.tenant_args(req.tenant)
        _opt_json(req.filter, "filter", kwargs)
        return pb.CountResponse(count=self._db.count(req.collection, **kwargs))

    def _payload_call(self, method: str, req: pb.SetPayloadRequest) -> pb.SetPayloadResponse:
        ids = convert.ids_from_proto(req.ids)
        payload = convert.loads_json(req.payload or "{}", "payload", JSON_NULL)
        return pb.SetPayloadResponse(
            updated=getattr(self._db, method)(
                req.collection, ids, payload, **convert.tenant_args(req.tenant)
            )
        )

    def SetPayload(
        self, req: pb.SetPayloadRequest, ctx: grpc.ServicerContext
    ) -> pb.SetPayloadResponse:
        return self._payload_call("set_payload", req)

    def OverwritePayload(
        self, req: pb.SetPayloadRequest, ctx: grpc.ServicerContext
    ) -> pb.SetPayloadResponse:
        return self._payload_call("overwrite_payload", req)

    def CreatePayloadIndex(
        self, req: pb.CreatePayloadIndexRequest, ctx: grpc.ServicerContext
    ) -> pb.CreatePayloadIndexResponse:
        self._db.create_payload_index(req.collection, req.key, req.type)
        return pb.CreatePayloadIndexResponse()

    def DropPayloadIndex(
        self, req: pb.DropPayloadIndexRequest, ctx: grpc.ServicerContext
    ) -> pb.DropPayloadIndexResponse:
        self._db.drop_payload_index(req.collection, req.key)
        return pb.DropPayloadIndexResponse()

    def Optimize(self, req: pb.OptimizeRequest, ctx: grpc.ServicerContext) -> pb.OptimizeResponse:
        # Waits no longer than its caller: a call whose deadline passed (a client that gave
        # up, or retries) held a handler thread until the job ended, and enough of them took
        # every thread for the length of a build.
        self._db.optimize(req.collection, wait=not req.no_wait, timeout=ctx.time_remaining())
        return pb.OptimizeResponse()

    # -- search ----------------------------------------------------------------------------

    def Search(self, req: pb.SearchRequest, ctx: grpc.ServicerContext) -> pb.SearchResponse:
        opts = req.options
        kwargs: dict[str, Any] = {"with_payload": opts.with_payload}
        if req.tenant or req.tenants:
            kwargs.update(convert.tenant_args(req.tenant, req.tenants))
            kwargs["with_stats"] = True  # the per-tenant bytes-read metric reads them
        elif opts.with_stats:
            # Only when asked (or for a tenant): counting them costs ~8 us of a ~130 us hot
            # single SPANN query on GloVe-50, and ~3 us more to encode (issue 12).
            kwargs["with_stats"] = True
        _opt_json(opts.filter, "filter", kwargs)
        _params(opts.params, kwargs)
        if opts.with_vectors:
            kwargs["with_vectors"] = True
        q = req.queries
        too_large = hits_too_large("Search", q.count, opts.k,
                                   4 * q.dim if opts.with_vectors else 0, self._max_bytes)  # fmt: skip
        if too_large is not None:
            raise too_large
        queries = convert.vectors_from_proto(q, "queries", copy=False)
        res = self._db.search(req.collection, queries, opts.k, **kwargs)
        if res.payloads is None and res.stats is None and res.vectors is None:
            return plain_result(res)
        return convert.result_to_proto(res)

    SearchBatch = Search

    def SearchStream(
        self, requests: Iterator[pb.SearchRequest], ctx: grpc.ServicerContext
    ) -> Iterator[pb.SearchResponse]:
        """Searches on one stream, each answered as Search answers it (behind the server's
        guard, which runs them one by one as Search calls: `interceptors.SEARCH_STREAM`)."""
        for req in requests:
            yield self.Search(req, ctx)

    def GetRoute(self, req: pb.GetRouteRequest, ctx: grpc.ServicerContext) -> pb.GetRouteResponse:
        raise Unimplemented("GetRoute is a router's call; this server is a node: call it directly",
                            reason="NOT_A_ROUTER")  # fmt: skip

    # -- snapshots -------------------------------------------------------------------------

    def CreateSnapshot(
        self, req: pb.CreateSnapshotRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateSnapshotResponse:
        info = self._db.create_snapshot(req.collection)
        return pb.CreateSnapshotResponse(snapshot=convert.snapshot_to_proto(info))

    def ListSnapshots(
        self, req: pb.ListSnapshotsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        infos = self._db.list_snapshots(req.collection)
        return pb.ListSnapshotsResponse(snapshots=[convert.snapshot_to_proto(i) for i in infos])

    def RestoreSnapshot(
        self, req: pb.RestoreSnapshotRequest, ctx: grpc.ServicerContext
    ) -> pb.RestoreSnapshotResponse:
        self._db.restore_snapshot(req.collection, req.snapshot)
        return pb.RestoreSnapshotResponse()

    def DeleteSnapshot(
        self, req: pb.DeleteSnapshotRequest, ctx: grpc.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        self._db.delete_snapshot(req.collection, req.snapshot)
        return pb.DeleteSnapshotResponse()

    # -- admin -----------------------------------------------------------------------------

    def Stats(self, req: pb.StatsRequest, ctx: grpc.ServicerContext) -> pb.StatsResponse:
        stats = self._db.stats(req.collection or None)
        return pb.StatsResponse(stats=json.dumps(stats, default=str, sort_keys=True))


def plain_result(res: SearchResult) -> pb.SearchResponse:
    """`convert.result_to_proto(res)` for the common answer (integer ids, no payloads,
    vectors or stats): the same message with fewer Python calls. A single query's answer
    counts its hits in the id list (padding is -1; stored ids are >= 0) rather than through
    a numpy reduction, whose code a search has just evicted from the caches (issue 12: 19 ->
    9 us a single query in a server, 10 -> 5 us back to back)."""
    ids = res.ids
    if ids.dtype.kind not in "iu":
        return convert.result_to_proto(res)
    nq, k = ids.shape
    values = ids.astype(np.int64, copy=False).ravel().tolist()
    if nq == 1 and ids.dtype == np.int64:  # the engine's ids: >= 0, padding -1
        found = [k - values.count(-1)]
    else:
        found = (ids >= 0).sum(axis=1).tolist()
    msg = pb.SearchResponse(nq=nq, k=k, degraded=res.degraded, found=found,
                            distances=res.distances.astype(convert.F32, copy=False).tobytes())  # fmt: skip
    ints = msg.ids.ints
    ints.SetInParent()  # an empty answer still says its ids are integers
    ints.values.extend(values)
    return msg


def page_token(last_name: str) -> str:
    """An opaque token: the last name of the page, base64url (names are ASCII). The router
    issues the same tokens."""
    return base64.urlsafe_b64encode(last_name.encode("ascii")).decode("ascii")


_page_token = page_token  # the old name, kept for callers


def _page_after(token: str) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (ValueError, UnicodeError):
        raise InvalidArgument("page_token is not a token this server issued",
                              field="page_token", reason="BAD_PAGE_TOKEN") from None  # fmt: skip


def stream_upserts(
    requests: Iterator[pb.UpsertStreamRequest],
    upsert: Callable[[pb.UpsertRequest], int],
    window: int,
) -> Iterator[pb.UpsertStreamAck]:
    """An UpsertStream: each batch applied by `upsert` in order (seq must increase) and
    acknowledged once it returned, advertising `window` credits; a failing batch ends the
    stream with its error, naming the batch (class, field and reason kept)."""
    last_seq: int | None = None
    for req in requests:
        if last_seq is not None and req.seq <= last_seq:
            raise InvalidArgument(
                f"stream batch seq={req.seq} does not increase (previous {last_seq})",
                field="seq",
            )
        last_seq = req.seq
        try:
            n = upsert(req.batch)
        except VecdbError as exc:  # say which batch; class, field and reason stay
            raise type(exc)(f"batch seq={req.seq}: {exc.message}", field=exc.field,
                            reason=exc.reason, retry_after=exc.retry_after) from None  # fmt: skip
        yield pb.UpsertStreamAck(seq=req.seq, upserted=n, credits=window)


def list_page_size(asked: int) -> int:
    """ListCollections' page size: 0 is the default, above MAX_PAGE_SIZE is refused."""
    size = asked or DEFAULT_PAGE_SIZE
    if size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size={size} is out of range [0, {MAX_PAGE_SIZE}]",
                              field="page_size")  # fmt: skip
    return size
