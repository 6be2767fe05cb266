"""Calls that hold a handler thread for long: UpsertStreams, bounded as SearchStreams are (at
most `limits.max_upsert_streams` open, a quarter of the workers; an idle one ended after
`limits.upsert_stream_idle_seconds`), and Optimize, which waits no longer than its caller.
Before, clients whose batch source stalled held every handler thread and other calls waited;
now a refused or ended stream's batches go as Upsert calls, each acknowledged once, in order,
nothing lost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from wire_helpers import DIM

import vecdb
from vecdb.errors import InvalidArgument
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

ROWS = 10  # per batch


def _batch(i: int) -> tuple[list[int], np.ndarray, None]:
    rng = np.random.default_rng(i)
    return list(range(i * ROWS, (i + 1) * ROWS)), rng.standard_normal((ROWS, DIM)), None


def _stalled(first: int, then: int, go: threading.Event) -> Iterator[Any]:
    """Batch `first`, then nothing until `go`, then batches first+1 .. first+then."""
    yield _batch(first)
    go.wait(30)
    for i in range(first + 1, first + 1 + then):
        yield _batch(i)


def _calls(srv: VecdbServer, method: str, code: str) -> float:
    assert srv._metrics is not None
    got = srv._metrics.registry.get_sample_value(
        "vecdb_requests_total", {"method": method, "code": code}
    )
    return got or 0.0


def test_streams_past_the_bound_go_as_upserts_and_held_ones_leave_threads(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Two streams held open by stalled sources (the bound), a third client's batches as
    Upsert calls, and another client's calls answered at once; all rows kept."""
    srv = start_server(limits={"max_upsert_streams": 2}, metrics={"enabled": True})
    target = f"127.0.0.1:{srv.port}"
    go = threading.Event()
    clients = [vecdb.connect(target, timeout=20, search_stream=False) for _ in range(4)]
    try:
        clients[0].create_collection("u", DIM, "l2", index="flat")
        held = []
        for n, c in enumerate(clients[:2]):  # batches 0 and 10 acknowledged, then a stall
            it = c.upsert_stream("u", _stalled(10 * n, 2, go))
            assert next(it) == (0, ROWS)
            held.append(it)
        assert srv._guard is not None and srv._guard.upserts.count == 2
        third = [tuple(a) for a in clients[2].upsert_stream("u", (_batch(i) for i in (20, 21, 22)))]
        assert third == [(0, ROWS), (1, ROWS), (2, ROWS)]
        assert _calls(srv, "UpsertStream", "RESOURCE_EXHAUSTED") == 1
        assert _calls(srv, "Upsert", "OK") == 3
        started = time.monotonic()
        assert clients[3].count("u") == 5 * ROWS
        assert time.monotonic() - started < 5
        go.set()
        for it in held:
            assert [tuple(a) for a in it] == [(1, ROWS), (2, ROWS)]
        assert clients[3].count("u") == 9 * ROWS
        got = clients[3].get("u", [21 * ROWS + 3])[0]
        np.testing.assert_allclose(got.vector, _batch(21)[1][3], rtol=1e-6)
    finally:
        go.set()
        for c in clients:
            c.close()


def test_a_refused_batch_after_the_bound_is_named_as_on_the_stream(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server(limits={"max_upsert_streams": 0})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")
        bad = ([99], np.ones((1, DIM + 1)), None)
        acks = c.upsert_stream("u", iter([_batch(0), bad, _batch(2)]))
        assert next(acks) == (0, ROWS)
        with pytest.raises(InvalidArgument) as info:
            next(acks)
        assert info.value.message.startswith("batch seq=1: ")
        assert c.count("u") == ROWS


def test_a_refused_streams_batch_is_acknowledged_while_the_source_stalls(
    start_server: Callable[..., VecdbServer],
) -> None:
    """The stream's thread had taken batch 0 and was waiting on the caller's source for the
    next when the server refused the stream: batch 0 goes as an Upsert call at once, not once
    the source yields again."""
    srv = start_server(limits={"max_upsert_streams": 0})
    go = threading.Event()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")
        acks = c.upsert_stream("u", _stalled(0, 1, go))
        with futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(next, acks)
            try:
                assert first.result(timeout=10) == (0, ROWS)
                assert not go.is_set()
            finally:
                go.set()
        assert [tuple(a) for a in acks] == [(1, ROWS)]
        assert c.count("u") == 2 * ROWS


def test_an_idle_stream_is_ended_and_its_batches_go_on(
    start_server: Callable[..., VecdbServer],
) -> None:
    """The server ends a stream waiting 0.3 s for a batch; the client's later batches are
    acknowledged all the same, as Upsert calls."""
    srv = start_server(limits={"upsert_stream_idle_seconds": 0.3}, metrics={"enabled": True})
    go = threading.Event()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")
        acks = c.upsert_stream("u", _stalled(0, 3, go))
        assert next(acks) == (0, ROWS)
        assert srv._guard is not None
        deadline = time.monotonic() + 10
        while srv._guard.upserts.reaped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv._guard.upserts.reaped == 1 and srv._guard.upserts.count == 0
        go.set()
        assert [tuple(a) for a in acks] == [(1, ROWS), (2, ROWS), (3, ROWS)]
        assert c.count("u") == 4 * ROWS
        codes = {
            c: _calls(srv, "UpsertStream", c)
            for c in ("OK", "CANCELLED", "INTERNAL", "UNAVAILABLE")
        }
        assert _calls(srv, "UpsertStream", "CANCELLED") == 1, codes
        assert _calls(srv, "Upsert", "OK") == 3


def test_the_async_client_goes_on_past_the_bound_and_an_idle_end(
    start_server: Callable[..., VecdbServer],
) -> None:
    """One stream allowed: a second client's batches go as Upsert calls; the first client,
    not asking for its next acknowledgement for a while, has its stream ended idle, and its
    batch not yet acknowledged then goes as an Upsert call."""
    srv = start_server(limits={"max_upsert_streams": 1, "upsert_stream_idle_seconds": 0.3})
    target = f"127.0.0.1:{srv.port}"

    async def run() -> tuple[list[Any], list[Any], int]:
        async with vecdb.AsyncClient(target, timeout=20) as a, vecdb.AsyncClient(target) as b:
            await a.create_collection("u", DIM, "l2", index="flat")
            held = a.upsert_stream("u", iter([_batch(0), _batch(1)]))
            first = [tuple(await held.__anext__())]
            second = [tuple(x) async for x in b.upsert_stream("u", iter([_batch(5), _batch(6)]))]
            assert srv._guard is not None
            while srv._guard.upserts.reaped == 0:  # the held stream ends idle
                await asyncio.sleep(0.05)
            first += [tuple(x) async for x in held]
            return first, second, await b.count("u")

    first, second, count = asyncio.run(asyncio.wait_for(run(), 60))
    assert first == [(0, ROWS), (1, ROWS)]
    assert second == [(0, ROWS), (1, ROWS)]
    assert count == 4 * ROWS


def test_an_optimize_whose_caller_gave_up_leaves_its_thread(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Optimize waits for its jobs no longer than the call's deadline: before, a call that
    timed out held its handler thread until the job ended (the worker paused here), so a
    client retrying a timed-out optimize could take every thread for the length of a build."""
    srv = start_server()
    db = srv._db
    assert db is not None and srv._guard is not None
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")
        c.upsert("u", *_batch(0)[:2])
        db.worker.job_lock.acquire()  # the optimize's job cannot run
        try:
            with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                stub = pb_grpc.VectorDBStub(ch)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.RpcError) as info:
                    stub.Optimize(pb.OptimizeRequest(collection="u"), timeout=0.5)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 5
            while srv._guard._active and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv._guard._active == 0  # the handler left while the job still waits
        finally:
            db.worker.job_lock.release()
        c.optimize("u")
        assert c.count("u") == ROWS
