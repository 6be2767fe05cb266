"""Limits and failure paths over the wire: message size, metadata size, concurrency cap,
deadlines, shutdown draining, unexpected exceptions, engine errors and client retries.

Each test asserts the status the caller sees and, where the server survives, that health still
answers SERVING. Slow calls come from `SlowDb` (an engine wrapper), never from sleeps in
production code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, SlowDb, health_status

import vecdb
from vecdb.errors import FormatError, Unavailable
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer


def test_request_above_max_message_size_is_resource_exhausted(
    start_server: Callable[..., VecdbServer],
) -> None:
    """A raw 2 MiB upsert to a server capped at 1 MiB is refused by grpcio; nothing is
    written. The SDK, not told the cap, learns it from that refusal and sends the rows in
    parts."""
    srv = start_server(limits={"max_message_bytes": 1024 * 1024})
    x = np.ones((2048, 256), np.float32)
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        c.create_collection("big", 256, "l2", index="flat")
        req = pb.UpsertRequest(collection="big", ids=pb.Ids(ints=pb.IntIds(values=range(2048))),
                               vectors=pb.Vectors(dim=256, count=2048, data=x.tobytes()))  # fmt: skip
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.VectorDBStub(ch).Upsert(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.count("big") == 0
        assert c.upsert("big", list(range(2048)), x) == 2048
        assert c.count("big") == 2048
    assert health_status(srv.port) == "SERVING"


def test_oversized_metadata_is_resource_exhausted(server: VecdbServer) -> None:
    """Metadata above grpcio's 16 KiB hard limit is refused before our code runs."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.VectorDBStub(ch).ListCollections(
                pb.ListCollectionsRequest(), metadata=(("x-big", "v" * 20_000),), timeout=5
            )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert health_status(server.port) == "SERVING"


def test_short_client_deadline_is_deadline_exceeded(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb
) -> None:
    """A 0.2 s deadline on a 1 s call raises DeadlineExceeded; the server keeps serving."""
    srv = start_server(db=slow_db)
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=0.2) as c:
        with pytest.raises(vecdb.DeadlineExceeded):
            c.search("base", np.ones(DIM), k=1)
    assert health_status(srv.port) == "SERVING"


def test_shutdown_drains_in_flight_calls_and_refuses_new_ones(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb
) -> None:
    """stop() lets a running search finish; a call arriving meanwhile gets UNAVAILABLE."""
    slow_db.delay = 1.0
    srv = start_server(db=slow_db)
    results: dict[str, Any] = {}
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        t = threading.Thread(target=lambda: results.update(res=c.search("base", np.ones(DIM), k=2)))
        t.start()
        assert slow_db.entered.wait(5)
        stopper = threading.Thread(target=srv.stop, kwargs={"grace": 5.0})
        stopper.start()
        deadline = time.monotonic() + 5
        while health_status(srv.port) != "NOT_SERVING" and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(vecdb.Unavailable):
            c.create_collection("late", DIM)  # not idempotent: no retry, one refusal
        t.join(10)
        stopper.join(10)
    assert results["res"].ids.tolist() == [[1, 2]] or results["res"].ids.tolist() == [[2, 1]]


class _Exploding:
    """An engine whose `count` fails like a bug, `get` like corruption, `list_collections`
    is briefly unavailable and `create_collection` always unavailable."""

    def __init__(self) -> None:
        self.list_calls = 0
        self.create_calls = 0

    def count(self, name: str) -> int:
        raise RuntimeError("secret internal detail /etc/passwd")

    def get(self, name: str, ids: Any) -> Any:
        raise FormatError("postings file: CRC mismatch at page 3")

    def list_collections(self) -> list[Any]:
        self.list_calls += 1
        if self.list_calls <= 2:
            raise Unavailable("engine read-only after an I/O error")
        return []

    def create_collection(self, *args: Any, **kwargs: Any) -> Any:
        self.create_calls += 1
        raise Unavailable("engine read-only after an I/O error")

    def close(self) -> None:
        pass


def test_unexpected_exception_is_internal_with_request_id_only(
    start_server: Callable[..., VecdbServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A bug becomes INTERNAL with a generic message carrying the request id; the exception
    text stays in the server log, never on the wire."""
    srv = start_server(db=_Exploding())
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        with caplog.at_level(logging.ERROR, logger="vecdb.server"):
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.VectorDBStub(ch).Count(pb.CountRequest(collection="x"), timeout=5)
    err = info.value
    rid = dict(err.trailing_metadata())["x-request-id"]
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == f"internal error (request id {rid})"
    assert "secret" not in err.details()
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == rid]
    assert logged and logged[0].exc_info is not None
    assert health_status(srv.port) == "SERVING"
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c, pytest.raises(vecdb.Internal):
        c.count("x")


def test_engine_errors_keep_their_class_across_the_wire(
    start_server: Callable[..., VecdbServer],
) -> None:
    """DATA_LOSS from the engine arrives as `vecdb.DataLoss` (FormatError's code)."""
    srv = start_server(db=_Exploding())
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        with pytest.raises(vecdb.DataLoss, match="CRC mismatch"):
            c.get("x", [1])


def test_idempotent_calls_retry_on_unavailable_others_do_not(
    start_server: Callable[..., VecdbServer],
) -> None:
    """list_collections succeeds after two UNAVAILABLE answers; create_collection is tried
    once and raises Unavailable."""
    db = _Exploding()
    srv = start_server(db=db)
    with vecdb.connect(f"127.0.0.1:{srv.port}") as c:
        assert c.list_collections() == []
        assert db.list_calls == 3
        with pytest.raises(vecdb.Unavailable):
            c.create_collection("x", DIM)
        assert db.create_calls == 1
