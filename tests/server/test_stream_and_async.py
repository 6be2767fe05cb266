"""Streaming upsert (acks, credit window, failure mid-stream) and the asyncio client
(same methods and results as the sync client, remote and embedded).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracles import ALL_POSTINGS, SPANN_EXACT, Model
from wire_helpers import DIM

import vecdb
from vecdb.client.remote import RemoteClient, StreamAck
from vecdb.server.app import VecdbServer
from vecdb.types import SearchResult


def _batches(n: int, size: int, start: int = 0) -> Iterator[tuple[Any, Any, Any]]:
    rng = np.random.default_rng(start)
    for b in range(n):
        ids = list(range(start + b * size, start + (b + 1) * size))
        yield ids, rng.standard_normal((size, DIM)).astype(np.float32), None


def test_stream_acks_every_batch_in_order(remote: RemoteClient) -> None:
    """One ack per batch, in order, each after the batch is stored."""
    remote.create_collection("s", DIM, "l2", index="flat")
    acks = list(remote.upsert_stream("s", _batches(12, 50)))
    assert acks == [StreamAck(i, 50) for i in range(12)]
    assert remote.count("s") == 600


def test_stream_keeps_at_most_window_batches_unacknowledged(remote: RemoteClient) -> None:
    """Backpressure: the producer never runs more than `window` batches ahead of the acks."""
    remote.create_collection("s", DIM, "l2", index="flat")
    produced = 0
    acked = 0
    max_ahead = 0
    lock = threading.Lock()

    def source() -> Iterator[tuple[Any, Any, Any]]:
        nonlocal produced, max_ahead
        for item in _batches(20, 10):
            with lock:
                max_ahead = max(max_ahead, produced - acked)
                produced += 1
            yield item

    for _ack in remote.upsert_stream("s", source(), window=2):
        with lock:
            acked += 1
    assert acked == 20 and max_ahead <= 2


def test_stream_stops_at_the_first_bad_batch_keeping_earlier_ones(remote: RemoteClient) -> None:
    """A rejected batch ends the stream with its error; the batches acknowledged before it are
    stored, it and everything after it are not."""
    remote.create_collection("s", DIM, "l2", index="flat")
    items = list(_batches(6, 10))
    bad_vectors = items[3][1].copy()
    bad_vectors[4, 1] = np.nan
    items[3] = (items[3][0], bad_vectors, None)
    acks: list[StreamAck] = []
    with pytest.raises(vecdb.InvalidArgument, match=r"batch seq=3: vectors\[4\]\[1\] is nan"):
        for ack in remote.upsert_stream("s", iter(items), window=1):
            acks.append(ack)
    assert [a.seq for a in acks] == [0, 1, 2]
    assert remote.count("s") == 30


def test_stream_reraises_a_source_error_after_acknowledging_earlier_batches(
    remote: RemoteClient,
) -> None:
    """If the batch source raises, what it produced before is still sent and acknowledged."""
    remote.create_collection("s", DIM, "l2", index="flat")

    def source() -> Iterator[tuple[Any, Any, Any]]:
        yield from _batches(3, 10)
        raise ValueError("row 31 of the input is broken")

    acks: list[StreamAck] = []
    with pytest.raises(ValueError, match="row 31"):
        for ack in remote.upsert_stream("s", source()):
            acks.append(ack)
    assert len(acks) == 3 and remote.count("s") == 30


def test_stream_to_unknown_collection_is_not_found(remote: RemoteClient) -> None:
    """Errors from the engine end the stream with their own class."""
    with pytest.raises(vecdb.NotFound):
        list(remote.upsert_stream("missing", _batches(2, 5)))


# -- asyncio ----------------------------------------------------------------------------------


# The index kinds the async congruence test runs on: SPANN exact (float32 postings, every
# posting read) so both modes must give identical answers, before and after optimize().
ASYNC_INDEXES = {
    "flat": ("flat", None, None),
    "spann": ("spann", SPANN_EXACT, ALL_POSTINGS),
}


async def _exercise(client: vecdb.AsyncClient, index: str) -> list[Any]:
    """The same sequence of calls, recording every answer."""
    kind, index_params, params = ASYNC_INDEXES[index]
    out: list[Any] = []
    info = await client.create_collection("a", DIM, "l2", index=kind, index_params=index_params)
    out.append((info.name, info.dim, info.metric, info.index))
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((40, DIM)).astype(np.float32)
    out.append(await client.upsert("a", list(range(40)), xb, [{"i": i} for i in range(40)]))
    out.append(await client.count("a"))
    recs = await client.get("a", [3, 99, 5])
    out.append([(r.id, r.vector.tolist(), r.payload) for r in recs])
    res = await client.search("a", xb[:3], k=4, params=params, with_payload=True)
    out.append((res.ids.tolist(), res.distances.tolist(), res.payloads))
    out.append(await client.delete("a", [1, 2, 1000]))
    acks = [a async for a in client.upsert_stream("a", _batches(3, 5, start=100), window=1)]
    out.append(acks)
    out.append([c.name for c in await client.list_collections()])
    await client.optimize("a")
    out.append((await client.get_collection("a")).count)
    q = rng.standard_normal((5, DIM)).astype(np.float32)
    res = await client.search("a", q, k=10, params=params, filter={"i": 7}, with_payload=True)
    out.append((res.ids.tolist(), res.distances.tolist(), res.payloads))
    res = await client.search("a", q, k=60, params=params)
    out.append((res.ids.tolist(), res.distances.tolist()))
    try:
        await client.count("missing")
    except vecdb.NotFound as exc:
        out.append(("NotFound", exc.message))
    await client.drop_collection("a")
    out.append(await client.list_collections())
    return out


@pytest.mark.parametrize("index", sorted(ASYNC_INDEXES))
def test_async_client_matches_embedded_async_client(
    server: VecdbServer, tmp_path: Path, index: str
) -> None:
    """AsyncClient gives the same answers remote (grpc.aio) and embedded (worker threads), on
    the flat index and on SPANN; the final search is also the exact oracle's answer."""

    async def run(target: str) -> list[Any]:
        async with vecdb.AsyncClient(target, timeout=20) as client:
            return await _exercise(client, index)

    remote_answers = asyncio.run(run(f"127.0.0.1:{server.port}"))
    local_answers = asyncio.run(run(str(tmp_path / "local")))
    assert remote_answers == local_answers
    assert remote_answers[2] == 40 and remote_answers[-1] == []
    # The last search (k=60 over 53 live points) against the exact oracle.
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((40, DIM)).astype(np.float32)
    q = rng.standard_normal((5, DIM)).astype(np.float32)
    model = Model("l2")
    model.upsert(range(40), xb)
    model.delete([1, 2])
    for ids, vecs, _ in _batches(3, 5, start=100):
        model.upsert(ids, vecs)
    ids, dists = remote_answers[-3]
    found = SearchResult(ids=np.asarray(ids), distances=np.asarray(dists, np.float32))
    model.assert_search(found, q, 60)


def test_async_stream_stops_at_bad_batch(server: VecdbServer) -> None:
    """The async stream reports a rejected batch with its class after the earlier acks."""

    async def run() -> tuple[list[StreamAck], str, int]:
        async with vecdb.AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_collection("s", DIM, "l2", index="flat")
            items = list(_batches(4, 10))
            items[2] = (items[1][0], items[2][1], None)  # reuses batch 1's ids: fine
            items[3] = ([1], np.ones((2, DIM)), None)  # count mismatch: rejected
            acks: list[StreamAck] = []
            try:
                async for ack in client.upsert_stream("s", iter(items), window=1):
                    acks.append(ack)
            except vecdb.InvalidArgument as exc:
                return acks, exc.code, await client.count("s")
            raise AssertionError("no error")

    acks, code, count = asyncio.run(run())
    assert [a.seq for a in acks] == [0, 1, 2] and code == "INVALID_ARGUMENT" and count == 20


def test_upsert_larger_than_half_a_message_is_split_and_fully_stored(server: VecdbServer) -> None:
    """A client with a 1 MiB message cap sends a 3 MiB upsert as several requests."""
    with RemoteClient(f"127.0.0.1:{server.port}", max_message_bytes=1 << 20) as c:
        c.create_collection("big", 64, "l2", index="flat")
        x = np.random.default_rng(1).standard_normal((12_000, 64)).astype(np.float32)
        payloads = [{"i": i} for i in range(12_000)]
        assert c.upsert("big", list(range(12_000)), x, payloads) == 12_000
        assert c.count("big") == 12_000
        recs = c.get("big", [0, 5_999, 11_999])
        assert [r.payload for r in recs] == [{"i": 0}, {"i": 5_999}, {"i": 11_999}]
        assert np.stack([r.vector for r in recs]).tobytes() == x[[0, 5_999, 11_999]].tobytes()


def test_async_client_reads_targets_as_connect_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https URL without a port is TLS to port 7700 (as `vecdb.connect`), not plaintext to
    the bare host; a `pathlib.Path` is a local directory, not an ambiguous string."""
    from unittest import mock

    import grpc.aio

    opened: list[tuple[str, str]] = []

    def channel(kind: str) -> Any:
        def open_(address: str, *args: Any, **kwargs: Any) -> Any:
            opened.append((kind, address))
            return mock.MagicMock()

        return open_

    monkeypatch.setattr(grpc.aio, "secure_channel", channel("tls"))
    monkeypatch.setattr(grpc.aio, "insecure_channel", channel("plain"))
    vecdb.AsyncClient("https://example.com")
    vecdb.AsyncClient("grpc://example.com")
    assert opened == [("tls", "example.com:7700"), ("plain", "example.com:7700")]

    async def run() -> int:
        async with vecdb.AsyncClient(tmp_path / "data") as client:
            await client.create_collection("p", DIM, "l2", index="flat")
            return len(await client.list_collections())

    assert asyncio.run(run()) == 1 and (tmp_path / "data").is_dir()
