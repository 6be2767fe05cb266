"""The pieces of a call the guard (`vecdb.server.interceptors`) puts around grpcio's handlers:
the counting handler pool (`AdmissionPool`), the request decoder that never raises (`safe`,
whose failure is an `Undecodable` the guard answers INVALID_ARGUMENT), and the rebuilding of a
handler so it runs on another pool (`on_pool`, `rebuild`). Owns no policy. Must not import the
engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from vecdb.errors import InvalidArgument


class AdmissionPool(futures.ThreadPoolExecutor):
    """The handler pool; `pending` counts calls submitted and not finished (running + queued).
    Every submitted task decrements it when done, so the count cannot leak."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="rpc")
        self._lock = threading.Lock()
        self.pending = 0  # calls running or waiting for a thread

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._lock:
            self.pending += 1
        try:
            return super().submit(self._counted, fn, *args, **kwargs)
        except BaseException:
            self._done()
            raise

    def _counted(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self.pending -= 1


class Undecodable:
    """What the safe deserializer hands on instead of raising (grpcio would answer INTERNAL)."""

    def __init__(self, message_type: str) -> None:
        self.error = InvalidArgument(
            f"the request body is not a valid {message_type} message", reason="MALFORMED_REQUEST"
        )


def safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:
            return Undecodable(name)

    return decode


def checked(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Undecodable):
            raise request.error
        yield request


def on_pool(behavior: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> Callable[..., Any]:
    """`behavior` run by grpcio on `pool` instead of the handler pool (`experimental_thread_pool`
    is grpcio's documented hook for this)."""

    def run(*args: Any) -> Any:
        return behavior(*args)

    run.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return run


def rebuild(handler: grpc.RpcMethodHandler, pool: futures.ThreadPoolExecutor) -> Any:
    """The same handler, of the same cardinality, run on `pool`."""
    de, ser = handler.request_deserializer, handler.response_serializer
    for kind, make in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                       ("unary_stream", grpc.unary_stream_rpc_method_handler),
                       ("stream_unary", grpc.stream_unary_rpc_method_handler),
                       ("stream_stream", grpc.stream_stream_rpc_method_handler)):  # fmt: skip
        behavior = getattr(handler, kind)
        if behavior is not None:
            return make(on_pool(behavior, pool), request_deserializer=de,
                        response_serializer=ser)  # fmt: skip
    return handler
