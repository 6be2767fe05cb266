"""The server interceptor every vecdb.v1 call passes through: request id, authentication and
authorisation, deadline check, error-to-status mapping, metrics and a JSON log line.

Handlers (`vecdb.server.servicer`) only raise `VecdbError`s; this module turns them into their
status code with their message. Anything else is a bug: it is logged with its traceback and the
request id, and the caller gets INTERNAL with a generic message naming only the request id
(grpcio's own default would send UNKNOWN with the exception text). Health and reflection calls
pass through untouched so probes work without a key. Must not import the engine.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from vecdb.errors import DeadlineExceeded, Unavailable, VecdbError
from vecdb.rpc.convert import status_of
from vecdb.server.auth import KeyRing
from vecdb.server.metrics import ServerMetrics

log = logging.getLogger("vecdb.server")

SERVICE_PREFIX = "/vecdb.v1.VectorDB/"
REQUEST_ID_KEY = "x-request-id"


class _Aborted(Exception):
    """Carries a status out of the guarded block so `context.abort` runs outside it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallGuard(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps every VectorDB handler; see the module docstring for what it adds."""

    def __init__(self, keys: KeyRing, metrics: ServerMetrics) -> None:
        self._keys = keys  # configured API keys
        self._metrics = metrics  # counters and histograms of this server
        self._draining = threading.Event()  # set at shutdown: new calls get UNAVAILABLE
        self._idle = threading.Condition()  # notified when a call ends
        self._active = 0  # calls admitted and not yet finished

    def drain(self, timeout: float) -> bool:
        """Refuse new calls from now on and wait up to `timeout` s for in-flight ones to end.
        Returns whether they all did."""
        self._draining.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        method = details.method[len(SERVICE_PREFIX) :]
        metadata = tuple(details.invocation_metadata or ())
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, metadata, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    # -- the guarded call ------------------------------------------------------------------

    def _admit(self, method: str, metadata: Any, context: grpc.ServicerContext) -> str:
        """Start a call: request id, draining, auth, deadline. Returns the request id."""
        rid = uuid.uuid4().hex[:16]
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        if self._draining.is_set():
            raise Unavailable("server is shutting down; retry on another replica or later")
        role = self._keys.authenticate(metadata)
        self._keys.authorize(role, method)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(f"deadline passed before {method} started")
        return rid

    def _failure(self, method: str, rid: str, exc: BaseException) -> _Aborted:
        """Map an exception to the status sent to the client, logging as it deserves."""
        if isinstance(exc, VecdbError):
            level = logging.ERROR if exc.code in ("DATA_LOSS", "INTERNAL") else logging.INFO
            log.log(level, "call failed", extra=_fields(method, rid, exc.code, exc.message))
            return _Aborted(status_of(exc), exc.message)
        log.error(
            "unexpected exception", exc_info=exc, extra=_fields(method, rid, "INTERNAL", None)
        )
        return _Aborted(grpc.StatusCode.INTERNAL, f"internal error (request id {rid})")

    def _begin(self) -> float:
        with self._idle:
            self._active += 1
        self._metrics.inflight.inc()
        return time.perf_counter()

    def _finish(self, method: str, rid: str, code: str, start: float) -> None:
        elapsed = time.perf_counter() - start
        self._metrics.observe(method, code, elapsed)
        self._metrics.inflight.dec()
        with self._idle:
            self._active -= 1
            self._idle.notify_all()
        if code == "OK" and log.isEnabledFor(logging.DEBUG):
            log.debug("call", extra=_fields(method, rid, code, None, elapsed))

    def _wrap_unary(
        self, method: str, metadata: Any, behavior: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            start = self._begin()
            rid, code, aborted = "-", "OK", None
            try:
                rid = self._admit(method, metadata, context)
                return behavior(request, context)
            except Exception as exc:
                aborted = self._failure(method, rid, exc)
                code = aborted.code.name
            finally:
                self._finish(method, rid, code, start)
            context.abort(aborted.code, aborted.message)  # raises

        return guarded

    def _wrap_stream(
        self,
        method: str,
        metadata: Any,
        behavior: Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]],
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]]:
        def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            start = self._begin()
            rid, code, aborted = "-", "OK", None
            try:
                rid = self._admit(method, metadata, context)
                yield from behavior(requests, context)
            except GeneratorExit:  # the client went away mid-stream
                code = "CANCELLED"
                raise
            except Exception as exc:
                aborted = self._failure(method, rid, exc)
                code = aborted.code.name
            finally:
                self._finish(method, rid, code, start)
            if aborted is not None:
                context.abort(aborted.code, aborted.message)

        return guarded


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
