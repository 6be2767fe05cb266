"""The server interceptor every call passes through: request id, shutdown, authentication and
authorisation, admission (a bounded queue), safe request decoding, deadline check, error to
rich status, metrics and a JSON log line.

`intercept_service` runs on grpcio's polling thread when a call arrives, before its body is
read, and decides from the metadata alone: a call that is refused (no valid key, a key whose
role is below the method's, the server draining, the queue full) gets a handler that reads no
message and answers at once from a small pool of its own (`express`), so refusals neither
decode an oversized body nor wait behind queued work. Admitted calls run on the handler pool
(`AdmissionPool`), which counts what it holds: past `server.workers` running calls they queue,
and past `limits.max_queued_rpcs` waiting ones the answer is RESOURCE_EXHAUSTED with RetryInfo,
counted in `vecdb_rejected_requests` and logged at most every LOG_EVERY seconds. Health checks
and reflection run on their own small pools, so neither they nor idle reflection streams can
take a handler thread from VectorDB calls. A body that does not parse is INVALID_ARGUMENT
(MALFORMED_REQUEST), not grpcio's INTERNAL. Handlers only raise `VecdbError`s; anything else is a
bug, logged with its traceback and request id, and answered INTERNAL naming only the request
id. Once the body is decoded, and before the servicer sees it, a key bound to tenants or
collections is held to them (`vecdb.server.auth_scope`: checks, tenant injection, listings
filtered on the way out), the tenants' quotas are charged (`vecdb.server.quotas`), and the
call is counted per tenant (`vecdb.server.metrics.TenantMetrics`). A stream, authenticated
when it opens, has its key checked again before each message, so a key revoked meanwhile
stops at the stream's next message. An answer above
`limits.max_message_bytes` is refused before it is sent (`vecdb.server.answer_size`). Must
not import the engine.

The per-call path is kept short (issue 12: a single query over gRPC pays it on every call): the
wrapped handler of a (method, caller) pair is built once and reused, a request id is a
per-process random prefix and a counter (no system call), metric children are looked up once
per (method, code), the in-flight gauge reads the running-call count at scrape time, and an
unscoped key skips the scope, quota and listing-filter steps that cannot apply to it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc

from vecdb.errors import (
    DeadlineExceeded,
    Internal,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    VecdbError,
)
from vecdb.rpc.status import REQUEST_ID_KEY, to_status
from vecdb.server.answer_size import Fit
from vecdb.server.auth import KeyRing, Principal
from vecdb.server.auth_scope import filter_response, scope, scoped_call
from vecdb.server.handlers import AdmissionPool, Undecodable, checked, on_pool, rebuild, safe
from vecdb.server.metrics import ServerMetrics, bytes_read_of
from vecdb.server.open_streams import OpenStreams
from vecdb.server.quotas import Quotas

log = logging.getLogger("vecdb.server")

SERVICE_PREFIX = "/vecdb.v1.VectorDB/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION_PREFIX = "/grpc.reflection."
QUEUE_RETRY_AFTER = 0.5  # seconds suggested to a caller refused because the queue is full
DRAIN_RETRY_AFTER = 1.0  # ... and to one refused because the server is shutting down
LOG_EVERY = 10.0  # seconds between two log lines about refused calls
MAX_ROUTES = 4096  # cached (method, caller) handlers; the cache starts over past this
SEARCH_STREAM = "SearchStream"  # its requests are guarded one by one as Search calls
UPSERT_STREAM = "UpsertStream"  # bounded as SearchStreams are (`open_streams`)
STREAMS_RETRY_AFTER = 5.0  # seconds suggested to a stream refused because too many are open
DEFAULT_STREAM_IDLE = 5.0  # seconds a SearchStream may wait for a request (limits section)
DEFAULT_UPSERT_IDLE = 60.0  # ... and an UpsertStream for a batch (limits section)
DEFAULT_UPSERT_STREAMS = 4  # UpsertStreams open at once (limits section)
_RID_PREFIX = secrets.token_hex(4)  # 8 hex digits, random per process
_rid_counter = itertools.count(1)  # next() on a count is atomic under the GIL


def request_id() -> str:
    """A new request id: 16 hex digits, the process's random prefix then a call counter."""
    return f"{_RID_PREFIX}{next(_rid_counter) & 0xFFFFFFFF:08x}"


class CallGuard(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps every call; see the module docstring for what it adds."""

    def __init__(
        self, keys: KeyRing, metrics: ServerMetrics, pool: AdmissionPool, *, workers: int,
        max_queued: int, side_workers: int, quotas: Quotas | None = None,
        search_streams: int = 0, search_stream_idle: float = DEFAULT_STREAM_IDLE,
        upsert_streams: int = DEFAULT_UPSERT_STREAMS, upsert_stream_idle: float = DEFAULT_UPSERT_IDLE,
        max_message_bytes: int | None = None,
    ) -> None:  # fmt: skip
        self._keys = keys  # configured API keys
        # answers above this are refused before they are sent (`answer_size`); None: not
        # measured, grpcio's send limit alone applies
        self._max_bytes = max_message_bytes
        self._quotas = quotas or Quotas()  # per-tenant rate and concurrency limits
        self._metrics = metrics  # counters and histograms of this server
        self._pool = pool  # the handler pool, which counts pending calls
        self._bound = workers + max_queued  # pending calls past which new ones are refused
        self._express = futures.ThreadPoolExecutor(2, thread_name_prefix="rpc-refuse")
        self._probes = futures.ThreadPoolExecutor(2, thread_name_prefix="rpc-health")
        self._side = futures.ThreadPoolExecutor(side_workers, thread_name_prefix="rpc-side")
        self._draining = threading.Event()  # set at shutdown: new calls get UNAVAILABLE
        self._idle = threading.Condition(threading.Lock())  # notified when a call ends, draining
        self._active = 0  # calls running now (the in-flight gauge reads it when scraped)
        metrics.inflight.set_function(lambda: self._active)
        # (full method, caller) -> (grpc's handler, our wrapped one); see intercept_service.
        self._routes: dict[tuple[str, Principal], tuple[Any, Any]] = {}
        # open SearchStreams (at most half the workers) and UpsertStreams (a quarter), so
        # unary calls keep threads
        self.streams = OpenStreams(SEARCH_STREAM, min(search_streams, workers // 2),
                                   search_stream_idle, ends_itself=True)  # fmt: skip
        self.upserts = OpenStreams(UPSERT_STREAM, min(upsert_streams, workers // 4),
                                   upsert_stream_idle)  # fmt: skip
        self._refused = 0  # queue-full refusals since the last log line
        self._logged_at = 0.0  # monotonic time of that line

    def drain(self, timeout: float) -> bool:
        """Refuse new calls from now on and wait up to `timeout` s for running ones to end.
        Returns whether they all did."""
        self._draining.set()
        self.streams.close()  # idle streams end now, busy ones after their current request
        self.upserts.close()
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def close(self) -> None:
        """Stop the guard's own pools (after the gRPC server stopped)."""
        self.streams.close()
        self.upserts.close()
        for pool in (self._express, self._probes, self._side):
            pool.shutdown(wait=False, cancel_futures=True)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        full = details.method
        metadata = details.invocation_metadata or ()
        if not full.startswith(SERVICE_PREFIX):
            if full.startswith(REFLECTION_PREFIX):  # the schema is for callers with a key
                try:
                    self._keys.authenticate(metadata)
                except VecdbError as exc:
                    return self._refusal(handler, full, request_id(), exc)
            return rebuild(handler, self._probes if full == HEALTH_CHECK else self._side)
        method = full[len(SERVICE_PREFIX) :]
        try:  # decided on the metadata alone: nothing of the body has been read
            if self._draining.is_set():
                raise Unavailable("server is shutting down; retry on another replica or later",
                                  reason="SHUTTING_DOWN", retry_after=DRAIN_RETRY_AFTER)  # fmt: skip
            who = self._keys.principal(metadata)
            route = self._routes.get((full, who))
            if route is None or route[0] is not handler:
                self._keys.authorize(who, method)  # a cached route was authorized when built
            bounded = self._bounded(method)
            if bounded is not None and (bounded.full or self._pool.pending >= self._bound):
                raise self._streams_full(bounded)  # the client sends single calls instead
            if self._pool.pending >= self._bound:
                self._queue_full(method)
                raise ResourceExhausted(
                    f"server busy: {self._pool.pending} calls running or queued; retry later",
                    reason="QUEUE_FULL", retry_after=QUEUE_RETRY_AFTER,
                )  # fmt: skip
        except VecdbError as exc:
            return self._refusal(handler, method, request_id(), exc)
        if route is not None and route[0] is handler:
            return route[1]
        if handler.unary_unary is None and handler.stream_stream is None and who.scoped:
            # No such RPC today; a new one must not slip past the scope checks.
            denied = PermissionDenied(f"{method} is not available to keys bound to tenants "
                                      "or collections", reason="SCOPED_KEY")  # fmt: skip
            return self._refusal(handler, method, request_id(), denied)
        wrapped = self._wrap(method, who, handler)
        if len(self._routes) >= MAX_ROUTES:  # many keys x methods: start over, stay bounded
            self._routes.clear()
        self._routes[(full, who)] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, who: Principal, handler: grpc.RpcMethodHandler) -> Any:
        """`handler` guarded for calls of `who` to `method` (built once per pair). A unary
        answer (and each of a SearchStream's) is serialised by the guard when answers are
        measured (`answer_size.Fit`): grpcio then sends the bytes as they are."""
        de, ser = safe(handler.request_deserializer), handler.response_serializer
        named = "Search" if method == SEARCH_STREAM else method  # each request is a Search
        fit = None if self._max_bytes is None or ser is None else Fit(named, ser, self._max_bytes)
        out = ser if fit is None else None
        if method == SEARCH_STREAM and handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_search_stream(who, handler.stream_stream, fit),
                request_deserializer=de, response_serializer=out,
            )  # fmt: skip
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, who, handler.unary_unary, fit=fit),
                request_deserializer=de, response_serializer=out,
            )  # fmt: skip
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, who, handler.stream_stream),
                request_deserializer=de, response_serializer=ser,
            )  # fmt: skip
        return handler

    # -- refusals --------------------------------------------------------------------------

    def _queue_full(self, method: str) -> None:
        self._metrics.rejected.labels("queue_full").inc()
        now = time.monotonic()
        self._refused += 1
        if now - self._logged_at >= LOG_EVERY:
            log.warning("calls refused: queue full", extra={"method": method,
                        "refused": self._refused, "pending": self._pool.pending})  # fmt: skip
            self._refused, self._logged_at = 0, now

    def _bounded(self, method: str) -> OpenStreams | None:
        """The registry bounding `method`'s open streams (None: not bounded)."""
        return self.streams if method == SEARCH_STREAM else (
            self.upserts if method == UPSERT_STREAM else None)  # fmt: skip

    def _streams_full(self, streams: OpenStreams) -> ResourceExhausted:
        """The refusal of a stream past its kind's open-stream bound (or the queue's)."""
        single = "Search" if streams is self.streams else "Upsert"
        return ResourceExhausted(
            f"{streams.count} {streams.kind}s open (this server's limit is {streams.limit}) "
            f"or calls queued: send single {single} calls",
            reason="STREAMS_FULL", retry_after=STREAMS_RETRY_AFTER,
        )  # fmt: skip

    def _refusal(
        self, handler: grpc.RpcMethodHandler, method: str, rid: str, exc: VecdbError
    ) -> grpc.RpcMethodHandler:
        """A handler that reads no request message and answers `exc` from the express pool."""
        self._metrics.observe(method, exc.code, 0.0)
        if exc.code != "RESOURCE_EXHAUSTED":
            log.info("call refused", extra=_fields(method, rid, exc.code, exc.message))
        status = to_status(exc, rid)

        def refuse(requests: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(status)

        def refuse_stream(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            context.abort_with_status(status)
            yield  # pragma: no cover - abort raised

        ser = handler.response_serializer
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                on_pool(refuse_stream, self._express), response_serializer=ser
            )
        return grpc.stream_unary_rpc_method_handler(
            on_pool(refuse, self._express), response_serializer=ser
        )

    # -- the guarded call ------------------------------------------------------------------

    def _start(self, method: str, context: grpc.ServicerContext) -> None:
        if self._draining.is_set():  # queued before the drain began
            raise Unavailable("server is shutting down; retry on another replica or later",
                              reason="SHUTTING_DOWN", retry_after=DRAIN_RETRY_AFTER)  # fmt: skip
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(f"deadline passed before {method} started")

    def _failure(self, method: str, rid: str, exc: BaseException) -> VecdbError:
        """The error sent to the client for `exc`, logged as it deserves."""
        if isinstance(exc, VecdbError):
            level = logging.ERROR if exc.code in ("DATA_LOSS", "INTERNAL") else logging.INFO
            log.log(level, "call failed", extra=_fields(method, rid, exc.code, exc.message))
            return exc
        log.error(
            "unexpected exception", exc_info=exc, extra=_fields(method, rid, "INTERNAL", None)
        )
        return Internal(f"internal error (request id {rid})")

    def _begin(self) -> float:
        with self._idle:
            self._active += 1
        return time.perf_counter()

    def _finish(
        self, method: str, rid: str, code: str, start: float, tenants: Iterable[str] = ()
    ) -> None:
        elapsed = time.perf_counter() - start
        self._metrics.observe(method, code, elapsed)
        if tenants:
            self._metrics.tenants.observe(tenants, method, code, elapsed)
        with self._idle:
            self._active -= 1
            if self._draining.is_set():  # only drain() waits on it
                self._idle.notify_all()
        if code == "OK" and log.isEnabledFor(logging.DEBUG):
            log.debug("call", extra=_fields(method, rid, code, None, elapsed))

    def _wrap_unary(
        self, method: str, who: Principal, behavior: Callable[[Any, grpc.ServicerContext], Any],
        in_stream: bool = False, fit: Fit | None = None,
    ) -> Callable[[Any, grpc.ServicerContext], Any]:  # fmt: skip
        """`behavior` guarded; `in_stream`: a request of a SearchStream, whose request id
        travels only in a failure's status (a stream has one set of trailing metadata);
        `fit`: the answer is returned as its wire bytes, refused if above the limit."""
        scoped, quotas, tenant_metrics = who.scoped, self._quotas, self._metrics.tenants
        keys = self._keys

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            start = self._begin()
            rid = request_id()
            code, failed = "OK", None
            tenants: tuple[str, ...] = ()
            try:
                if not in_stream:
                    context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
                self._start(method, context)
                if isinstance(request, Undecodable):
                    raise request.error
                if in_stream:  # the stream was authenticated when it opened
                    keys.still_valid(who)
                tenants = scope(who, method, request)
                ticket = quotas.admit_request(tenants, method, request)
                try:
                    if scoped:
                        response = scoped_call(who, method, request,
                                               lambda r: behavior(r, context))  # fmt: skip
                    else:  # scoped_call and filter_response change nothing for it
                        response = behavior(request, context)
                finally:
                    ticket.release()
                if tenants:
                    tenant_metrics.read(tenants, bytes_read_of(response))
                answer = filter_response(who, method, response) if scoped else response
                return answer if fit is None else fit(answer)
            except Exception as exc:
                failed = self._failure(method, rid, exc)
                code = failed.code
            finally:
                self._finish(method, rid, code, start, tenants)
            context.abort_with_status(to_status(failed, rid))  # raises

        return guarded

    def _scoped(self, method: str, who: Principal, requests: Iterator[Any],
                seen: dict[str, None]) -> Iterator[Any]:  # fmt: skip
        """Each streamed message held to the key's scope and charged to its tenants."""
        for request in requests:
            self._keys.still_valid(who)  # a key revoked mid-stream stops here
            tenants = scope(who, method, request)
            self._quotas.admit(tenants, method)
            seen.update(dict.fromkeys(tenants))
            yield request

    def _wrap_stream(
        self,
        method: str,
        who: Principal,
        behavior: Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]],
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]]:
        bounded = self._bounded(method)

        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            if bounded is not None:
                if not bounded.enter(context):  # opened by another since intercept_service
                    self._refuse_open(method, bounded, context)
                requests = _tracked(requests, bounded, context)
            start = self._begin()
            rid = request_id()
            code, failed, seen = "OK", None, dict[str, None]()
            try:
                context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
                self._start(method, context)
                scoped = self._scoped(method, who, checked(requests), seen)
                yield from behavior(scoped, context)
            except GeneratorExit:  # the client went away mid-stream
                code = "CANCELLED"
                raise
            except grpc.RpcError:  # cancelled (idle, shutdown) or the client went away
                code = "CANCELLED"
            except Exception as exc:
                failed = self._failure(method, rid, exc)
                code = failed.code
            finally:
                self._finish(method, rid, code, start, seen)
                if bounded is not None:
                    bounded.leave(context)
            if failed is not None:
                context.abort_with_status(to_status(failed, rid))

        return guarded

    def _refuse_open(self, method: str, streams: OpenStreams, context: Any) -> None:
        """End a stream refused because its kind's bound was reached meanwhile (raises)."""
        full = self._streams_full(streams)
        self._metrics.observe(method, full.code, 0.0)
        context.abort_with_status(to_status(full, request_id()))

    def _wrap_search_stream(
        self, who: Principal,
        behavior: Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]],
        fit: Fit | None = None,
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]]:  # fmt: skip
        """A SearchStream: every request guarded exactly as a Search call (request id,
        deadline, scope, quotas, metrics and log under "Search"; a failing one ends the stream
        with its status), within the open-stream bound (`OpenStreams`)."""
        one = self._wrap_unary(
            "Search",
            who,
            lambda request, context: next(behavior(iter((request,)), context)),
            in_stream=True,
            fit=fit,
        )
        streams = self.streams

        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            if not streams.enter(context):  # opened by another since intercept_service
                self._refuse_open(SEARCH_STREAM, streams, context)
            try:
                for request in requests:
                    streams.busy(context, True)
                    budget = getattr(request, "timeout_ms", 0)  # 0 also when Undecodable
                    yield one(request, Budgeted(context, budget / 1e3) if budget else context)
                    streams.busy(context, False)
                    if self._draining.is_set():
                        return  # shutting down: the client takes Search (UNAVAILABLE) next
            except grpc.RpcError:
                return  # cancelled (idle, shutdown) or the client went away
            finally:
                streams.leave(context)

        return guarded


def _tracked(requests: Iterator[Any], streams: OpenStreams, context: Any) -> Iterator[Any]:
    """`requests`, the stream marked busy from a message's arrival until the next is asked
    for (its answer handed to grpc by then): idle only while it waits for the client."""
    for request in requests:
        streams.busy(context, True)
        yield request
        streams.busy(context, False)
    if streams.ended(context):  # cancelled (idle, shutdown), not closed by the client
        raise grpc.RpcError()


class Budgeted:
    """A stream's context for one of its requests: `time_remaining` counts down from the
    request's own `timeout_ms` (what the client gives it, as a unary call's deadline); all
    else is the stream's."""

    def __init__(self, context: grpc.ServicerContext, seconds: float) -> None:
        self._context = context
        self._deadline = time.monotonic() + seconds

    def time_remaining(self) -> float:
        left = self._deadline - time.monotonic()
        outer = self._context.time_remaining()
        return left if outer is None else min(left, outer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _fields(
    method: str, rid: str, code: str, message: str | None, seconds: float | None = None
) -> dict[str, Any]:
    """Structured fields for the JSON log formatter (see `vecdb.server.app`)."""
    out: dict[str, Any] = {"method": method, "request_id": rid, "code": code}
    if message is not None:
        out["detail"] = message
    if seconds is not None:
        out["ms"] = round(seconds * 1000, 3)
    return out


__all__ = ["AdmissionPool", "CallGuard", "request_id"]  # AdmissionPool: its home is handlers
