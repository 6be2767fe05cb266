"""Single searches on one SearchStream (issue 12): the SDK's lane against a real server on
loopback. The answers and errors are those of Search; streams past the server's bound, idle
ones, a server without the method, deadlines, many threads and shutdown all end in the same
answers through Search."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, SlowDb, server_config

import vecdb
from vecdb.client import search_lane
from vecdb.client.remote import search_request
from vecdb.engine import Database
from vecdb.errors import InvalidArgument
from vecdb.rpc.status import to_status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config
from vecdb.server.metrics import ServerMetrics
from vecdb.server.servicer import VectorDBServicer

N = 300


def _fill(c: vecdb.Client) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    c.create_collection("s", DIM, "l2", index="flat")
    c.upsert("s", list(range(N)), x)
    return x


def _exact(x: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(((x - q) ** 2).sum(1), kind="stable")[:k]]


def _open_streams(srv: VecdbServer, within: float = 5.0) -> int:
    """The server's open SearchStreams once none are left, or after `within` seconds."""
    assert srv._guard is not None
    deadline = time.monotonic() + within
    while srv._guard.streams.count and time.monotonic() < deadline:
        time.sleep(0.02)
    return srv._guard.streams.count


def _metrics(srv: VecdbServer) -> Callable[[str, dict[str, str]], float | None]:
    assert srv._metrics is not None
    return srv._metrics.registry.get_sample_value


def test_single_searches_ride_one_stream_and_count_as_searches(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        q = np.random.default_rng(1).standard_normal((25, DIM)).astype(np.float32)
        for i in range(25):
            got = c.search("s", q[i], k=5)
            assert got.ids[0].tolist() == _exact(x, q[i], 5)
        lane = c._lane  # type: ignore[attr-defined]
        assert lane.sent == 25 and lane.opened == 1
        assert srv._guard is not None and srv._guard.streams.count == 1
        get = _metrics(srv)
        assert get("vecdb_requests_total", {"method": "Search", "code": "OK"}) == 25
    assert _open_streams(srv) == 0  # the client closed its stream: the server's loop ends


def test_a_failing_request_raises_what_search_raises_and_the_lane_goes_on(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        c.search("s", x[0], k=3)
        with pytest.raises(InvalidArgument) as streamed:
            c.search("s", np.ones(DIM + 1, np.float32), k=3)
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:  # the same request, unary
            req = search_request("s", np.ones(DIM + 1, np.float32), 3, None, None, False,
                                 False, None, None)  # fmt: skip
            with pytest.raises(grpc.RpcError) as unary:
                pb_grpc.VectorDBStub(ch).Search(req, timeout=10)  # type: ignore[no-untyped-call]
        assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert streamed.value.message == unary.value.details()
        with pytest.raises(vecdb.NotFound):
            c.search("nope", x[0], k=3)
        assert c.search("s", x[7], k=1).ids[0, 0] == 7
        lane = c._lane  # type: ignore[attr-defined]
        assert lane.opened == 3 and lane.sent == 2  # each failure ended its stream


def test_streams_past_the_bound_are_answered_by_search(
    start_server: Callable[..., VecdbServer],
) -> None:
    """With room for one stream, a second client's searches go out as Search calls (its lane
    rests after the STREAMS_FULL refusal), answered the same."""
    srv = start_server(limits={"max_search_streams": 1})
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target, timeout=20) as a, vecdb.connect(target, timeout=20) as b:
        x = _fill(a)
        a.search("s", x[1], k=1)
        for i in range(5):
            assert b.search("s", x[i], k=1).ids[0, 0] == i
        assert a._lane.sent == 1  # type: ignore[attr-defined]
        assert b._lane.sent == 0 and b._lane.opened == 1  # type: ignore[attr-defined]
        assert srv._guard is not None and srv._guard.streams.count == 1
        get = _metrics(srv)
        assert get("vecdb_requests_total", {"method": "Search", "code": "OK"}) == 6
        assert get("vecdb_rejected_requests_total", {"reason": "queue_full"}) in (None, 0.0)


def test_no_streams_when_the_server_allows_none(start_server: Callable[..., VecdbServer]) -> None:
    srv = start_server(limits={"max_search_streams": 0})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        assert c.search("s", x[3], k=1).ids[0, 0] == 3
        assert c._lane.sent == 0  # type: ignore[attr-defined]


def test_idle_streams_are_ended_by_the_server(start_server: Callable[..., VecdbServer]) -> None:
    srv = start_server(limits={"search_stream_idle_seconds": 0.2})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        c.search("s", x[0], k=1)
        assert _open_streams(srv) == 0
        assert srv._guard is not None and srv._guard.streams.reaped == 1
        assert c.search("s", x[9], k=1).ids[0, 0] == 9  # through Search, or a new stream
        assert c.search("s", x[8], k=1).ids[0, 0] == 8


def test_the_client_closes_an_idle_stream(
    start_server: Callable[..., VecdbServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_lane, "CLOSE_IDLE", 0.1)
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        c.search("s", x[0], k=1)
        assert _open_streams(srv) == 0
        assert srv._guard is not None and srv._guard.streams.reaped == 0
        assert c.search("s", x[5], k=1).ids[0, 0] == 5
        assert c._lane.opened == 2 and c._lane.sent == 2  # type: ignore[attr-defined]


def test_a_server_without_search_stream_is_asked_by_search(tmp_path: Path) -> None:
    """A plain grpcio server offering only Search (an older server): UNIMPLEMENTED once, then
    every search goes out as Search, answered."""
    db = Database(tmp_path / "db")
    x = _fill(db)  # type: ignore[arg-type]
    servicer = VectorDBServicer(db, ServerMetrics(), 4)
    handler = grpc.method_handlers_generic_handler("vecdb.v1.VectorDB", {
        "Search": grpc.unary_unary_rpc_method_handler(
            servicer.Search, request_deserializer=pb.SearchRequest.FromString,
            response_serializer=pb.SearchResponse.SerializeToString)})  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with vecdb.connect(f"127.0.0.1:{port}", timeout=20) as c:
            for i in range(4):
                assert c.search("s", x[i], k=1).ids[0, 0] == i
            lane = c._lane  # type: ignore[attr-defined]
            assert lane.opened == 1 and lane.sent == 0
            assert lane._rest_until - time.monotonic() > search_lane.REST_UNIMPLEMENTED - 60
    finally:
        server.stop(0)
        db.close()


def test_a_search_on_the_stream_keeps_its_deadline(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb
) -> None:
    """A search slower than the client's timeout fails DEADLINE_EXCEEDED near the timeout
    (the request's budget on the server, the watchdog in the client), as a Search call does."""
    slow_db.delay = 3.0
    srv = start_server(db=slow_db)
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(vecdb.DeadlineExceeded):
            c.search("base", np.ones(DIM, np.float32), k=1)
        assert time.monotonic() - t0 < 1.5


def test_many_threads_share_one_client(start_server: Callable[..., VecdbServer]) -> None:
    """8 threads x 30 searches on one client: every answer right; the lane carried some, the
    rest went out as Search."""
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        errors: list[BaseException] = []

        def run(t: int) -> None:
            try:
                for i in range(30):
                    j = (t * 31 + i) % N
                    assert c.search("s", x[j], k=1).ids[0, 0] == j
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        get = _metrics(srv)
        assert get("vecdb_requests_total", {"method": "Search", "code": "OK"}) == 240
        assert 0 < c._lane.sent <= 240  # type: ignore[attr-defined]


def test_shutdown_does_not_wait_for_an_idle_stream(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server(server={"grace_seconds": 10.0})
    c = vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20)
    try:
        x = _fill(c)
        c.search("s", x[0], k=1)
        assert srv._guard is not None and srv._guard.streams.count == 1
        assert srv._guard.drain(2.0)  # what stop does first: no call is running
        assert _open_streams(srv, within=2.0) == 0  # ... and the idle stream ends at once
        srv.stop(grace=10.0)
    finally:
        c.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_search_streams", -1), ("max_search_streams", 5000),
     ("search_stream_idle_seconds", 0.0), ("search_stream_idle_seconds", float("nan")),
     ("max_upsert_streams", -1), ("max_upsert_streams", 5000),
     ("upsert_stream_idle_seconds", 0.05), ("upsert_stream_idle_seconds", float("inf"))],
)  # fmt: skip
def test_bad_stream_limits_are_refused_by_name(key: str, value: float) -> None:
    with pytest.raises(InvalidArgument) as info:
        load_config(env={}, overrides={"limits": {key: value}})
    assert info.value.field == f"limits.{key}"


def test_a_very_long_timeout_still_rides_the_stream(
    start_server: Callable[..., VecdbServer],
) -> None:
    """The request's budget is a uint32 of milliseconds: a longer timeout is clamped to it."""
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=5e6) as c:  # 58 days
        x = _fill(c)
        assert c.search("s", x[4], k=1).ids[0, 0] == 4
        assert c._lane.sent == 1  # type: ignore[attr-defined]


def test_the_async_client_rides_its_own_stream(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The async client: single searches on one stream, a failing request raises what Search
    raises, concurrent tasks share it (the others send Search), the idle timer closes it, and
    a search slower than the timeout fails DEADLINE_EXCEEDED near it."""
    monkeypatch.setattr(search_lane, "CLOSE_IDLE", 0.2)
    srv = start_server()
    slow = start_server(db=slow_db)
    slow_db.delay = 3.0

    async def run() -> tuple[list[int], str, int, int, int, float]:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as c:
            x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
            await c.create_collection("s", DIM, "l2", index="flat")
            await c.upsert("s", list(range(N)), x)
            firsts = [int((await c.search("s", x[i], k=1)).ids[0, 0]) for i in range(10)]
            try:
                await c.search("s", np.ones(DIM + 1, np.float32), k=1)
                code = "OK"
            except InvalidArgument as exc:
                code = exc.code
            many = await asyncio.gather(*(c.search("s", x[i], k=1) for i in range(20)))
            firsts += [int(r.ids[0, 0]) for r in many]
            await asyncio.sleep(0.6)  # idle: the timer closes the stream
            open_after_idle = srv._guard.streams.count if srv._guard else -1
            lane = c._lane  # type: ignore[attr-defined]
            sent, opened = lane.sent, lane.opened
        async with vecdb.AsyncClient(f"127.0.0.1:{slow.port}", timeout=0.5) as s:
            t0 = time.monotonic()
            with pytest.raises(vecdb.DeadlineExceeded):
                await s.search("base", np.ones(DIM, np.float32), k=1)
            waited = time.monotonic() - t0
        return firsts, code, open_after_idle, sent, opened, waited

    firsts, code, open_after_idle, sent, opened, waited = asyncio.run(run())
    assert firsts == list(range(10)) + list(range(20))
    assert code == "INVALID_ARGUMENT"
    assert 11 <= sent < 30 and opened == 2  # gathered tasks beyond the first sent Search
    assert open_after_idle == 0
    assert waited < 1.5


def test_only_the_servers_answer_to_a_request_is_raised_from_the_stream() -> None:
    """An error the guard gave the request (its status has vecdb's details) is the caller's;
    the refusal of the stream itself, or a failure without vecdb's details (a broken
    connection, a cancelled stream, a server without the method), sends it again as Search."""

    class Failed(grpc.RpcError):  # what a client receives
        def __init__(self, st: Any) -> None:
            self.st = st

        def code(self) -> grpc.StatusCode:
            return self.st.code  # type: ignore[no-any-return]

        def details(self) -> str:
            return self.st.details  # type: ignore[no-any-return]

        def trailing_metadata(self) -> Any:
            return self.st.trailing_metadata

    bad = search_lane.answered(Failed(to_status(InvalidArgument("bad k", field="k"), "r1")))
    assert isinstance(bad, InvalidArgument) and bad.field == "k" and bad.message == "bad k"
    down = vecdb.Unavailable("shard 1 down", reason="SHARD_UNAVAILABLE")
    assert isinstance(search_lane.answered(Failed(to_status(down, "r2"))), vecdb.Unavailable)
    full = vecdb.ResourceExhausted("full", reason="STREAMS_FULL", retry_after=5.0)
    assert search_lane.answered(Failed(to_status(full, "r3"))) is None
    bare = grpc.Status()
    bare.code, bare.details, bare.trailing_metadata = grpc.StatusCode.UNAVAILABLE, "reset", ()
    assert search_lane.answered(Failed(bare)) is None
    # The lane rests only when the next stream would be refused alike: one too many (for
    # RetryInfo's delay) or no such method; a tenant's quota refusal is its request's.
    lane = search_lane.SearchLane(None, ())
    quota = vecdb.ResourceExhausted("over quota", reason="TENANT_RATE_QUOTA", retry_after=9.0)
    assert isinstance(lane._failed(Failed(to_status(quota, "r4"))), vecdb.ResourceExhausted)
    assert lane._usable()
    assert lane._failed(Failed(to_status(full, "r5"))) is None and not lane._usable()
    assert 4.0 < lane._rest_until - time.monotonic() <= 5.0
    unknown = grpc.Status()
    unknown.code, unknown.details, unknown.trailing_metadata = (
        grpc.StatusCode.UNIMPLEMENTED,
        "Method not found!",
        (),
    )
    lane._rest_until = 0.0
    assert lane._failed(Failed(unknown)) is None and not lane._usable()


def test_an_error_answered_on_the_stream_takes_the_retry_rule(
    start_server: Callable[..., VecdbServer],
) -> None:
    """`_call(failed=...)`: the stream's answer counts as the first attempt: UNAVAILABLE is
    retried after a backoff (here answered), anything else is raised without a call."""
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        _fill(c)
        req = pb.CollectionExistsRequest(name="s")
        down = vecdb.Unavailable("shard 1 down", reason="SHARD_UNAVAILABLE")
        assert c._call("CollectionExists", req, idempotent=True, failed=down).exists
        bad = InvalidArgument("bad k", field="k")
        with pytest.raises(InvalidArgument) as info:
            c._call("CollectionExists", req, idempotent=True, failed=bad)
        assert info.value is bad
        with pytest.raises(vecdb.Unavailable):  # not retried: the call is not idempotent
            c._call("CollectionExists", req, idempotent=False, failed=down)


def test_a_client_goes_on_across_a_server_restart(tmp_path: Path) -> None:
    """The server stops under an open stream and comes back on the same port and data: the
    next search (the stream broken, so sent again as Search) and the ones after it (on a new
    stream) are answered."""
    srv = VecdbServer(server_config(tmp_path / "data")).start()  # the server picks its port
    port = srv.port
    with vecdb.connect(f"127.0.0.1:{port}", timeout=20) as c:
        x = _fill(c)
        assert c.search("s", x[1], k=1).ids[0, 0] == 1
        srv.stop(grace=0)
        srv = VecdbServer(server_config(tmp_path / "data", server={"port": port})).start()
        try:
            for i in range(2, 6):
                assert c.search("s", x[i], k=1).ids[0, 0] == i
            lane = c._lane  # type: ignore[attr-defined]
            assert lane.opened >= 2 and lane.sent >= 4
        finally:
            srv.stop(grace=0)


def test_search_stream_false_sends_every_search_as_a_search_call(
    start_server: Callable[..., VecdbServer], tmp_path: Path
) -> None:
    """`search_stream=False` (sync and async): the same answers, no stream opened on either
    side, every search counted as a Search; the option is refused for a local database and
    when it is not a bool."""
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20, search_stream=False) as c:
        x = _fill(c)
        for i in range(5):
            assert c.search("s", x[i], k=3).ids[0].tolist() == _exact(x, x[i], 3)
        assert srv._guard is not None and srv._guard.streams.count == 0
        lane = c._lane  # type: ignore[attr-defined]
        assert lane.sent == 0 and lane.opened == 0

    async def run() -> tuple[list[int], int, int]:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", search_stream=False) as a:
            got = [int((await a.search("s", x[i], k=1)).ids[0, 0]) for i in range(5)]
            lane = a._lane  # type: ignore[attr-defined]
            return got, lane.sent, lane.opened

    got, sent, opened = asyncio.run(run())
    assert got == list(range(5)) and sent == 0 and opened == 0
    assert _metrics(srv)("vecdb_requests_total", {"method": "Search", "code": "OK"}) == 10
    with pytest.raises(InvalidArgument) as e:
        vecdb.connect(str(tmp_path / "local"), search_stream=False)
    assert e.value.field == "search_stream" and "remote targets only" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        vecdb.AsyncClient(str(tmp_path / "local"), search_stream=False)
    assert e.value.field == "search_stream"
    for bad in ("no", 0, None):
        with pytest.raises(InvalidArgument) as e:
            vecdb.connect(f"127.0.0.1:{srv.port}", search_stream=bad)  # type: ignore[arg-type]
        assert e.value.field == "search_stream"
    assert not (tmp_path / "local").exists()


def test_a_packed_batch_answers_what_the_engine_answers(
    start_server: Callable[..., VecdbServer], tmp_path: Path
) -> None:
    """A batch big enough to travel packed (`plain_requests.PackedSearch`) gets the engine's
    answer on the lane, as a Search call and through the async client."""
    from vecdb.client.plain_requests import PACK_MIN_BYTES

    srv = start_server()
    q = np.random.default_rng(2).standard_normal((PACK_MIN_BYTES // (4 * DIM) + 3, DIM))
    q = q.astype(np.float32)
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        x = _fill(c)
        lane = c.search("s", q, k=4)
        assert c._lane.sent == 1  # type: ignore[attr-defined]
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20, search_stream=False) as c:
        unary = c.search("s", q, k=4)

    async def run() -> vecdb.SearchResult:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as a:
            return await a.search("s", q, k=4)

    aio = asyncio.run(run())
    with vecdb.connect(str(tmp_path / "local")) as e:
        e.create_collection("s", DIM, "l2", index="flat")
        e.upsert("s", list(range(N)), x)
        want = e.search("s", q, k=4)
    for got in (lane, unary, aio):
        assert np.array_equal(got.ids, want.ids)
        assert np.allclose(got.distances, want.distances)
