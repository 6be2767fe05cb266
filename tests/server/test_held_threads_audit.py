"""Adversarial checks of bounded UpsertStreams (`vecdb.server.open_streams`) and the SDK's
fallback to Upsert calls (`vecdb.client.upsert_streams`): batches in parts, failing sources,
refused batches, async break and cancellation, shutdown, and many clients at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wire_helpers import DIM

import vecdb
from vecdb.engine import Database
from vecdb.errors import InvalidArgument, VecdbError
from vecdb.server.app import VecdbServer

ROWS = 10  # per small batch
MIB = 1024 * 1024
BIG_DIM = 64  # a batch of BIG_ROWS rows of it is over half of 1 MiB: two parts
BIG_ROWS = 3000


def _batch(i: int, rows: int = ROWS, dim: int = DIM) -> tuple[list[int], np.ndarray, None]:
    rng = np.random.default_rng(i)
    return list(range(i * rows, (i + 1) * rows)), rng.standard_normal((rows, dim)), None


def _until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Boom(Exception):
    pass


def _failing(good: int, go: threading.Event | None = None) -> Iterator[Any]:
    """`good` batches (a stall for `go` after the first), then Boom."""
    for i in range(good):
        yield _batch(i)
        if i == 0 and go is not None:
            go.wait(30)
    raise Boom("source failed")


# --------------------------------------------------------------------- batches in parts


def test_a_batch_in_parts_ended_idle_between_parts_is_stored_once(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Window 1: batch 1's first part acknowledged, its second waits for the caller, who
    waits too; the server ends the stream idle. Batch 1 goes whole as Upsert calls, acked
    once with all its rows; every row stored once."""
    srv = start_server(limits={"upsert_stream_idle_seconds": 0.3, "max_message_bytes": MIB})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20, max_message_bytes=MIB) as c:
        c.create_collection("u", BIG_DIM, "l2", index="flat")
        batches = [_batch(i, BIG_ROWS, BIG_DIM) for i in range(3)]
        acks = c.upsert_stream("u", iter(batches), window=1)
        assert tuple(next(acks)) == (0, BIG_ROWS)
        assert srv._guard is not None
        assert _until(lambda: srv._guard.upserts.reaped == 1)  # type: ignore[union-attr]
        assert [tuple(a) for a in acks] == [(1, BIG_ROWS), (2, BIG_ROWS)]
        assert c.count("u") == 3 * BIG_ROWS
        got = c.get("u", [BIG_ROWS + BIG_ROWS - 1])[0]
        np.testing.assert_allclose(got.vector, batches[1][1][-1], rtol=1e-6)


def test_a_batch_in_parts_refused_goes_as_upserts(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server(limits={"max_upsert_streams": 0, "max_message_bytes": MIB})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20, max_message_bytes=MIB) as c:
        c.create_collection("u", BIG_DIM, "l2", index="flat")
        acks = c.upsert_stream("u", (_batch(i, BIG_ROWS, BIG_DIM) for i in range(2)))
        assert [tuple(a) for a in acks] == [(0, BIG_ROWS), (1, BIG_ROWS)]
        assert c.count("u") == 2 * BIG_ROWS


# ---------------------------------------------------------------------- failing sources


@pytest.mark.parametrize("when", ["refused", "idle", "on_stream"])
def test_a_failing_source_is_raised_after_the_good_batches(
    start_server: Callable[..., VecdbServer], when: str
) -> None:
    limits: dict[str, Any] = {"upsert_stream_idle_seconds": 0.3}
    if when == "refused":
        limits["max_upsert_streams"] = 0
    srv = start_server(limits=limits)
    go = threading.Event()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")
        acks = c.upsert_stream("u", _failing(3, go if when == "idle" else None))
        got = [tuple(next(acks))]
        if when == "idle":
            assert srv._guard is not None
            assert _until(lambda: srv._guard.upserts.reaped == 1)  # type: ignore[union-attr]
            go.set()
        with pytest.raises(Boom):
            for a in acks:
                got.append(tuple(a))
        assert got == [(0, ROWS), (1, ROWS), (2, ROWS)]
        assert c.count("u") == 3 * ROWS


@pytest.mark.parametrize("when", ["refused", "on_stream"])
def test_the_async_client_raises_a_failing_source_after_the_good_batches(
    start_server: Callable[..., VecdbServer], when: str
) -> None:
    srv = start_server(limits={"max_upsert_streams": 0 if when == "refused" else 2})

    async def run() -> tuple[list[Any], int]:
        got: list[Any] = []
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as a:
            await a.create_collection("u", DIM, "l2", index="flat")
            with pytest.raises(Boom):
                async for x in a.upsert_stream("u", _failing(3)):
                    got.append(tuple(x))
            return got, await a.count("u")

    got, count = asyncio.run(asyncio.wait_for(run(), 30))
    assert got == [(0, ROWS), (1, ROWS), (2, ROWS)]
    assert count == 3 * ROWS


# ------------------------------------------------------------------------- a bad batch


def test_a_bad_batch_while_streams_are_full_is_named_and_not_stored(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server(limits={"max_upsert_streams": 1})
    go = threading.Event()
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target, timeout=20) as holder, vecdb.connect(target, timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")

        def stalled() -> Iterator[Any]:
            yield _batch(50)
            go.wait(30)

        held = holder.upsert_stream("u", stalled())
        try:
            assert tuple(next(held)) == (0, ROWS)
            bad = ([7000, 7001], np.ones((2, DIM + 1)), None)
            acks = c.upsert_stream("u", iter([_batch(0), _batch(1), bad, _batch(3)]))
            assert [tuple(next(acks)) for _ in range(2)] == [(0, ROWS), (1, ROWS)]
            with pytest.raises(InvalidArgument) as info:
                next(acks)
            assert info.value.message.startswith("batch seq=2: ")
            assert c.count("u") == 3 * ROWS  # batches 0, 1 and the holder's
            assert c.get("u", [7000, 7001]) == []  # missing ids are left out
        finally:
            go.set()
        assert list(held) == []


@pytest.mark.parametrize("streams", [2, 0])
def test_a_bad_row_in_a_batchs_second_part_is_named_by_its_row_in_the_batch(
    start_server: Callable[..., VecdbServer], streams: int
) -> None:
    """On the stream or as Upsert calls (streams refused), the same error: the row counted
    in the batch. Before, as Upsert calls it was counted in the batch's second part
    ("vectors[967][1]" for row 2999)."""
    srv = start_server(limits={"max_upsert_streams": streams, "max_message_bytes": MIB})
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20, max_message_bytes=MIB) as c:
        c.create_collection("u", BIG_DIM, "l2", index="flat")
        ids, vectors, _ = _batch(1, BIG_ROWS, BIG_DIM)
        vectors[BIG_ROWS - 1, 1] = np.nan
        acks = c.upsert_stream("u", iter([_batch(0, BIG_ROWS, BIG_DIM), (ids, vectors, None)]))
        assert tuple(next(acks)) == (0, BIG_ROWS)
        with pytest.raises(InvalidArgument) as info:
            next(acks)
        row = f"vectors[{BIG_ROWS - 1}][1]"
        assert info.value.message.startswith(f"batch seq=1: {row} is nan"), info.value.message
        assert info.value.field == row

    async def run() -> str:
        async with vecdb.AsyncClient(
            f"127.0.0.1:{srv.port}", timeout=20, max_message_bytes=MIB
        ) as a:
            with pytest.raises(InvalidArgument) as info:
                async for _ in a.upsert_stream("u", iter([(ids, vectors, None)])):
                    pass
            return info.value.message

    assert asyncio.run(asyncio.wait_for(run(), 30)).startswith(f"batch seq=0: {row} is nan")


def test_a_bad_row_of_an_upsert_sent_in_parts_is_named_by_its_row_in_the_whole(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Where the row is named: `splits.sent`, which every upsert and document upsert sent in
    parts goes through (the stream's Upsert calls too). Before, a plain `upsert` of a batch
    over half a message named a bad row of its second part by its row in the part
    ("vectors[967][1]" for row 2999), and a document upsert the same."""
    srv = start_server(limits={"max_message_bytes": MIB})
    ids, vectors, _ = _batch(1, BIG_ROWS, BIG_DIM)
    vectors[BIG_ROWS - 1, 1] = np.nan
    row = f"vectors[{BIG_ROWS - 1}][1]"
    docs = [np.ones((100, BIG_DIM), np.float32) for _ in range(60)]  # 60 x 25.6 KB: parts
    docs[59][3, 0] = np.inf
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=20, max_message_bytes=MIB) as c:
        c.create_collection("u", BIG_DIM, "l2", index="flat")
        with pytest.raises(InvalidArgument) as info:
            c.upsert("u", ids, vectors)
        assert info.value.message.startswith(f"{row} is nan"), info.value.message
        assert info.value.field == row
        c.create_collection("d", BIG_DIM, "cosine", kind="multivector")
        with pytest.raises(InvalidArgument) as doc_info:
            c.upsert_documents("d", list(range(60)), docs)
        assert doc_info.value.message.startswith("documents[59]"), doc_info.value.message

    async def run() -> str:
        async with vecdb.AsyncClient(
            f"127.0.0.1:{srv.port}", timeout=20, max_message_bytes=MIB
        ) as a:
            with pytest.raises(InvalidArgument) as info:
                await a.upsert("u", ids, vectors)
            return info.value.message

    assert asyncio.run(asyncio.wait_for(run(), 30)).startswith(f"{row} is nan")


# ----------------------------------------------------------------------- async client


def test_the_async_client_refused_at_once_always_goes_on_as_upserts(
    start_server: Callable[..., VecdbServer],
) -> None:
    """A stream refused STREAMS_FULL before its first write went: grpc.aio may fail that
    write with its own INTERNAL "Internal error from Core" and lose the server's status.
    Before, 1 stream in ~15 raised Internal instead of going on as Upsert calls."""
    srv = start_server(limits={"max_upsert_streams": 0})

    async def run() -> list[Any]:
        out = []
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as a:
            await a.create_collection("u", DIM, "l2", index="flat")
            for i in range(80):
                out += [tuple(x) async for x in a.upsert_stream("u", iter([_batch(i)]))]
        return out

    assert asyncio.run(asyncio.wait_for(run(), 60)) == [(0, ROWS)] * 80


def test_the_async_client_leaves_no_stream_open_after_break(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server(limits={"max_upsert_streams": 2})
    assert srv._guard is not None
    guard = srv._guard

    async def run() -> int:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as a:
            await a.create_collection("u", DIM, "l2", index="flat")
            async for ack in a.upsert_stream("u", (_batch(i) for i in range(50))):
                if ack.seq == 2:
                    break
            deadline = time.monotonic() + 10
            while guard.upserts.count and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return guard.upserts.count

    assert asyncio.run(asyncio.wait_for(run(), 30)) == 0


def test_the_async_client_cancelled_during_its_upserts_leaves_nothing_open(
    start_server: Callable[..., VecdbServer],
) -> None:
    """Refused: every batch as an Upsert call; a caller's timeout mid-way ends it at once
    and the next stream works."""
    srv = start_server(limits={"max_upsert_streams": 1})
    assert srv._guard is not None
    guard = srv._guard
    go = threading.Event()

    async def run() -> list[Any]:
        target = f"127.0.0.1:{srv.port}"
        async with vecdb.AsyncClient(target, timeout=20) as a:
            await a.create_collection("u", DIM, "l2", index="flat")
            with vecdb.connect(target, timeout=20) as holder:

                def stalled() -> Iterator[Any]:
                    yield _batch(90)
                    go.wait(30)

                held = holder.upsert_stream("u", stalled())
                assert tuple(next(held)) == (0, ROWS)
                got: list[Any] = []

                async def consume() -> None:
                    async for x in a.upsert_stream("u", (_batch(i) for i in range(10_000))):
                        got.append(tuple(x))

                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(consume(), 0.5)
                go.set()
                assert list(held) == []
            assert got == [(i, ROWS) for i in range(len(got))] and got
            deadline = time.monotonic() + 10
            while guard.upserts.count and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert guard.upserts.count == 0
            return [tuple(x) async for x in a.upsert_stream("u", iter([_batch(0)]))]

    try:
        assert asyncio.run(asyncio.wait_for(run(), 30)) == [(0, ROWS)]
    finally:
        go.set()


# -------------------------------------------------------------------------- shutdown


def test_shutdown_with_an_idle_stream_does_not_hang(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server()
    go = threading.Event()
    with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=2) as c:
        c.create_collection("u", DIM, "l2", index="flat")

        def stalled() -> Iterator[Any]:
            yield _batch(0)
            go.wait(30)
            yield _batch(1)

        acks = c.upsert_stream("u", stalled())
        assert tuple(next(acks)) == (0, ROWS)
        started = time.monotonic()
        srv.stop(grace=5)
        assert time.monotonic() - started < 3
        go.set()
        with pytest.raises(VecdbError):
            list(acks)


class GatedDb:
    """A `Database` whose upsert of a batch starting at id GATE waits for `release`."""

    GATE = 10_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self.entered = threading.Event()
        self.release = threading.Event()

    def upsert(self, name: str, ids: Any, *args: Any, **kwargs: Any) -> Any:
        if len(ids) and ids[0] == self.GATE:
            self.entered.set()
            self.release.wait(10)
        return self.db.upsert(name, ids, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_shutdown_ends_a_stream_busy_at_shutdown_once_its_batch_is_answered(
    start_server: Callable[..., VecdbServer], tmp_path: Path
) -> None:
    """A stream applying a batch when shutdown begins, whose source then stalls, ends once
    that batch is acknowledged (as the module says: busy ones end after their current
    message), not at the end of the grace: before, stop(grace=5) took the 5 s."""
    db = GatedDb(Database(tmp_path / "gated"))
    srv = start_server(db=db)
    go = threading.Event()
    gate = ([GatedDb.GATE], np.ones((1, DIM)), None)
    try:
        with vecdb.connect(f"127.0.0.1:{srv.port}", timeout=2) as c:
            c.create_collection("u", DIM, "l2", index="flat")

            def source() -> Iterator[Any]:
                yield _batch(0)
                yield gate
                go.wait(30)
                yield _batch(2)

            acks = c.upsert_stream("u", source())
            assert tuple(next(acks)) == (0, ROWS)
            assert db.entered.wait(10)
            took: list[float] = []

            def stop() -> None:
                started = time.monotonic()
                srv.stop(grace=5)
                took.append(time.monotonic() - started)

            stopper = threading.Thread(target=stop)
            stopper.start()
            assert srv._guard is not None
            assert _until(srv._guard._draining.is_set)
            db.release.set()
            stopper.join(20)
            assert took and took[0] < 3, took
            go.set()
            with pytest.raises(VecdbError):
                list(acks)  # batch 1's ack on the stream or as an Upsert, then an error
    finally:
        go.set()
        db.release.set()
        db.db.close()


# ---------------------------------------------------------------------- many clients


def test_many_clients_past_a_small_bound_store_every_row_in_order(
    start_server: Callable[..., VecdbServer],
) -> None:
    srv = start_server(limits={"max_upsert_streams": 2, "upsert_stream_idle_seconds": 0.2})
    target = f"127.0.0.1:{srv.port}"
    per, n_clients = 8, 20
    with vecdb.connect(target, timeout=20) as c:
        c.create_collection("u", DIM, "l2", index="flat")

    def one(k: int) -> list[Any]:
        def source() -> Iterator[Any]:
            for j in range(per):
                if j == per // 2 and k % 3 == 0:
                    time.sleep(0.4)  # some streams ended idle mid-way
                yield _batch(k * per + j)

        with vecdb.connect(target, timeout=20) as cl:
            window = 1 + k % 3
            return [tuple(a) for a in cl.upsert_stream("u", source(), window=window)]

    with futures.ThreadPoolExecutor(n_clients) as pool:
        results = list(pool.map(one, range(n_clients), timeout=60))
    for got in results:
        assert got == [(j, ROWS) for j in range(per)]
    with vecdb.connect(target, timeout=20) as c:
        assert c.count("u") == n_clients * per * ROWS
    assert srv._guard is not None
    assert _until(lambda: srv._guard.upserts.count == 0)  # type: ignore[union-attr]


def test_an_async_upsert_stream_closed_by_its_caller_frees_the_servers_stream(
    start_server: Callable[..., VecdbServer],
) -> None:
    """A caller that keeps the generator and closes it (`aclose`, what
    `contextlib.aclosing` does, as the README says) ends the stream at once. A guard: it
    passed before the SDK closed its inner generator explicitly too (CPython freed it with
    the outer one's frame); now that does not depend on refcounting."""
    srv = start_server(limits={"max_upsert_streams": 2})
    assert srv._guard is not None
    guard = srv._guard

    async def run() -> tuple[int, int]:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as a:
            await a.create_collection("u", DIM, "l2", index="flat")
            acks = a.upsert_stream("u", (_batch(i) for i in range(50)))
            await acks.__anext__()
            opened = guard.upserts.count
            await acks.aclose()  # `acks` is still referenced here
            deadline = time.monotonic() + 10
            while guard.upserts.count and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return opened, guard.upserts.count

    assert asyncio.run(asyncio.wait_for(run(), 30)) == (1, 0)
