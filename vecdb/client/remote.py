"""The remote client: the SDK's methods over gRPC to a `vecdb serve` process.

`vecdb.connect("host:port", api_key=..., tls=..., timeout=...)` returns a `RemoteClient`. Every
call carries a deadline; idempotent calls (reads, upsert, delete, optimize) are retried with
jittered exponential backoff on UNAVAILABLE; every failure is raised as the same
`vecdb.errors` class the embedded client raises. `upsert_stream` is the bulk-load path:
sequence-numbered batches on one stream, at most `credits` unacknowledged (backpressure),
yielding one ack per durable batch. The request builders here and the channel setup in
`vecdb.client.channel` are shared with `vecdb.client.aio`. Imports only `vecdb.rpc` for the wire, never the engine or server.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import grpc
import numpy as np

from vecdb.client.base import Client
from vecdb.client.channel import (
    DEFAULT_STREAM_WINDOW,
    DEFAULT_TIMEOUT,
    MAX_MESSAGE_BYTES,
    OPTIMIZE_TIMEOUT,
    TLS,
    auth_metadata,
    backoff_delays,
    channel_credentials,
    channel_options,
    parse_target,
)
from vecdb.errors import InvalidArgument, VecdbError
from vecdb.rpc import convert
from vecdb.rpc import vecdb_pb2 as pb
from vecdb.rpc import vecdb_pb2_grpc as pb_grpc
from vecdb.types import CollectionInfo, IndexKind, Record, SearchResult

T = TypeVar("T")


class StreamAck(NamedTuple):
    """One acknowledged batch of `upsert_stream`: its position in the input and its size."""

    seq: int
    upserted: int


def build(make: Callable[[], T]) -> T:
    """Construct a request; protobuf type/range errors become `InvalidArgument`."""
    try:
        return make()
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(f"invalid argument: {exc}") from None


def check_uint(value: Any, name: str) -> int:
    """An integer argument carried as uint32 (k, dim); the engine checks its real range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}")
    if not 0 <= int(value) < 2**32:
        raise InvalidArgument(f"{name}={value} is out of range")
    return int(value)


def create_request(
    name: Any, dim: Any, metric: Any, id_type: Any, index: Any, index_params: Any, kind: Any,
    multi_tenant: Any,
) -> pb.CreateCollectionRequest:  # fmt: skip
    dim_ = check_uint(dim, "dim")
    for label, value in (("metric", metric), ("id_type", id_type), ("kind", kind)):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{label} {value!r} is unknown")
    if index is not None and (not isinstance(index, str) or not index):  # "" means default
        kinds = tuple(k.value for k in IndexKind)  # on the wire, so refuse it here
        raise InvalidArgument(f"index {index!r} is unknown (expected one of {kinds})")
    if index_params is not None and not isinstance(index_params, dict):
        raise InvalidArgument("index_params must be a dict")
    return build(lambda: pb.CreateCollectionRequest(
        name=name, dim=dim_, metric=metric, id_type=id_type, index=index or "",
        index_params_json=convert.optional_json(index_params, "index_params"), kind=kind,
        multi_tenant=bool(multi_tenant),
    ))  # fmt: skip


def upsert_requests(
    name: Any, ids: Any, vectors: Any, payloads: Any, max_bytes: int
) -> list[pb.UpsertRequest]:
    """One request, or several if it would not fit in a message (splits are not atomic)."""
    id_msg = convert.ids_to_proto(ids)
    vec_msg = convert.vectors_to_proto(vectors)
    pay = convert.payloads_to_proto(payloads)
    whole = build(
        lambda: pb.UpsertRequest(collection=name, ids=id_msg, vectors=vec_msg, payloads=pay)
    )
    n = vec_msg.count
    size = whole.ByteSize()
    if size <= max_bytes // 2 or n <= 1 or len(pay) not in (0, n) or _n_ids(id_msg) != n:
        return [whole]  # the engine answers shape mismatches with its own message
    rows = max(1, int(n * (max_bytes // 2) / size))
    row_bytes = vec_msg.dim * 4
    out = []
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        sub_ids = pb.Ids()
        if id_msg.HasField("strs"):
            sub_ids.strs.values.extend(id_msg.strs.values[lo:hi])
        else:
            sub_ids.ints.values.extend(id_msg.ints.values[lo:hi])
        data = vec_msg.data[lo * row_bytes : hi * row_bytes]
        sub_vec = pb.Vectors(dim=vec_msg.dim, count=hi - lo, data=data)
        out.append(
            pb.UpsertRequest(collection=name, ids=sub_ids, vectors=sub_vec, payloads=pay[lo:hi])
        )
    return out


def stream_request(name: Any, ids: Any, vectors: Any, payloads: Any) -> pb.UpsertRequest:
    """One batch of a streaming upsert, never split (the server's window bounds memory)."""
    return upsert_requests(name, ids, vectors, payloads, 2**62)[0]


def _n_ids(msg: pb.Ids) -> int:
    return len(msg.strs.values) if msg.HasField("strs") else len(msg.ints.values)


def search_options(k: Any, filter: Any, params: Any, with_payload: bool) -> pb.SearchOptions:
    k_ = check_uint(k, "k")
    convert.check_filter(filter)
    return pb.SearchOptions(
        k=k_,
        filter_json=convert.optional_json(filter, "filter"),
        params_json=convert.optional_json(params, "params"),
        with_payload=bool(with_payload),
    )


def search_request(name: Any, queries: Any, options: pb.SearchOptions) -> tuple[str, Any]:
    """`Search` for a single (d,) query, `SearchBatch` otherwise; returns (rpc name, request)."""
    vecs = convert.vectors_to_proto(queries, "queries")
    if np.ndim(queries) == 1:
        blob = vecs.data
        return "Search", build(
            lambda: pb.SearchRequest(collection=name, query=blob, options=options)
        )
    return "SearchBatch", build(
        lambda: pb.SearchBatchRequest(collection=name, queries=vecs, options=options)
    )


def resolve(exc: convert.Ragged | convert.UntypedIds, info: CollectionInfo) -> VecdbError:
    """The engine's own error for input the wire cannot carry, given the collection."""
    if isinstance(exc, convert.Ragged):
        return convert.ragged_error(exc, info.dim)
    return convert.misfit_id_error(exc, info.id_type)


class RemoteClient(Client):
    """A `Client` talking to a server; thread-safe (one channel, many concurrent calls)."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: Any = None,
        timeout: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target  # as given
        address, tls_ = parse_target(target, tls)
        self._timeout = timeout  # None: DEFAULT_TIMEOUT (OPTIMIZE_TIMEOUT for optimize)
        self._max_bytes = max_message_bytes
        self._metadata = auth_metadata(api_key)
        opts = channel_options(tls_, max_message_bytes)
        if tls_ is None:
            self._channel = grpc.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.secure_channel(address, channel_credentials(tls_), options=opts)
        self._stub = pb_grpc.VectorDBStub(self._channel)  # type: ignore[no-untyped-call]

    # -- plumbing --------------------------------------------------------------------------

    def _call(
        self, rpc: str, request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        method = getattr(self._stub, rpc)
        budget = timeout or self._timeout or DEFAULT_TIMEOUT
        deadline = time.monotonic() + budget
        delays = backoff_delays() if idempotent else iter(())
        while True:
            try:
                return method(request, timeout=max(0.001, deadline - time.monotonic()),
                              metadata=self._metadata)  # fmt: skip
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    delay = next(delays, None)
                    if delay is not None and time.monotonic() + delay < deadline:
                        time.sleep(delay)
                        continue
                raise convert.error_from_status(code, exc.details()) from None

    def _checked(self, name: str, make: Callable[[], T]) -> T:
        """Build a request; ragged vectors or mixed ids get the engine's message, which needs
        the collection's dimension or id type (one extra call, on this error path only)."""
        try:
            return make()
        except (convert.Ragged, convert.UntypedIds) as exc:
            raise resolve(exc, self.get_collection(name)) from None

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
    ) -> CollectionInfo:
        req = create_request(name, dim, metric, id_type, index, index_params, kind, multi_tenant)
        return convert.info_from_proto(self._call("CreateCollection", req, idempotent=False).info)

    def list_collections(self) -> list[CollectionInfo]:
        resp = self._call("ListCollections", pb.ListCollectionsRequest(), idempotent=True)
        return [convert.info_from_proto(i) for i in resp.collections]

    def get_collection(self, name: str) -> CollectionInfo:
        req = build(lambda: pb.GetCollectionRequest(name=name))
        return convert.info_from_proto(self._call("GetCollection", req, idempotent=True).info)

    def drop_collection(self, name: str) -> None:
        self._call("DropCollection", build(lambda: pb.DropCollectionRequest(name=name)),
                   idempotent=False)  # fmt: skip

    # -- points ----------------------------------------------------------------------------

    def upsert(self, name: str, ids: Any, vectors: Any, payloads: Any = None) -> int:
        reqs = self._checked(
            name, lambda: upsert_requests(name, ids, vectors, payloads, self._max_bytes)
        )
        return sum(int(self._call("Upsert", r, idempotent=True).upserted) for r in reqs)

    def upsert_stream(
        self, name: str, batches: Iterable[tuple[Any, Any, Any]], *, window: int | None = None
    ) -> Iterator[StreamAck]:
        """Stream `(ids, vectors, payloads)` batches; yield a `StreamAck` per durable batch.

        If `batches` raises, the batches before it are still sent and acknowledged, then the
        exception is re-raised; a batch the server rejects ends the stream with its error.
        """
        credits = threading.Condition()
        state = {"in_flight": 0, "window": window or DEFAULT_STREAM_WINDOW, "closed": False}
        failure: list[BaseException] = []

        def requests() -> Iterator[pb.UpsertStreamRequest]:
            try:
                for seq, (ids, vectors, payloads) in enumerate(batches):
                    req = self._checked(
                        name, functools.partial(stream_request, name, ids, vectors, payloads)
                    )
                    with credits:
                        credits.wait_for(
                            lambda: state["in_flight"] < state["window"] or state["closed"]
                        )
                        if state["closed"]:
                            return
                        state["in_flight"] += 1
                    yield pb.UpsertStreamRequest(seq=seq, batch=req)
            except BaseException as exc:  # reported after the good batches are acknowledged
                failure.append(exc)

        call = self._stub.UpsertStream(requests(), metadata=self._metadata)
        try:
            for ack in call:
                with credits:
                    state["in_flight"] -= 1
                    if window is None and ack.credits:
                        state["window"] = ack.credits
                    credits.notify_all()
                yield StreamAck(int(ack.seq), int(ack.upserted))
        except grpc.RpcError as exc:
            raise convert.error_from_status(exc.code(), exc.details()) from None
        finally:
            with credits:
                state["closed"] = True
                credits.notify_all()
            call.cancel()
        if failure:
            raise failure[0]

    def get(self, name: str, ids: Any) -> list[Record]:
        ids_msg = self._checked(name, lambda: convert.ids_to_proto(ids))
        req = build(lambda: pb.GetRequest(collection=name, ids=ids_msg))
        return convert.records_from_proto(self._call("Get", req, idempotent=True))

    def delete(self, name: str, ids: Any) -> int:
        ids_msg = self._checked(name, lambda: convert.ids_to_proto(ids))
        req = build(lambda: pb.DeleteRequest(collection=name, ids=ids_msg))
        return int(self._call("Delete", req, idempotent=True).deleted)

    def count(self, name: str) -> int:
        req = build(lambda: pb.CountRequest(collection=name))
        return int(self._call("Count", req, idempotent=True).count)

    def optimize(self, name: str, wait: bool = True) -> None:
        if not isinstance(wait, bool):
            raise InvalidArgument(f"wait must be true or false, got {wait!r}")
        req = build(lambda: pb.OptimizeRequest(collection=name, no_wait=not wait))
        self._call("Optimize", req, idempotent=True, timeout=self._timeout or OPTIMIZE_TIMEOUT)

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
    ) -> SearchResult:
        opts = search_options(k, filter, params, with_payload)
        rpc, req = self._checked(name, lambda: search_request(name, queries, opts))
        return convert.result_from_proto(self._call(rpc, req, idempotent=True))

    # -- admin -----------------------------------------------------------------------------

    def stats(self, name: str | None = None) -> dict[str, Any]:
        req = build(lambda: pb.StatsRequest(collection=name or ""))
        resp = self._call("Stats", req, idempotent=True)
        out: dict[str, Any] = convert.loads_json(resp.stats_json, "stats")
        return out

    def close(self) -> None:
        self._channel.close()


__all__ = ["TLS", "RemoteClient", "StreamAck"]
