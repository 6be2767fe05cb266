"""A remote client's `upsert_stream`: the caller's batches on one UpsertStream, acknowledged
as they become durable, and as Upsert calls when the server has no stream for them.

A server bounds its open UpsertStreams (`limits.max_upsert_streams`) and ends one that has
waited `limits.upsert_stream_idle_seconds` for a batch with every batch acknowledged (its
client sees CANCELLED): a stream holds a server thread while open. Neither ends the caller's
`upsert_stream`. A stream refused STREAMS_FULL, or ended CANCELLED by the server, is given up
and the batches it had not acknowledged (taken from the caller, sent or not) go again as
Upsert calls, in order, then the rest of the caller's batches: an upsert of the same rows is
idempotent, and each batch is still acknowledged once, in order. A batch the server refuses
ends it with the server's error named by the batch's seq and rows, as on the stream.

The sync client's stream reads the caller's batches on grpcio's thread (`Batches`); when the
stream is given up, the caller's thread waits for a batch being read there, then reads on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Iterator
from typing import Any, NamedTuple

import grpc
import grpc.aio

from vecdb.client import splits
from vecdb.errors import VecdbError
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb


class StreamAck(NamedTuple):
    """One acknowledged batch of `upsert_stream`: its position in the input and its size."""

    seq: int
    upserted: int


def gives_up(exc: Any, err: VecdbError) -> bool:
    """Whether a stream that failed with `exc` (`err`) is left for Upsert calls: refused for
    the server's bound on open streams, or ended by the server (idle, shutting down)."""
    return err.reason == "STREAMS_FULL" or exc.code() == grpc.StatusCode.CANCELLED


def batch_error(seq: int, err: VecdbError) -> VecdbError:
    """`err` of the Upsert calls of batch `seq` told as the stream tells it ("batch seq=S:
    vectors[R]...", R counted in the batch: `splits.sent` names it so)."""
    err.message = f"batch seq={seq}: {err.message}"
    err.args = (err.message,)
    return err


class Batches:
    """The caller's batches as requests, read by one thread at a time; those taken for the
    stream and not yet acknowledged are kept (seq -> request) until the stream acknowledges
    them, or `rest` hands them on once the stream is given up."""

    def __init__(self, requests: Iterable[pb.UpsertRequest]) -> None:
        self._source = enumerate(requests)
        self._reading = threading.Lock()  # held while a batch is read from the caller
        self._lock = threading.Lock()  # guards `taken`
        self.taken: dict[int, pb.UpsertRequest] = {}
        self.failure: BaseException | None = None  # the caller's batches raised it
        self._stopped = False  # the stream reads no more

    def take(self) -> tuple[int, pb.UpsertRequest] | None:
        """The next batch for the stream; None at the end, after the caller's error (kept in
        `failure`) or once the stream was given up."""
        with self._reading:
            item = None if self._stopped else self._next()
            if item is not None:
                with self._lock:
                    self.taken[item[0]] = item[1]
            return item

    def acknowledged(self, seq: int) -> None:
        with self._lock:
            self.taken.pop(seq, None)

    def rest(self) -> Iterator[tuple[int, pb.UpsertRequest]]:
        """Once the stream is given up: the batches it took and did not acknowledge, then the
        ones not read yet, in order. The batches taken go at once; a batch the stream's thread
        is reading (the caller's batches stalled) is waited for when it is next."""
        self._stopped = True
        while True:
            item: tuple[int, pb.UpsertRequest] | None = None
            with self._lock:
                if self.taken:
                    first = min(self.taken)
                    item = (first, self.taken.pop(first))
            if item is None:
                with self._reading:  # a read under way on the stream's thread ends first
                    if self.taken:
                        continue
                    item = self._next()
                if item is None:
                    return
            yield item

    def _next(self) -> tuple[int, pb.UpsertRequest] | None:
        if self.failure is not None:
            return None
        try:
            return next(self._source)
        except StopIteration:
            return None
        except BaseException as exc:  # reported after the good batches are acknowledged
            self.failure = exc
            return None


def upsert_stream(
    open_stream: Callable[[Iterator[pb.UpsertStreamRequest]], Any],
    upsert: Callable[[pb.UpsertRequest], int],
    requests: Iterable[pb.UpsertRequest],
    budget: splits.Budget,
    window: int | None,
    default_window: int,
) -> Iterator[StreamAck]:
    """The sync client's stream of `requests` (`open_stream` starts the call on a request
    iterator; `upsert` sends one request as Upsert calls and returns the rows upserted)."""
    batches = Batches(requests)
    if (yield from _on_stream(open_stream, batches, budget, window, default_window)):
        for seq, req in batches.rest():  # the stream was given up: Upsert calls
            try:
                n = upsert(req)
            except VecdbError as err:
                raise batch_error(seq, err) from None
            yield StreamAck(seq, n)
    if batches.failure is not None:
        raise batches.failure


def _on_stream(
    open_stream: Callable[[Iterator[pb.UpsertStreamRequest]], Any],
    batches: Batches,
    budget: splits.Budget,
    window: int | None,
    default_window: int,
) -> Generator[StreamAck, None, bool]:
    """Acknowledgements of the batches sent on one stream; returns whether it was given up
    (`gives_up`) with batches left for Upsert calls (`Batches.rest`)."""
    credits = threading.Condition()
    state = {"in_flight": 0, "window": window or default_window, "closed": False}
    parts = splits.StreamParts(budget)  # a batch over half a message goes in parts

    def messages() -> Iterator[pb.UpsertStreamRequest]:
        while (item := batches.take()) is not None:
            for msg in parts.messages(*item):
                with credits:
                    credits.wait_for(
                        lambda: state["in_flight"] < state["window"] or state["closed"]
                    )
                    if state["closed"]:
                        return
                    state["in_flight"] += 1
                yield msg

    def close() -> None:
        with credits:
            state["closed"] = True
            credits.notify_all()

    call = open_stream(messages())
    try:
        for ack in call:
            with credits:
                state["in_flight"] -= 1
                if window is None and ack.credits:
                    state["window"] = ack.credits
                credits.notify_all()
            done = parts.ack(ack)
            if done is not None:
                batches.acknowledged(done[0])
                yield StreamAck(*done)
    except grpc.RpcError as exc:
        err = status.error_of(exc)
        if not gives_up(exc, err):
            raise parts.error(err) from None
        return True
    finally:
        close()
        call.cancel()
    return False


async def aupsert_stream(
    call: Any,
    upsert: Callable[[pb.UpsertRequest], Awaitable[int]],
    requests: Iterable[pb.UpsertRequest],
    budget: splits.Budget,
    window: int | None,
    default_window: int,
) -> AsyncGenerator[StreamAck, None]:
    """The async client's stream of `requests` on the stream `call` (a `grpc.aio` call
    already started); `upsert` as for `upsert_stream`."""
    # The first message goes alone, then the window: a stream the server refuses at its
    # first message (key, role, tenant scope, quota, no such collection) fails with the
    # server's status. With more in flight, grpc.aio often failed the next write first and
    # reported INTERNAL "Internal error from Core" in its place (9 of 10 with 8 batches).
    in_flight, limit = 0, 1
    batches = Batches(requests)
    parts = splits.StreamParts(budget)  # see `upsert_stream`
    given_up = False
    try:
        try:
            while (item := batches.take()) is not None:
                for msg in parts.messages(*item):
                    while in_flight >= limit:  # backpressure: wait for an ack before more
                        ack = await call.read()
                        if ack is grpc.aio.EOF:
                            break
                        in_flight -= 1
                        limit = window or ack.credits or max(limit, default_window)
                        if (done := parts.ack(ack)) is not None:
                            batches.acknowledged(done[0])
                            yield StreamAck(*done)
                    try:
                        await call.write(msg)
                    except asyncio.InvalidStateError:  # ended by the server: its status says why
                        raise await _ended(call) from None
                    except grpc.aio.AioRpcError as exc:
                        if not _status_lost(exc):
                            raise
                        raise _StatusLost from None
                    in_flight += 1
            await call.done_writing()
            while (ack := await call.read()) is not grpc.aio.EOF:
                if (done := parts.ack(ack)) is not None:
                    batches.acknowledged(done[0])
                    yield StreamAck(*done)
        except grpc.aio.AioRpcError as exc:
            err = status.error_of(exc)
            if not gives_up(exc, err):
                raise parts.error(err) from None
            given_up = True
        except _StatusLost:  # the Upsert calls say why, if the server refuses them
            given_up = True
    finally:
        call.cancel()
    if given_up:
        for seq, req in batches.rest():
            try:
                n = await upsert(req)
            except VecdbError as err:
                raise batch_error(seq, err) from None
            yield StreamAck(seq, n)
    if batches.failure is not None:
        raise batches.failure


class _StatusLost(Exception):
    """A stream the server ended whose status grpc.aio lost (`_status_lost`)."""


def _status_lost(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a failed write's `exc` is grpc.aio's own INTERNAL "Internal error from Core"
    (no trailing metadata: no server said it) in place of the status the server ended the
    stream with: core failed the write as the server closed the stream (refused at once,
    STREAMS_FULL most often) and grpc.aio keeps INTERNAL as the call's status. Before, an
    async stream refused STREAMS_FULL raised Internal in ~1 of 15 tries instead of going on
    as Upsert calls."""
    return exc.code() == grpc.StatusCode.INTERNAL and not exc.trailing_metadata()


async def _ended(call: Any) -> grpc.aio.AioRpcError:
    """The status a stream `call` the server has ended finished with, as the error a failed
    read would have raised."""
    return grpc.aio.AioRpcError(await call.code(), await call.initial_metadata(),
                                await call.trailing_metadata(), await call.details())  # fmt: skip
