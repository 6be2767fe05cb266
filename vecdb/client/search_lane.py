"""A remote client's search lane: its single searches on one long-lived SearchStream.

Issue 12: a unary gRPC call pays its set-up on every query (a new call, its metadata, the
server handing it to a thread, the status at its end); a stream pays that once. `SearchLane`
keeps one SearchStream per `RemoteClient` and sends a search on it when the lane is free; any
other caller of the moment (another thread), and any search the lane cannot answer, takes the
usual Search call. When the server answers a request on the stream with an error, that is
the caller's error (retried by the client's usual rule, as a Search's would be). When the
stream fails for any other reason (the server ended it as idle or at shutdown, refused it as
one too many, does not know the method, the connection broke) the request goes out again as
a Search: a search is a read, so sending it again is safe. So the lane changes latency only,
never answers or errors.

The stream has no deadline of its own: each request carries its call's time budget
(`timeout_ms`, which the server's guard and a router's fan-out count down as they would a
unary call's deadline), and a watchdog thread (alive while the stream is open) cancels the
stream when the request in flight passes its deadline, so a search waits no longer than a
Search call would (to within WATCH_EVERY). The watchdog also closes the stream
after CLOSE_IDLE seconds without a search, before the server's own idle limit would.
After the server refuses a stream as one too many the lane rests (RetryInfo's delay, else
REST_AFTER_REFUSAL seconds); a server without SearchStream (UNIMPLEMENTED) is not asked again
for REST_UNIMPLEMENTED. `AsyncSearchLane` is the same for the async client, on its event
loop; `_Lane` holds what the two share.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from vecdb.client.plain_requests import AnySearch
from vecdb.errors import VecdbError
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb

WATCH_EVERY = 0.05  # seconds between two looks of the watchdog at the request in flight
CLOSE_IDLE = 2.0  # seconds without a search after which the client closes its stream
REST_AFTER_REFUSAL = 5.0  # seconds without the lane after STREAMS_FULL without RetryInfo
REST_UNIMPLEMENTED = 600.0  # ... after a server that has no SearchStream
MAX_TIMEOUT_MS = (1 << 32) - 1  # SearchRequest.timeout_ms is a uint32 (49 days)
STREAMS_FULL = "STREAMS_FULL"  # the reason of a server's refusal of one stream too many


def _vecdb_error(exc: Any) -> VecdbError | None:
    """The vecdb error of a grpc error that carries vecdb's details trailer (only vecdb's
    guard sends it), else None."""
    for item in exc.trailing_metadata() or ():
        key = item[0] if isinstance(item, tuple) else item.key
        if key == status.DETAILS_KEY:
            return status.error_of(exc)
    return None


def answered(exc: Any) -> VecdbError | None:
    """The server's error for the request a stream failed with (`exc`, a grpc error), or
    None. A status from vecdb's guard other than the stream's own refusal (STREAMS_FULL)
    answers the request: the caller gets it, retried by its usual rule, rather than sending
    the request again as a first Search call. Anything else (a broken connection, a stream
    ended or cancelled, a server without the method) says nothing of the request."""
    err = _vecdb_error(exc)
    return None if err is None or err.reason == STREAMS_FULL else err


class _Lane:
    """What both lanes keep: whether the lane may be used now, the counters, the request's
    budget and the reading of a failure."""

    def __init__(self, stub: Any, metadata: Any, enabled: bool = True) -> None:
        self._stub = stub
        self._metadata = metadata
        self._rest_until = 0.0  # monotonic time before which the lane is not used
        self._closed = not enabled  # a closed lane sends nothing: every search is a Search call
        self.sent = 0  # searches answered on the stream (for tests and benchmarks)
        self.opened = 0  # streams opened

    def _usable(self) -> bool:
        return not self._closed and time.monotonic() >= self._rest_until

    @staticmethod
    def _budget(req: AnySearch, deadline: float) -> float:
        """Stamp `req` with the milliseconds left to `deadline` (its `timeout_ms`, within the
        field's range); returns the seconds left."""
        left = deadline - time.monotonic()
        req.timeout_ms = min(max(1, math.ceil(left * 1e3)), MAX_TIMEOUT_MS)
        return max(0.0, left)

    def _failed(self, exc: Any) -> VecdbError | None:
        """After the stream failed with the grpc error `exc`: rest when the next stream would
        be refused alike (one too many, or no such method), and return the server's error
        for the request (`answered`) or None."""
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            self._rest_until = time.monotonic() + REST_UNIMPLEMENTED
            return None
        err = _vecdb_error(exc)
        if err is not None and err.reason == STREAMS_FULL:
            self._rest_until = time.monotonic() + (err.retry_after or REST_AFTER_REFUSAL)
            return None
        return err


class _Stream:
    """One open SearchStream: its request queue and response iterator."""

    def __init__(self, stub: Any, metadata: Any) -> None:
        self.requests: queue.SimpleQueue[AnySearch | None] = queue.SimpleQueue()
        self.responses = stub.SearchStream(self._feed(), metadata=metadata)
        self.deadline = 0.0  # monotonic deadline of the request in flight (0: none)
        self.last = time.monotonic()  # when the last search on it ended (or it opened)

    def _feed(self) -> Iterator[AnySearch]:
        while True:
            item = self.requests.get()
            if item is None:
                return  # half-close: the server's loop ends
            yield item

    def close(self) -> None:
        self.requests.put(None)
        self.responses.cancel()


class SearchLane(_Lane):
    """The single searches of one client on one SearchStream (see the module docstring)."""

    def __init__(self, stub: Any, metadata: Any, enabled: bool = True) -> None:
        super().__init__(stub, metadata, enabled)
        self._lock = threading.Lock()  # one search on the stream at a time
        self._stream: _Stream | None = None

    def search(self, req: AnySearch, deadline: float) -> pb.SearchResponse | VecdbError | None:
        """The answer to `req` over the stream; the server's error for it (`answered`); or
        None: send it as a Search call (the lane is busy with another caller's search,
        resting, or the stream failed)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if not self._usable():
                return None
            s = self._stream
            if s is None:
                s = self._stream = _Stream(self._stub, self._metadata)
                self.opened += 1
                threading.Thread(target=self._watch, args=(s,), name="vecdb-search-lane",
                                 daemon=True).start()  # fmt: skip
            s.deadline = deadline
            self._budget(req, deadline)
            s.requests.put(req)
            try:
                resp: pb.SearchResponse = next(s.responses)
            except StopIteration:  # the server ended the stream (it is shutting down)
                self._drop(s)
                return None
            except grpc.RpcError as exc:
                self._drop(s)
                return self._failed(exc)
            finally:
                s.deadline = 0.0
                s.last = time.monotonic()
            self.sent += 1
            return resp
        finally:
            self._lock.release()

    def _drop(self, s: _Stream) -> None:
        """Forget and close `s` (with the lock held)."""
        if self._stream is s:
            self._stream = None
        s.close()

    def _watch(self, s: _Stream) -> None:
        """Cancel `s` when its search in flight passes its deadline; close it when idle."""
        while self._stream is s:
            time.sleep(WATCH_EVERY)
            now = time.monotonic()
            if s.deadline and now > s.deadline:
                s.responses.cancel()  # the waiting search gets CANCELLED, then its Search
                return  # call, past the deadline, DEADLINE_EXCEEDED
            if not s.deadline and now - s.last > CLOSE_IDLE and self._lock.acquire(False):
                try:
                    if self._stream is s and not s.deadline:
                        self._drop(s)
                        return
                finally:
                    self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._stream is not None:
                self._drop(self._stream)


class AsyncSearchLane(_Lane):
    """`SearchLane` for the async client (`grpc.aio`): the same rules, on the event loop.
    A grpc.aio stream is written and read directly (no feeding thread), the deadline is a
    `wait_for` around the exchange, and a timer closes the stream after CLOSE_IDLE seconds
    without a search."""

    def __init__(self, stub: Any, metadata: Any, enabled: bool = True) -> None:
        super().__init__(stub, metadata, enabled)
        self._busy = False  # a search is on the stream (one at a time; the loop is one thread)
        self._call: Any = None  # the open grpc.aio stream-stream call
        self._timer: asyncio.TimerHandle | None = None  # the idle check of the open stream
        self._last = 0.0  # when the last search on it ended (or it opened)

    async def search(
        self, req: AnySearch, deadline: float
    ) -> pb.SearchResponse | VecdbError | None:
        """As `SearchLane.search`."""
        if self._busy or not self._usable():
            return None
        self._busy = True
        try:
            call = self._call
            if call is None:
                call = self._call = self._stub.SearchStream(metadata=self._metadata)
                self.opened += 1
                self._last = time.monotonic()
                self._timer = asyncio.get_running_loop().call_later(CLOSE_IDLE, self._idle)
            left = self._budget(req, deadline)
            try:
                resp = await asyncio.wait_for(self._exchange(call, req), left)
            except (TimeoutError, grpc.RpcError, StopAsyncIteration) as exc:
                self._drop(call)
                return self._failed(exc) if isinstance(exc, grpc.aio.AioRpcError) else None
            finally:
                self._last = time.monotonic()
            self.sent += 1
            return resp
        finally:
            self._busy = False

    @staticmethod
    async def _exchange(call: Any, req: AnySearch) -> pb.SearchResponse:
        await call.write(req)
        resp = await call.read()
        if resp is grpc.aio.EOF:  # the server ended the stream (it is shutting down)
            raise StopAsyncIteration
        return resp  # type: ignore[no-any-return]

    def _drop(self, call: Any) -> None:
        if self._call is call:
            self._call = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        call.cancel()

    def _idle(self) -> None:
        """The timer: close the open stream once idle for CLOSE_IDLE, else look again then."""
        call, self._timer = self._call, None
        if call is None:
            return
        idle = time.monotonic() - self._last
        if not self._busy and idle >= CLOSE_IDLE:
            self._drop(call)
            return
        wait = CLOSE_IDLE if self._busy else CLOSE_IDLE - idle
        self._timer = asyncio.get_running_loop().call_later(wait, self._idle)

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._drop(self._call)
