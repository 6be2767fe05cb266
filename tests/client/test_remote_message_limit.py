"""Calls bigger than a gRPC message: the remote SDK answers as the embedded one does.

A real server on 127.0.0.1 whose `limits.max_message_bytes` is the minimum, 1 MiB, so the
data stays small: 40 points of 60 KB payloads (2.4 MB), 12 documents of 1,000 x 64 tokens
(3 MB). Before, each of these calls failed remotely with a bare RESOURCE_EXHAUSTED ("Sent /
Received message larger than max", reason generic, no field, nothing logged) while the same
call worked embedded. Now the SDK sends big requests in parts and asks again in parts when
the server refuses an answer as too large (measured before sending: ANSWER_TOO_LARGE, naming
the size, the limit and what to change); only an answer that cannot be split (one query)
gets that error, and the server stays up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb.client.remote import RemoteClient
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

LIMIT = 1 << 20  # the server's limits.max_message_bytes (its minimum)
N, D = 40, 8  # dense points, each with a 60 KB payload
DOCS, TOKENS, DOC_DIM = 12, 1000, 64  # documents of 256 KB each
RNG = np.random.default_rng(5)
VECTORS = RNG.standard_normal((N, D)).astype(np.float32)
PAYLOADS = [{"i": i, "s": "x" * 60_000} for i in range(N)]
DOC_TOKENS = [RNG.standard_normal((TOKENS, DOC_DIM)).astype(np.float32) for _ in range(DOCS)]
DOC_WEIGHTS = [np.linspace(0.5, 1, TOKENS) if i % 3 == 0 else None for i in range(DOCS)]
DOC_PAYLOADS = [{"doc": i} for i in range(DOCS)]


def seed(c: vecdb.Client) -> None:
    """The dense and document collections, in batches that fit in any message."""
    c.create_collection("p", dim=D, metric="l2", index="flat")
    for lo in range(0, N, 10):
        c.upsert("p", list(range(lo, lo + 10)), VECTORS[lo : lo + 10], PAYLOADS[lo : lo + 10])
    c.create_collection("m", dim=DOC_DIM, kind="multivector")
    for i in range(DOCS):
        c.upsert_documents("m", [i], DOC_TOKENS[i : i + 1], DOC_WEIGHTS[i : i + 1],
                           DOC_PAYLOADS[i : i + 1])  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VecdbServer]:
    cfg = load_config(env={}, overrides={
        "server": {"data": str(tmp_path_factory.mktemp("limit") / "db"), "port": 0,
                   "workers": 4},
        "metrics": {"enabled": False}, "limits": {"max_message_bytes": LIMIT},
    })  # fmt: skip
    srv = VecdbServer(cfg).start()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=30) as c:
        seed(c)
    yield srv
    srv.stop(grace=0)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vecdb.Client]:
    with vecdb.connect(str(tmp_path_factory.mktemp("local") / "db")) as c:
        seed(c)
        yield c


@pytest.fixture
def remote(server: VecdbServer) -> Iterator[vecdb.Client]:
    """A client with the default message size: only answers concern it."""
    with vecdb.connect(f"127.0.0.1:{server.port}", timeout=30) as c:
        yield c


@pytest.fixture
def told(server: VecdbServer) -> Iterator[RemoteClient]:
    """A client told the server's limit, which splits requests above half of it."""
    with RemoteClient(f"127.0.0.1:{server.port}", timeout=30, max_message_bytes=LIMIT) as c:
        yield c


def records(recs: list[Any]) -> list[Any]:
    return [(r.id, None if r.vector is None else r.vector.tobytes(), r.payload) for r in recs]


def documents(docs: list[Any]) -> list[Any]:
    return [(d.id, d.tokens.tobytes(), None if d.weights is None else d.weights.tobytes(),
             d.payload) for d in docs]  # fmt: skip


def same_result(a: vecdb.SearchResult, b: vecdb.SearchResult) -> None:
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_array_equal(a.distances, b.distances)
    assert a.payloads == b.payloads


def test_get_whose_answer_is_over_the_limit_is_asked_in_parts(
    local: vecdb.Client, remote: vecdb.Client
) -> None:
    """get of 40 points with 60 KB payloads (2.4 MB): the same records as embedded."""
    ids = list(range(N)) + [999]  # a missing id is left out, as embedded
    assert records(remote.get("p", ids)) == records(local.get("p", ids))


def test_search_batch_whose_answer_is_over_the_limit_is_split_by_queries(
    local: vecdb.Client, remote: vecdb.Client
) -> None:
    """4 queries x k=10 with payloads (2.4 MB): the same answer as embedded."""
    q = VECTORS[[0, 9, 17, 33]]
    same_result(remote.search("p", q, k=10, with_payload=True),
                local.search("p", q, k=10, with_payload=True))  # fmt: skip


def test_scroll_page_over_the_limit_comes_shorter_with_its_next_offset(
    local: vecdb.Client, remote: vecdb.Client
) -> None:
    """scroll(limit=40) answers a shorter page and its next offset (a page holds up to
    `limit` points); paging on gives every point once, as embedded."""
    page, nxt = remote.scroll("p", limit=N)
    assert 0 < len(page) < N and nxt == page[-1].id + 1
    got, offset = list(page), nxt
    while offset is not None:
        page, offset = remote.scroll("p", limit=N, offset=offset)
        got.extend(page)
    assert records(got) == records(local.scroll("p", limit=N)[0])


def test_single_query_whose_answer_cannot_fit_is_a_clear_error(
    server: VecdbServer, remote: vecdb.Client
) -> None:
    """One query of k=40 with payloads (2.4 MB) cannot be split: ResourceExhausted with
    reason ANSWER_TOO_LARGE and field k, naming the size, the limit and what to change; the
    server answers the next call."""
    with pytest.raises(vecdb.ResourceExhausted) as info:
        remote.search("p", VECTORS[0], k=N, with_payload=True)
    err = info.value
    assert (err.reason, err.field) == ("ANSWER_TOO_LARGE", "k")
    for part in ("1,048,576 bytes", "limits.max_message_bytes", "lower k", "with_payload"):
        assert part in err.message
    assert remote.search("p", VECTORS[0], k=3).ids.tolist()[0][0] == 0
    assert remote.count("p") == N


def test_document_upsert_over_the_limit_is_split_by_documents(
    local: vecdb.Client, told: RemoteClient
) -> None:
    """12 documents of 256 KB (3 MB) with weights and payloads, from a client told the
    server's 1 MiB: stored whole, read back as embedded stores them."""
    told.create_collection("up", dim=DOC_DIM, kind="multivector")
    assert told.upsert_documents("up", list(range(DOCS)), DOC_TOKENS, DOC_WEIGHTS,
                                 DOC_PAYLOADS) == DOCS  # fmt: skip
    assert told.count("up") == DOCS
    assert documents(told.get_documents("up", list(range(DOCS)))) == documents(
        local.get_documents("m", list(range(DOCS))))  # fmt: skip
    told.drop_collection("up")


def test_get_documents_whose_answer_is_over_the_limit_is_asked_in_parts(
    local: vecdb.Client, remote: vecdb.Client
) -> None:
    """get_documents of 12 documents (3 MB of tokens): the same documents as embedded."""
    ids = [11, 0, 5, 3, 7, 1, 2, 4, 6, 8, 9, 10]
    assert documents(remote.get_documents("m", ids)) == documents(local.get_documents("m", ids))


def test_document_search_batch_over_the_limit_is_split_by_queries(
    local: vecdb.Client, told: RemoteClient
) -> None:
    """8 query matrices of 256 KB (2 MB): the same hits and stats as embedded."""
    queries = [DOC_TOKENS[i] for i in range(8)]
    got = told.search_documents("m", queries, k=3, with_payload=True)
    want = local.search_documents("m", queries, k=3, with_payload=True)
    same_result(got, want)
    assert got.stats is not None and want.stats is not None
    assert got.stats.keys() == want.stats.keys()
    for key, value in want.stats.items():
        assert got.stats[key] == pytest.approx(value), key


def test_dense_search_request_over_the_limit_is_split_by_queries(
    local: vecdb.Client, told: RemoteClient
) -> None:
    """6,000 queries of d=64 (1.5 MB, over the limit): the same answer as embedded."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, DOC_DIM)).astype(np.float32)
    q = rng.standard_normal((6_000, DOC_DIM)).astype(np.float32)
    for c in (local, told):
        c.create_collection("wide", dim=DOC_DIM, metric="l2", index="flat")
        c.upsert("wide", list(range(50)), x)
    try:
        same_result(told.search("wide", q, k=2), local.search("wide", q, k=2))
    finally:
        for c in (local, told):
            c.drop_collection("wide")


def test_split_upserts_refuse_what_one_request_would(
    local: vecdb.Client, told: RemoteClient
) -> None:
    """An upsert over half the client's limit that repeats an id is not split but sent
    whole, and refused as embedded (DUPLICATE_ID), nothing stored; before, its parts were
    each accepted."""
    x = np.ones((20_000, D), np.float32)  # 640 KB: over half a MiB, within the server's MiB
    ids = list(range(20_000))
    ids[-1] = 0
    for c in (local, told):
        c.create_collection("dup", dim=D, metric="l2", index="flat")
    with pytest.raises(vecdb.VecdbError) as want:
        local.upsert("dup", ids, x)
    with pytest.raises(vecdb.VecdbError) as got:
        told.upsert("dup", ids, x)
    assert (type(got.value), got.value.reason, got.value.message) == (
        type(want.value), want.value.reason, want.value.message)  # fmt: skip
    assert told.count("dup") == local.count("dup") == 0
    for c in (local, told):
        c.drop_collection("dup")


def test_a_client_not_told_the_servers_limit_learns_it(
    local: vecdb.Client, remote: vecdb.Client
) -> None:
    """A client with the default 64 MiB sends a 3 MB document upsert whole; the server
    refuses it unread (grpcio names its 1 MiB), so the client keeps that limit and sends the
    documents again in parts: stored as embedded stores them. Later calls are split at once
    (a 1.5 MB search batch). Before, the upsert failed with REQUEST_TOO_LARGE, nothing
    stored, and so did every later call of that size."""
    remote.create_collection("big", dim=DOC_DIM, kind="multivector")
    try:
        assert remote.upsert_documents("big", list(range(DOCS)), DOC_TOKENS, DOC_WEIGHTS,
                                       DOC_PAYLOADS) == DOCS  # fmt: skip
        assert isinstance(remote, RemoteClient) and remote._budget.max_bytes == LIMIT
        assert documents(remote.get_documents("big", list(range(DOCS)))) == documents(
            local.get_documents("m", list(range(DOCS))))  # fmt: skip
    finally:
        remote.drop_collection("big")
    q = np.random.default_rng(2).standard_normal((6_000, D)).astype(np.float32)
    q = np.repeat(q, 8, axis=1)  # d = 64: 1.5 MB of queries
    remote.create_collection("wide", dim=8 * D, metric="l2", index="flat")
    local.create_collection("wide", dim=8 * D, metric="l2", index="flat")
    try:
        for c in (remote, local):
            c.upsert("wide", list(range(N)), np.repeat(VECTORS, 8, axis=1))
        same_result(remote.search("wide", q, k=2), local.search("wide", q, k=2))
    finally:
        remote.drop_collection("wide")
        local.drop_collection("wide")


def test_a_request_that_cannot_be_split_is_a_clear_error(remote: vecdb.Client) -> None:
    """One document of 1.3 MB over the server's 1 MiB cannot be sent in parts: the server's
    refusal reads as ResourceExhausted REQUEST_TOO_LARGE naming the size, the limit and the
    setting; nothing is stored."""
    one = np.ones((5_000, DOC_DIM), np.float32)
    remote.create_collection("one", dim=DOC_DIM, kind="multivector")
    try:
        with pytest.raises(vecdb.ResourceExhausted) as info:
            remote.upsert_documents("one", [1], [one])
        err = info.value
        assert err.reason == "REQUEST_TOO_LARGE"
        for part in ("1,048,576 bytes", "limits.max_message_bytes", "max_message_bytes"):
            assert part in err.message
        assert remote.count("one") == 0
    finally:
        remote.drop_collection("one")


def test_the_async_client_learns_the_servers_limit(
    server: VecdbServer, local: vecdb.Client
) -> None:
    """The async client not told the server's limit: a 6 MB dense upsert and a 3 MB
    document upsert are sent again in parts and stored as embedded."""
    x = np.repeat(VECTORS, 8, axis=1)
    rows = np.tile(x, (600, 1))  # 24,000 x 64: 6 MB
    ids = list(range(len(rows)))

    async def run() -> tuple[Any, Any, int]:
        async with vecdb.AsyncClient(f"127.0.0.1:{server.port}", timeout=30) as c:
            await c.create_collection("arows", dim=8 * D, metric="l2", index="flat")
            await c.create_collection("adocs", dim=DOC_DIM, kind="multivector")
            try:
                assert await c.upsert("arows", ids, rows) == len(rows)
                assert await c.upsert_documents("adocs", list(range(DOCS)), DOC_TOKENS,
                                                DOC_WEIGHTS, DOC_PAYLOADS) == DOCS  # fmt: skip
                got = await c.get("arows", [0, 23_999], with_vectors=True)
                docs = await c.get_documents("adocs", list(range(DOCS)))
                return got, docs, await c.count("arows")
            finally:
                await c.drop_collection("arows")
                await c.drop_collection("adocs")

    got, docs, count = asyncio.run(run())
    assert count == len(rows)
    assert [r.vector.tobytes() for r in got] == [rows[0].tobytes(), rows[-1].tobytes()]
    assert documents(docs) == documents(local.get_documents("m", list(range(DOCS))))


def test_connect_takes_the_servers_message_limit(server: VecdbServer, tmp_path: Path) -> None:
    """connect(..., max_message_bytes=) splits at the server's limit; the value is checked
    (its bounds are the server's) and refused for an embedded target."""
    target = f"127.0.0.1:{server.port}"
    with vecdb.connect(target, max_message_bytes=LIMIT) as c:
        c.create_collection("via", dim=DOC_DIM, kind="multivector")
        assert c.upsert_documents("via", list(range(DOCS)), DOC_TOKENS) == DOCS
        c.drop_collection("via")
    with pytest.raises(vecdb.InvalidArgument) as info:
        vecdb.connect(target, max_message_bytes=1000)
    assert info.value.field == "max_message_bytes"
    with pytest.raises(vecdb.InvalidArgument, match="remote targets only"):
        vecdb.connect(str(tmp_path / "db"), max_message_bytes=LIMIT)


def test_async_client_splits_and_asks_in_parts_alike(
    server: VecdbServer, local: vecdb.Client
) -> None:
    """The async client: a get and a document search in parts, as embedded."""
    ids = list(range(N))
    queries = [DOC_TOKENS[i] for i in range(8)]

    async def run() -> tuple[Any, Any]:
        target = f"127.0.0.1:{server.port}"
        async with vecdb.AsyncClient(target, timeout=30, max_message_bytes=LIMIT) as c:
            return await c.get("p", ids), await c.search_documents("m", queries, k=3)

    recs, res = asyncio.run(run())
    assert records(recs) == records(local.get("p", ids))
    same_result(res, local.search_documents("m", queries, k=3))


def test_a_search_whose_hits_cannot_fit_is_refused_before_it_runs(server: VecdbServer) -> None:
    """A raw Search of 3,000 queries x k=100 (a 96 KB request) could answer 300,000 hits, at
    least 1.5 MB, over the server's 1 MiB: refused with ANSWER_TOO_LARGE, field k, naming the
    hits, before the engine holds them (16,384 x 16,384 on 1,000 points held 12 GB for 49 s
    before the answer was measured); the server answers the next call."""
    import grpc

    from vecdb.rpc import status
    from vecdb.rpc.v1 import vecdb_pb2 as pb
    from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

    q = np.zeros((3_000, D), np.float32)
    req = pb.SearchRequest(collection="p", options=pb.SearchOptions(k=100),
                           queries=pb.Vectors(dim=D, count=3_000, data=q.tobytes()))  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.VectorDBStub(ch)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as info:
            stub.SearchBatch(req, timeout=30)
        err = status.error_of(info.value)
        assert (err.reason, err.field) == ("ANSWER_TOO_LARGE", "k")
        assert "3,000 queries x k=100 answers up to 300,000 hits" in err.message
        one = pb.SearchRequest(collection="p", options=pb.SearchOptions(k=1),
                               queries=pb.Vectors(dim=D, count=1, data=q[0].tobytes()))  # fmt: skip
        assert stub.Search(one, timeout=30).nq == 1


@pytest.mark.parametrize("who", ["told", "remote"])
def test_a_search_batch_of_many_hits_is_sent_in_parts(
    who: str, local: vecdb.Client, request: pytest.FixtureRequest
) -> None:
    """3,000 queries x k=100 over 40 points: a client told the server's 1 MiB splits the
    batch by its possible hits at once; one not told has it refused unrun and asks in halves
    of the queries. Either way, the answer embedded gives."""
    client = request.getfixturevalue(who)
    q = np.random.default_rng(3).standard_normal((3_000, D)).astype(np.float32)
    same_result(client.search("p", q, k=100), local.search("p", q, k=100))


ROWS_2MB = np.random.default_rng(4).standard_normal((8_192, DOC_DIM)).astype(np.float32)


def stream_batches(rows: np.ndarray, n: int) -> list[tuple[Any, Any, Any]]:
    per = len(rows) // n
    return [(list(range(i * per, (i + 1) * per)), rows[i * per : (i + 1) * per], None)
            for i in range(n)]  # fmt: skip


def test_upsert_stream_sends_a_batch_over_the_limit_in_parts(
    local: vecdb.Client, told: RemoteClient
) -> None:
    """Two 1 MB batches on a stream to a 1 MiB server (before: the stream failed
    REQUEST_TOO_LARGE): one ack per batch with its rows, stored as embedded stores them."""
    told.create_collection("st", dim=DOC_DIM, metric="l2", index="flat")
    try:
        acks = list(told.upsert_stream("st", stream_batches(ROWS_2MB, 2)))
        assert [(a.seq, a.upserted) for a in acks] == [(0, 4_096), (1, 4_096)]
        got = told.get("st", [0, 4_095, 4_096, 8_191])
        assert [r.vector.tobytes() for r in got] == [ROWS_2MB[i].tobytes()
                                                     for i in (0, 4_095, 4_096, 8_191)]  # fmt: skip
    finally:
        told.drop_collection("st")


def test_upsert_stream_names_a_bad_row_of_a_batch_sent_in_parts(
    local: vecdb.Client, told: RemoteClient
) -> None:
    """A NaN in row 3,000 of the second 1 MB batch, which goes in parts: the error names the
    batch's seq and the row in the batch, as for a batch sent whole (the message the engine
    gives embedded, prefixed with the batch), and the first batch is stored."""
    bad = ROWS_2MB.copy()
    bad[4_096 + 3_000, 5] = np.nan
    local.create_collection("bad", dim=DOC_DIM, metric="l2", index="flat")
    told.create_collection("bad", dim=DOC_DIM, metric="l2", index="flat")
    try:
        with pytest.raises(vecdb.InvalidArgument) as want:
            local.upsert("bad", list(range(4_096)), bad[4_096:])
        with pytest.raises(vecdb.InvalidArgument) as got:
            list(told.upsert_stream("bad", stream_batches(bad, 2)))
        assert got.value.message == f"batch seq=1: {want.value.message}"
        assert got.value.field == want.value.field and "[3000]" in str(got.value.field)
        assert told.count("bad") >= 4_096  # the first batch (and parts before the bad row)
    finally:
        local.drop_collection("bad")
        told.drop_collection("bad")


def test_upsert_stream_learns_the_servers_limit(remote: vecdb.Client) -> None:
    """A client not told the 1 MiB sends a 1 MB stream message: the server refuses it
    (REQUEST_TOO_LARGE, nothing stored); the next stream is sent in parts."""
    assert isinstance(remote, RemoteClient)
    remote.create_collection("learn", dim=DOC_DIM, metric="l2", index="flat")
    try:
        with pytest.raises(vecdb.ResourceExhausted) as info:
            list(remote.upsert_stream("learn", stream_batches(ROWS_2MB, 2)))
        assert info.value.reason == "REQUEST_TOO_LARGE" and remote.count("learn") == 0
        acks = list(remote.upsert_stream("learn", stream_batches(ROWS_2MB, 2)))
        assert [a.upserted for a in acks] == [4_096, 4_096] and remote.count("learn") == 8_192
    finally:
        remote.drop_collection("learn")


def test_async_upsert_stream_sends_a_batch_over_the_limit_in_parts(server: VecdbServer) -> None:
    """The async client's stream: one ack per 1 MB batch, all rows stored."""

    async def run() -> tuple[list[Any], int]:
        target = f"127.0.0.1:{server.port}"
        async with vecdb.AsyncClient(target, timeout=30, max_message_bytes=LIMIT) as c:
            await c.create_collection("ast", dim=DOC_DIM, metric="l2", index="flat")
            try:
                acks = [a async for a in c.upsert_stream("ast", stream_batches(ROWS_2MB, 2))]
                return acks, await c.count("ast")
            finally:
                await c.drop_collection("ast")

    acks, count = asyncio.run(run())
    assert [(a.seq, a.upserted) for a in acks] == [(0, 4_096), (1, 4_096)] and count == 8_192


def test_ingest_of_batches_over_the_limit(server: VecdbServer, tmp_path: Path) -> None:
    """`vecdb ingest` of 8,192 x 64 rows in one 2 MB batch to a 1 MiB server (the default
    batch of 10,000 rows is 82 MB at 2,048 dimensions, over the default 64 MiB): stored."""
    from click.testing import CliRunner

    from vecdb.cli.main import main

    np.save(tmp_path / "x.npy", ROWS_2MB)
    out = CliRunner().invoke(main, ["ingest", str(tmp_path / "x.npy"), "--collection", "ing",
                                    "--target", f"127.0.0.1:{server.port}", "--metric", "l2",
                                    "--batch-size", "8192", "--quiet"])  # fmt: skip
    assert out.exit_code == 0, out.output
    with vecdb.connect(f"127.0.0.1:{server.port}") as c:
        assert c.count("ing") == 8_192
        c.drop_collection("ing")


def test_async_upsert_stream_names_a_bad_row_of_a_batch_sent_in_parts(
    server: VecdbServer,
) -> None:
    """The async stream: a NaN in row 3,000 of the second 1 MB batch is named in the batch's
    seq and rows, as the sync stream names it."""
    bad = ROWS_2MB.copy()
    bad[4_096 + 3_000, 5] = np.nan

    async def run() -> vecdb.VecdbError:
        target = f"127.0.0.1:{server.port}"
        async with vecdb.AsyncClient(target, timeout=30, max_message_bytes=LIMIT) as c:
            await c.create_collection("abad", dim=DOC_DIM, metric="l2", index="flat")
            try:
                with pytest.raises(vecdb.InvalidArgument) as got:
                    async for _ in c.upsert_stream("abad", stream_batches(bad, 2)):
                        pass
                return got.value
            finally:
                await c.drop_collection("abad")

    err = asyncio.run(run())
    assert err.message.startswith("batch seq=1: vectors[3000][5]")
    assert err.field == "vectors[3000][5]"
