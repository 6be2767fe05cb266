"""Audit of `vecdb.AsyncClient` against a real server: a call cancelled in flight and a
client used after `close()` behave as the sync and embedded clients do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from wire_helpers import DIM, SlowDb

import vecdb
from vecdb.server.app import VecdbServer


def test_an_async_search_cancelled_on_its_stream_leaves_later_searches_answered(
    start_server: Callable[..., VecdbServer], slow_db: SlowDb
) -> None:
    """A search cancelled while the server works on it (task.cancel(), as asyncio.wait_for
    does at its timeout) raises CancelledError, and the client's next searches are answered
    (before: each raised asyncio.InvalidStateError, the lane's stream being cancelled)."""
    srv = start_server(db=slow_db)
    q = np.ones(DIM, np.float32)

    async def run() -> None:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", timeout=20) as client:
            slow_db.delay = 0.0
            want = await client.search("base", q, k=2)  # opens the search stream
            slow_db.delay = 1.0
            slow_db.entered.clear()
            task = asyncio.create_task(client.search("base", q, k=2))
            assert await asyncio.to_thread(slow_db.entered.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            slow_db.delay = 0.0
            for _ in range(3):
                got = await client.search("base", q, k=2)
                assert got.ids.tolist() == want.ids.tolist()

    asyncio.run(run())


@pytest.mark.parametrize("where", ["remote", "embedded"])
def test_an_async_client_used_after_close_raises_unavailable(
    server: VecdbServer, tmp_path: Path, where: str
) -> None:
    """Every kind of call on a closed AsyncClient raises vecdb.Unavailable, remote as
    embedded (remote raised grpc.aio's UsageError, which no `except vecdb.VecdbError`
    catches)."""
    target = f"127.0.0.1:{server.port}" if where == "remote" else str(tmp_path / "db")
    q = np.ones(DIM, np.float32)

    async def run() -> None:
        client = vecdb.AsyncClient(target, timeout=20)
        await client.create_collection("base", DIM, "l2", index="flat")
        await client.close()
        calls = [
            client.count("base"), client.search("base", q, k=1), client.get("base", [1]),
            client.list_tenants("base"), client.get_documents("base", [1]),
            client.list_collections(),
        ]  # fmt: skip
        for call in calls:
            with pytest.raises(vecdb.Unavailable):
                await call
        with pytest.raises(vecdb.Unavailable):
            async for _ in client.upsert_stream("base", [([1], q[None, :], None)]):
                pass
        await client.close()  # twice is fine

    asyncio.run(run())


def test_an_async_upsert_stream_refused_at_once_raises_the_servers_error_as_sync(
    start_server: Callable[..., VecdbServer],
) -> None:
    """A stream of 8 batches naming a tenant the key may not act for raises PermissionDenied
    (TENANT_NOT_ALLOWED, field, message) from the async client as from the sync one, every
    time (before: grpc.aio's INTERNAL "Internal error from Core" in 9 of 10 runs, its next
    write having failed before the server's status was read)."""
    auth = {"admin_key": "root-admin-key-000001",
            "keys": [{"key": "acme-writer-key-0001", "role": "write", "tenants": ["acme"]}]}  # fmt: skip
    srv = start_server(auth=auth)
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target, api_key="root-admin-key-000001", timeout=20) as root:
        root.create_collection("mt", DIM, "l2", index="flat", multi_tenant=True)
    batches = [([i], np.ones((1, DIM), np.float32), None) for i in range(8)]

    def facts(err: vecdb.VecdbError) -> tuple[object, ...]:
        return type(err), err.reason, err.field, str(err)

    with vecdb.connect(target, api_key="acme-writer-key-0001", timeout=20) as acme:
        with pytest.raises(vecdb.PermissionDenied) as sync_err:
            list(acme.upsert_stream("mt", batches, grant_to=["globex"]))

    async def run() -> None:
        async with vecdb.AsyncClient(target, api_key="acme-writer-key-0001", timeout=20) as c:
            for _ in range(5):
                with pytest.raises(vecdb.VecdbError) as info:
                    async for _ack in c.upsert_stream("mt", batches, grant_to=["globex"]):
                        pass
                assert facts(info.value) == facts(sync_err.value)

    asyncio.run(run())
    assert sync_err.value.reason == "TENANT_NOT_ALLOWED"
