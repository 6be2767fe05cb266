"""The guard's per-call fast path (issue 12) keeps every feature: a fresh request id on every
call, each key held to its own role although the guarded handler of a (method, caller) pair
is built once and reused, revocation effective on a connection whose route is cached, the
in-flight gauge and the per-(method, code) series counting what they counted before."""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, SlowDb

import vecdb
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

ROOT = "speed-root-admin-key-01"
READER = "speed-reader-key-000001"
AUTH = {"admin_key": ROOT, "keys": [{"key": READER, "role": "read"}]}


def _scrape(srv: VecdbServer) -> str:
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in the exposition")


def test_every_call_gets_its_own_request_id(server: VecdbServer) -> None:
    """Successful calls carry `x-request-id` (16 hex digits), a different one each time."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.VectorDBStub(ch)
        seen = []
        for _ in range(50):
            _, call = stub.CollectionExists.with_call(pb.CollectionExistsRequest(name="x"))
            rid = dict(call.trailing_metadata())["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{16}", rid)
            seen.append(rid)
        with pytest.raises(grpc.RpcError) as info:  # and errors their own
            stub.GetCollection(pb.GetCollectionRequest(name="missing"))
        seen.append(dict(info.value.trailing_metadata())["x-request-id"])
    assert len(set(seen)) == len(seen)


def test_cached_routes_keep_each_keys_role_and_revocation(
    start_server: Callable[..., VecdbServer],
) -> None:
    """An admin's Upsert does not open Upsert to a reader (same method, other caller), a
    reader's Count does not make Count skip authentication, and a key revoked after its
    calls were served is refused on the same connection."""
    srv = start_server(auth=AUTH)
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target, api_key=ROOT) as root, \
            vecdb.connect(target, api_key=READER) as reader:  # fmt: skip
        root.create_collection("c", DIM, "l2", index="flat")
        for i in range(3):  # the admin's route for Upsert is built, then reused
            assert root.upsert("c", [i], np.ones((1, DIM))) == 1
        for _ in range(3):
            with pytest.raises(vecdb.PermissionDenied):
                reader.upsert("c", [9], np.ones((1, DIM)))
            assert reader.count("c") == 3
        with vecdb.connect(target) as anonymous, pytest.raises(vecdb.Unauthenticated):
            anonymous.count("c")
        made = root.create_api_key("read")
        with vecdb.connect(target, api_key=made.key) as temp:
            assert temp.count("c") == 3
            assert temp.count("c") == 3  # served from its cached route
            root.revoke_api_key(made.info.id)
            with pytest.raises(vecdb.Unauthenticated):
                temp.count("c")


def test_inflight_gauge_and_series_count_calls(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb
) -> None:
    """`vecdb_inflight_requests` shows a running call and drops back to 0; requests and
    errors are counted per (method, code) on repeated calls."""
    slow_db.delay = 1.0
    srv = start_server(db=slow_db, metrics={"enabled": True, "port": 0})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(
            c.search("base", np.ones((1, DIM), np.float32), k=1)))  # fmt: skip
        t.start()
        assert slow_db.entered.wait(10)
        assert _metric(_scrape(srv), "vecdb_inflight_requests") == 1.0
        t.join(20)
        assert len(result) == 1
        assert _metric(_scrape(srv), "vecdb_inflight_requests") == 0.0
        for _ in range(3):
            assert c.count("base") == 2
            with pytest.raises(vecdb.NotFound):
                c.count("missing")
    text = _scrape(srv)
    assert _metric(text, 'vecdb_requests_total{code="OK",method="Count"}') == 3.0
    assert _metric(text, 'vecdb_requests_total{code="NOT_FOUND",method="Count"}') == 3.0
    assert _metric(text, 'vecdb_request_errors_total{code="NOT_FOUND",method="Count"}') == 3.0
    assert 'vecdb_request_errors_total{code="OK"' not in text
    assert _metric(text, 'vecdb_request_seconds_count{method="Count"}') == 6.0
    assert _metric(text, 'vecdb_requests_total{code="OK",method="Search"}') == 1.0
