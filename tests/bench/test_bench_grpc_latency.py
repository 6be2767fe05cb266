"""The gRPC latency benchmark's parts: the bare echo server returns what it is sent over a
real grpcio channel and stops when asked; the request it mimics is a real one-query Search;
the report states the three p50s, the gap over the echo and the batch ratio."""

from __future__ import annotations

import functools
from collections import Counter

import grpc
import numpy as np
import pytest

from vecdb.bench.grpc_latency import (
    ECHO_METHOD,
    EchoServer,
    _stream_echo,
    main,
    remote_request_bytes,
    report,
)
from vecdb.rpc.v1 import vecdb_pb2 as pb


def test_echo_server_returns_the_request() -> None:
    """Bytes in, the same bytes back, from a child process; stop() ends the child."""
    echo = EchoServer(1)
    try:
        with grpc.insecure_channel(echo.address) as channel:
            call = channel.unary_unary(ECHO_METHOD)
            assert call(b"\x00\x01abc" * 50, timeout=10) == b"\x00\x01abc" * 50
    finally:
        echo.stop()
    assert echo.proc.poll() is not None


def test_the_stream_echo_answers_each_message_on_one_stream() -> None:
    """The like-for-like floor of the SDK's search lane: messages in turn on one Chat
    stream, each answered with itself."""
    echo = EchoServer(1)
    try:
        with grpc.insecure_channel(echo.address) as channel:
            ping, end = _stream_echo(channel)
            assert [ping(bytes([i]) * 40) for i in range(5)] == [bytes([i]) * 40 for i in range(5)]
            end()
    finally:
        echo.stop()


def test_report_names_the_stream_paths() -> None:
    """The Search-calls-only client and the stream echo get rows and their own ratios."""
    r = {
        "embedded": {"p50": 0.2, "p99": 0.4, "batch_qps": 6000.0},
        "remote": {"p50": 0.7, "p99": 1.2, "batch_qps": 5400.0, "on_stream": 990},
        "unary": {"p50": 0.9, "p99": 1.5},
        "echo": {"p50": 0.5, "p99": 0.7},
        "stream_echo": {"p50": 0.4, "p99": 0.6},
        "request_bytes": 242,
    }
    text = report(r)
    assert "| remote, Search calls only (SDK) | 0.900 | 1.500 | - |" in text
    assert "| bare grpcio echo on one stream | 0.400 | 0.600 | - |" in text
    assert "= 0.500 ms = 1.00x the echo p50" in text
    assert "answered 990 of its searches on its SearchStream" in text
    assert "remote - embedded = 1.25x its p50" in text
    assert "Search calls only: remote p50 - embedded p50 = 0.700 ms = 1.40x the echo p50" in text


def test_request_bytes_are_a_one_query_search() -> None:
    """The echo payload size is that of the SearchRequest the SDK sends for one query."""
    q = np.ones((1, 50), np.float32)
    req = pb.SearchRequest.FromString(remote_request_bytes(q, {"max_postings": 48}))
    assert req.collection == "bench" and req.queries.count == 1 and req.queries.dim == 50
    assert req.options.k == 10 and len(req.queries.data) == 200


def test_report_states_gap_over_echo_and_batch_ratio() -> None:
    """remote p50 - embedded p50 is given in ms and in echo p50s; batch QPS as a ratio."""
    r = {
        "embedded": {"p50": 0.25, "p99": 0.4, "batch_qps": 6000.0},
        "remote": {"p50": 0.85, "p99": 1.2, "batch_qps": 5400.0},
        "echo": {"p50": 0.5, "p99": 0.7},
        "request_bytes": 242,
    }
    text = report(r)
    assert "= 0.600 ms = 1.20x the echo p50" in text
    assert "remote / embedded batch QPS = 0.90" in text
    assert "| bare grpcio echo (242 B) | 0.500 | 0.700 | - |" in text
    assert "CollectionExists" not in text
    r["trivial"] = {"p50": 0.6, "p99": 0.9}
    assert "| remote CollectionExists (SDK) | 0.600 | 0.900 | - |" in report(r)


def test_spin_method_holds_the_call_for_the_asked_time() -> None:
    """The busy-handler echo answers its request, and not before the asked seconds."""
    import struct
    import time

    from vecdb.bench.grpc_latency import SPIN_METHOD

    echo = EchoServer(1)
    try:
        with grpc.insecure_channel(echo.address) as channel:
            call = channel.unary_unary(SPIN_METHOD)
            payload = struct.pack("<d", 0.05) + b"x" * 10
            call(payload, timeout=10)  # connect first
            t0 = time.perf_counter()
            assert call(payload, timeout=10) == payload
            assert time.perf_counter() - t0 >= 0.05
    finally:
        echo.stop()


def test_report_states_the_busy_handler_and_the_floor_timings() -> None:
    r = {
        "embedded": {"p50": 0.25, "p99": 0.4, "batch_qps": 6000.0},
        "remote": {"p50": 0.85, "p99": 1.2, "batch_qps": 5400.0},
        "echo": {"p50": 0.5, "p99": 0.7},
        "spin": {"p50": 0.8, "p99": 1.0, "handler_ms": 0.25},
        "floor": {"p50": 0.8, "p99": 1.1, "server_ms": {"engine": 0.3, "servicer": 0.33}},
        "request_bytes": 242,
    }
    text = report(r)
    assert "| echo + 0.250 ms busy handler (holds the GIL) | 0.800 | 1.000 | - |" in text
    assert "busy-handler echo p50 - embedded p50 = 0.550 ms = 1.10x the echo p50" in text
    assert "engine search p50 0.300 ms, servicer (decode + search + encode) p50 0.330 ms" in text


def test_warm_calls_every_path_with_every_query_per_pass() -> None:
    """`warm` gives each path each query index `passes` times (the CRC-once warm-up of the
    timed queries' blocks), and WARM_CALLS calls at least when passes is 0."""
    from vecdb.bench.grpc_latency import WARM_CALLS, warm

    seen: dict[str, Counter[int]] = {"a": Counter(), "b": Counter()}
    paths = {name: functools.partial(_count, c) for name, c in seen.items()}
    warm(paths, 7, 2)
    assert all(c == Counter({i: 2 for i in range(7)}) for c in seen.values())
    for c in seen.values():
        c.clear()
    warm(paths, 100, 0)
    assert all(c == Counter(range(WARM_CALLS)) for c in seen.values())
    for c in seen.values():
        c.clear()
    warm(paths, 5, 0)  # fewer queries than WARM_CALLS: each once
    assert all(c == Counter(range(5)) for c in seen.values())


def _count(counter: Counter[int], i: int) -> None:
    counter[i] += 1


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("--warm", "-1", "an integer >= 0"),
        ("--warm", "one", "an integer >= 0"),
        ("--queries", "0", "a positive integer"),
        ("--base", "-5", "a positive integer"),
        ("--threads", "0", "a positive integer"),
    ],
)
def test_bad_counts_are_refused_before_anything_runs(
    option: str, value: str, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A count out of range is a usage error naming the option, its rule and the text given
    (a negative --warm was taken as 0 before)."""
    with pytest.raises(SystemExit) as exc:
        main([option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and rule in err and repr(value) in err


def test_report_states_the_paced_embedded_path() -> None:
    """The embedded search after an echo-long pause gets a row and its own ratio, and the
    target line still uses the back-to-back embedded p50."""
    r = {
        "embedded": {"p50": 0.2, "p99": 0.4, "batch_qps": 6000.0},
        "remote": {"p50": 0.75, "p99": 1.2, "batch_qps": 5400.0},
        "paced": {"p50": 0.3, "p99": 0.5, "pause_ms": 0.5},
        "echo": {"p50": 0.5, "p99": 0.7},
        "request_bytes": 242,
    }
    text = report(r)
    assert "| embedded, each call after a 0.500 ms pause | 0.300 | 0.500 | - |" in text
    assert "remote p50 - paced embedded p50 = 0.450 ms = 0.90x the echo p50" in text
    assert "remote p50 - embedded p50 = 0.550 ms = 1.10x the echo p50 (target <= 1.2x)" in text
