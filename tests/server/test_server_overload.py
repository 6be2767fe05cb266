"""Overload and unauthenticated traffic: bursts queue instead of being refused, refusals past
the queue bound carry RetryInfo and are counted, health and reflection cannot starve VectorDB
calls, and a call without a valid key is refused before its body is decoded.

Every server here is real (127.0.0.1, ephemeral port); slow calls come from `SlowDb`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, SlowDb, health_status

import vecdb
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

ADMIN = "admin-key-for-overload-tests"


def test_a_burst_of_200_concurrent_searches_all_succeed(
    start_server: Callable[..., VecdbServer],
) -> None:
    """200 searches at once from one client with 8 handler threads: all answered, none
    refused (they queue)."""
    srv = start_server()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=60) as c:
        c.create_collection("b", DIM, "l2", index="flat")
        c.upsert("b", list(range(500)), np.random.default_rng(0).standard_normal((500, DIM)))
        queries = np.random.default_rng(1).standard_normal((200, DIM)).astype(np.float32)
        start = threading.Barrier(200)

        def one(i: int) -> int:
            start.wait()
            return int(c.search("b", queries[i], k=5).ids[0, 0])

        with ThreadPoolExecutor(200) as pool:
            firsts = list(pool.map(one, range(200)))
    assert len(firsts) == 200 and all(f >= 0 for f in firsts)


def test_past_the_queue_bound_calls_get_resource_exhausted_with_retry_info(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb, caplog: pytest.LogCaptureFixture
) -> None:
    """One handler thread and a queue of one: of five slow searches two are served, three are
    refused at once with QUEUE_FULL, a retry hint, a count in the metrics and one log line."""
    slow_db.delay = 2.0
    srv = start_server(db=slow_db, server={"workers": 1}, limits={"max_queued_rpcs": 1})
    errors: list[vecdb.VecdbError] = []

    def one(_: int) -> tuple[str, float]:
        t0 = time.monotonic()
        try:
            with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=30) as c:
                c.search("base", np.ones(DIM), k=1)
            return "OK", time.monotonic() - t0
        except vecdb.VecdbError as exc:
            errors.append(exc)
            return exc.code, time.monotonic() - t0

    with caplog.at_level(logging.WARNING, logger="vecdb.server"), ThreadPoolExecutor(5) as pool:
        results = list(pool.map(one, range(5)))
    refusals = [r for r in caplog.records if r.getMessage() == "calls refused: queue full"]
    assert len(refusals) == 1  # rate-limited: one line for the three refusals
    codes = sorted(code for code, _ in results)
    assert codes == ["OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    assert all(seconds < 1.5 for code, seconds in results if code != "OK")  # not queued
    for exc in errors:
        assert isinstance(exc, vecdb.ResourceExhausted)
        assert exc.reason == "QUEUE_FULL" and exc.retry_after == pytest.approx(0.5)
    metrics = srv._metrics
    assert metrics is not None
    assert metrics.rejected.labels("queue_full")._value.get() == 3


def test_health_answers_while_every_handler_is_busy(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb
) -> None:
    """With both handler threads in slow searches and more queued, a health check is answered
    at once from its own threads."""
    slow_db.delay = 3.0
    srv = start_server(db=slow_db, server={"workers": 2})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=30) as c, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(c.search, "base", np.ones(DIM), 1) for _ in range(6)]
        assert slow_db.entered.wait(5)
        t0 = time.monotonic()
        assert health_status(srv.port) == "SERVING"
        assert time.monotonic() - t0 < 1.0
        assert all(f.result().ids.shape == (1, 1) for f in futures)


def test_idle_reflection_streams_do_not_starve_vectordb_calls(
    start_server: Callable[..., VecdbServer],
) -> None:
    """16 reflection streams held open (with a key) leave every handler thread to VectorDB: an
    authenticated Count answers at once."""
    srv = start_server(server={"reflection": True, "workers": 4}, auth={"admin_key": ADMIN})
    target = f"127.0.0.1:{srv.port}"
    meta = (("authorization", f"Bearer {ADMIN}"),)
    channels, calls = [], []
    try:
        for _ in range(16):
            ch = grpc.insecure_channel(target)
            channels.append(ch)
            stream = ch.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=lambda b: b, response_deserializer=lambda b: b,
            )  # fmt: skip
            never: Any = iter(threading.Event().wait, True)  # a request stream that never ends
            calls.append(stream(never, metadata=meta))
        time.sleep(0.5)
        with vecdb.connect(target, api_key=ADMIN, timeout=5) as c:
            c.create_collection("r", DIM, "l2", index="flat")
            assert c.count("r") == 0
    finally:
        for call in calls:
            call.cancel()
        for ch in channels:
            ch.close()


def test_reflection_needs_a_key_when_keys_are_set(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Reflection is a schema dump: without a key it is UNAUTHENTICATED; health is not."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    srv = start_server(server={"reflection": True}, auth={"admin_key": ADMIN})
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(ch).get_services()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert health_status(srv.port) == "SERVING"


class _CountingMessages:
    """Stands in for the generated message module while the server registers its handlers,
    counting the bytes every UpsertRequest deserializer is given."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.decoded: list[int] = []
        outer = self

        class UpsertRequest:
            SerializeToString = real.UpsertRequest.SerializeToString

            @staticmethod
            def FromString(raw: bytes) -> Any:
                outer.decoded.append(len(raw))
                return real.UpsertRequest.FromString(raw)

        self.UpsertRequest = UpsertRequest

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_unauthenticated_calls_are_refused_before_their_body_is_decoded(
    start_server: Callable[..., VecdbServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 60 MiB upsert without a key (or with a read-only key) is refused and never reaches a
    deserializer; the same upsert with the admin key is decoded once and stored."""
    spy = _CountingMessages(pb_grpc.vecdb_dot_v1_dot_vecdb__pb2)
    monkeypatch.setattr(pb_grpc, "vecdb_dot_v1_dot_vecdb__pb2", spy)
    srv = start_server(auth={"admin_key": ADMIN, "read_only_keys": ["reader"]})
    n, dim = 15_000, 1024  # 60 MiB of float32
    big = pb.UpsertRequest(
        collection="big", ids=pb.Ids(ints=pb.IntIds(values=range(n))),
        vectors=pb.Vectors(dim=dim, count=n, data=np.ones((n, dim), "<f4").tobytes()),
    )  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=[
        ("grpc.max_send_message_length", 128 << 20)]) as ch:  # fmt: skip
        stub = pb_grpc.VectorDBStub(ch)
        for meta, code, reason in (((), grpc.StatusCode.UNAUTHENTICATED, "MISSING_KEY"),
                                   ((("authorization", "Bearer wrong"),),
                                    grpc.StatusCode.UNAUTHENTICATED, "INVALID_KEY"),
                                   ((("authorization", "Bearer reader"),),
                                    grpc.StatusCode.PERMISSION_DENIED, "READ_ONLY_KEY")):  # fmt: skip
            with pytest.raises(grpc.RpcError) as info:
                stub.Upsert(big, metadata=meta, timeout=60)
            err = status.error_from_rpc(info.value.code(), info.value.details(),
                                        info.value.trailing_metadata())  # fmt: skip
            assert info.value.code() == code and err.reason == reason
        assert spy.decoded == []
        admin = (("authorization", f"Bearer {ADMIN}"),)
        stub.CreateCollection(pb.CreateCollectionRequest(
            name="big", dim=dim, metric=pb.METRIC_L2, index=pb.INDEX_KIND_FLAT), metadata=admin)  # fmt: skip
        assert stub.Upsert(big, metadata=admin, timeout=120).upserted == n
    assert spy.decoded == [big.ByteSize()]
