"""A tiny tenant-aware stand-in service for the auth and quota tests, served on 127.0.0.1:0
behind the real `CallGuard` (keys, scopes, quotas, metrics) by a real gRPC server.

Its request messages follow the wire convention of issue 10 (top-level `tenant`, `tenants`,
`grant_to`, `owner`; streamed requests carry theirs in `batch`; ListTenants answers with
`tenants[].name`) and are built at run time from a descriptor, so these tests do not depend on
the engine's tenant RPCs. Each method echoes what reached it (the tenant after injection), and
the tenant RPCs answer NOT_FOUND for a tenant that does not exist, so a test can compare what
a scoped key sees for existing and missing tenants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from vecdb.errors import InvalidArgument, NotFound, VecdbError
from vecdb.rpc import status
from vecdb.server.auth import KeyRing
from vecdb.server.interceptors import AdmissionPool, CallGuard
from vecdb.server.metrics import ServerMetrics
from vecdb.server.quotas import Quotas

EXISTING = ("acme", "globex", "initech")  # tenants the stand-in knows at start
COLLECTIONS = ("alpha", "docs", "mid", "other", "zulu")  # collections it lists
_S, _I, _D, _M = (descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                  descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
                  descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)  # fmt: skip
_R = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

# message name -> [(field, type, repeated, message type)]
_MESSAGES: dict[str, list[tuple[str, int, bool, str]]] = {
    "Options": [("k", _I, False, ""), ("sleep", _D, False, "")],
    "SearchRequest": [("collection", _S, False, ""), ("tenant", _S, False, ""),
                      ("tenants", _S, True, ""), ("options", _M, False, "Options")],
    "Stats": [("bytes_read", _I, False, "")],
    "Echo": [("tenant", _S, False, ""), ("tenants", _S, True, ""), ("owner", _S, False, ""),
             ("grant_to", _S, True, ""), ("stats", _M, False, "Stats")],
    "UpsertRequest": [("collection", _S, False, ""), ("tenant", _S, False, ""),
                      ("grant_to", _S, True, ""), ("ids", _I, True, "")],
    "UpsertStreamRequest": [("seq", _I, False, ""), ("batch", _M, False, "UpsertRequest")],
    "GrantRequest": [("collection", _S, False, ""), ("tenant", _S, False, ""),
                     ("owner", _S, False, ""), ("ids", _I, True, "")],
    "TenantRequest": [("collection", _S, False, ""), ("tenant", _S, False, "")],
    "TenantInfo": [("name", _S, False, ""), ("vectors", _I, False, "")],
    "ListTenantsRequest": [("collection", _S, False, ""), ("limit", _I, False, "?"),
                           ("offset", _S, False, "")],
    "ListTenantsResponse": [("tenants", _M, True, "TenantInfo"), ("next_offset", _S, False, "")],
    "NameRequest": [("name", _S, False, "")],
    "CollectionRequest": [("collection", _S, False, "")],
    "ListCollectionsRequest": [("page_size", _I, False, ""), ("page_token", _S, False, "")],
    "ListCollectionsResponse": [("collections", _M, True, "TenantInfo"),
                                ("next_page_token", _S, False, "")],
    "Empty": [],
}  # fmt: skip


def _build() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="ktest/stand_in.proto", package="ktest",
                                               syntax="proto3")  # fmt: skip
    for name, fields in _MESSAGES.items():
        msg = proto.message_type.add(name=name)
        for number, (fname, ftype, repeated, mtype) in enumerate(fields, 1):
            f = msg.field.add(name=fname, number=number, type=ftype)  # type: ignore[arg-type]
            f.label = _R if repeated else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
            if mtype == "?":  # proto3 `optional`: presence via a synthetic oneof
                f.proto3_optional = True
                f.oneof_index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=f"_{fname}")
            elif mtype:
                f.type_name = f".ktest.{mtype}"
    pool = descriptor_pool.DescriptorPool()
    fd = pool.Add(proto)
    return {n: message_factory.GetMessageClass(fd.message_types_by_name[n]) for n in _MESSAGES}


M = _build()  # message classes by name


class StandIn:
    """The stand-in's behaviour: echo what arrived; NOT_FOUND for unknown tenants."""

    def __init__(self) -> None:
        self.tenants = set(EXISTING)  # tenants that exist
        self.calls = 0  # ListTenants calls answered
        self.running = 0  # searches running now
        self.peak = 0  # most searches running at once
        self._lock = threading.Lock()

    def _known(self, tenant: str) -> None:
        if tenant not in self.tenants:
            raise NotFound(f"tenant {tenant!r} does not exist", field="tenant")

    def search(self, req: Any, ctx: Any) -> Any:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            for t in [req.tenant, *req.tenants]:
                if t:
                    self._known(t)
            time.sleep(req.options.sleep)
            return M["Echo"](tenant=req.tenant, tenants=req.tenants,
                             stats=M["Stats"](bytes_read=4096))  # fmt: skip
        finally:
            with self._lock:
                self.running -= 1

    def upsert(self, req: Any, ctx: Any) -> Any:
        return M["Echo"](tenant=req.tenant, grant_to=req.grant_to)

    def upsert_stream(self, reqs: Iterator[Any], ctx: Any) -> Iterator[Any]:
        for req in reqs:
            yield M["Echo"](tenant=req.batch.tenant, grant_to=req.batch.grant_to)

    def grant(self, req: Any, ctx: Any) -> Any:
        return M["Echo"](tenant=req.tenant, owner=req.owner)

    def tenant_call(self, req: Any, ctx: Any) -> Any:
        self._known(req.tenant)
        return M["TenantInfo"](name=req.tenant, vectors=10)

    def list_tenants(self, req: Any, ctx: Any) -> Any:
        """Pages as the engine's: names >= offset, `limit` of them, next_offset the next."""
        limit = req.limit if req.HasField("limit") else 100
        if not 1 <= limit <= 10_000:
            raise InvalidArgument(f"limit={limit} is out of range", field="limit")
        self.calls += 1
        names = [t for t in sorted(self.tenants) if t >= req.offset]
        return M["ListTenantsResponse"](tenants=[M["TenantInfo"](name=t) for t in names[:limit]],
                                        next_offset=names[limit] if len(names) > limit else "")  # fmt: skip

    def list_collections(self, req: Any, ctx: Any) -> Any:
        """Pages of `page_size` (default 2) with the last name as the token, as the servicer."""
        size = req.page_size or 2
        names = [n for n in COLLECTIONS if not req.page_token or n > req.page_token]
        return M["ListCollectionsResponse"](
            collections=[M["TenantInfo"](name=n) for n in names[:size]],
            next_page_token=names[size - 1] if len(names) > size else "",
        )

    def empty(self, req: Any, ctx: Any) -> Any:
        return M["Empty"]()


# method -> (request message, response message, StandIn attribute, streaming)
METHODS = {
    "Search": ("SearchRequest", "Echo", "search", False),
    "SearchBatch": ("SearchRequest", "Echo", "search", False),
    "Upsert": ("UpsertRequest", "Echo", "upsert", False),
    "UpsertStream": ("UpsertStreamRequest", "Echo", "upsert_stream", True),
    "Grant": ("GrantRequest", "Echo", "grant", False),
    "Count": ("TenantRequest", "TenantInfo", "tenant_call", False),
    "GetTenant": ("TenantRequest", "TenantInfo", "tenant_call", False),
    "CreateTenant": ("TenantRequest", "TenantInfo", "tenant_call", False),
    "ListTenants": ("ListTenantsRequest", "ListTenantsResponse", "list_tenants", False),
    "ListCollections": (
        "ListCollectionsRequest",
        "ListCollectionsResponse",
        "list_collections",
        False,
    ),
    "GetCollection": ("NameRequest", "Empty", "empty", False),
    "CreateCollection": ("NameRequest", "Empty", "empty", False),
    "DropCollection": ("NameRequest", "Empty", "empty", False),
    "CreateSnapshot": ("CollectionRequest", "Empty", "empty", False),
    "Optimize": ("CollectionRequest", "Empty", "empty", False),
    "Stats": ("CollectionRequest", "Empty", "empty", False),
}


class StandInServer:
    """The stand-in behind a real CallGuard on 127.0.0.1:0, and a caller for it."""

    def __init__(self, keys: KeyRing, quotas: Quotas | None = None, tenant_labels: int = 100):
        self.impl = StandIn()
        self.metrics = ServerMetrics(tenant_labels=tenant_labels)
        if quotas is not None and quotas._on_throttle is None:
            quotas._on_throttle = self.metrics.tenants.throttle
        pool = AdmissionPool(8)
        self.guard = CallGuard(keys, self.metrics, pool, workers=8, max_queued=64,
                               side_workers=2, quotas=quotas)  # fmt: skip
        self.server = grpc.server(pool, interceptors=[self.guard])
        handlers = {}
        for name, (req, resp, attr, streaming) in METHODS.items():
            make = (grpc.stream_stream_rpc_method_handler if streaming
                    else grpc.unary_unary_rpc_method_handler)  # fmt: skip
            handlers[name] = make(getattr(self.impl, attr),
                                  request_deserializer=M[req].FromString,
                                  response_serializer=M[resp].SerializeToString)  # fmt: skip
        generic = grpc.method_handlers_generic_handler("vecdb.v1.VectorDB", handlers)
        self.server.add_generic_rpc_handlers((generic,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def call(self, method: str, key: str | None, **fields: Any) -> Any:
        """One unary call as the holder of `key`; a failure is raised as its VecdbError."""
        req_name, resp_name, _, _ = METHODS[method]
        rpc = self.channel.unary_unary(f"/vecdb.v1.VectorDB/{method}",
                                       request_serializer=M[req_name].SerializeToString,
                                       response_deserializer=M[resp_name].FromString)  # fmt: skip
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        try:
            return rpc(M[req_name](**fields), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            raise status.error_of(exc) from None

    def stream(self, key: str, batches: list[dict[str, Any]]) -> list[Any]:
        """A streamed upsert of `batches` (UpsertRequest fields) as the holder of `key`."""
        rpc = self.channel.stream_stream("/vecdb.v1.VectorDB/UpsertStream",
                                         request_serializer=M["UpsertStreamRequest"].SerializeToString,
                                         response_deserializer=M["Echo"].FromString)  # fmt: skip
        reqs = (M["UpsertStreamRequest"](seq=i, batch=M["UpsertRequest"](**b))
                for i, b in enumerate(batches))  # fmt: skip
        try:
            return list(rpc(reqs, metadata=(("authorization", f"Bearer {key}"),), timeout=10))
        except grpc.RpcError as exc:
            raise status.error_of(exc) from None

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait()
        self.guard.close()


def error_of(fn: Any) -> VecdbError:
    """The VecdbError `fn()` raises (the test fails if it raises none)."""
    try:
        fn()
    except VecdbError as exc:
        return exc
    raise AssertionError("expected a VecdbError")
