"""The remote clients' deadlines: `optimize` (and snapshot create / restore) get the long
deadline whatever the client's everyday `timeout=`, and idempotent calls are retried while
the server is UNAVAILABLE for as long as their deadline allows (a restart on the same port
within it is waited for; a server that stays away fails the call near its deadline).

Real servers on 127.0.0.1; the slow optimize comes from an engine wrapper, never from a sleep
in production code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wire_helpers import DIM, server_config

import vecdb
from vecdb.engine import Database
from vecdb.server.app import VecdbServer


class SlowOptimize:
    """Delegates to a real `Database`, but `optimize` takes `delay` seconds more."""

    def __init__(self, db: Database, delay: float) -> None:
        self.db = db
        self.delay = delay

    def optimize(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return self.db.optimize(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_optimize_outlasts_a_short_client_timeout(
    tmp_path: Path, start_server: Callable[..., VecdbServer]
) -> None:
    """With `timeout=0.2`, a 1 s optimize returns (sync and async clients) instead of
    raising DeadlineExceeded after 0.2 s while the work goes on on the server."""
    db = Database(tmp_path / "slow")
    try:
        db.create_collection("c", DIM, "l2", index="flat")
        db.upsert("c", [1, 2], np.ones((2, DIM), np.float32))
        srv = start_server(db=SlowOptimize(db, delay=0.6))
        target = f"127.0.0.1:{srv.port}"
        with vecdb.connect(target, timeout=0.2) as c:
            t0 = time.monotonic()
            c.optimize("c")
            assert time.monotonic() - t0 >= 0.6

        async def run() -> None:
            async with vecdb.AsyncClient(target, timeout=0.2) as ac:
                await ac.optimize("c")

        asyncio.run(run())
    finally:
        db.close()


def _restart_later(srv: VecdbServer, after: float) -> tuple[threading.Thread, list[VecdbServer]]:
    """Stop `srv` now and start a server on its port and data after `after` seconds."""
    port, data = srv.port, Path(srv.config.server.data)
    srv.stop(grace=0)
    started: list[VecdbServer] = []

    def start() -> None:
        time.sleep(after)
        cfg = server_config(data, server={"port": port})
        started.append(VecdbServer(cfg).start())

    t = threading.Thread(target=start)
    t.start()
    return t, started


def test_idempotent_calls_wait_for_a_restart_within_their_deadline(tmp_path: Path) -> None:
    """A server stopped and started again on the same port 1.2 s later: a count, a search and
    an upsert made while it is down succeed once it is back (before: four retries, ~1 s at
    most, then Unavailable)."""
    srv = VecdbServer(server_config(tmp_path / "db")).start()
    c = vecdb.connect(f"127.0.0.1:{srv.port}", timeout=10)
    started: list[VecdbServer] = []
    try:
        c.create_collection("c", DIM, "l2", index="flat")
        c.upsert("c", [1], np.ones((1, DIM), np.float32))
        t, started = _restart_later(srv, after=1.2)
        t0 = time.monotonic()
        assert c.count("c") == 1
        assert time.monotonic() - t0 >= 1.1
        assert c.upsert("c", [2], np.ones((1, DIM), np.float32)) == 1
        assert c.search("c", np.ones(DIM, np.float32), k=2).ids.tolist() == [[1, 2]]
        t.join()
    finally:
        c.close()
        for s in started:
            s.stop(grace=0)


def test_async_calls_wait_for_a_restart_within_their_deadline(tmp_path: Path) -> None:
    """The async client retries by the same rule."""
    srv = VecdbServer(server_config(tmp_path / "db")).start()
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target) as c:
        c.create_collection("c", DIM, "l2", index="flat")

    started: list[VecdbServer] = []

    async def run_restart() -> int:
        async with vecdb.AsyncClient(target, timeout=10) as ac:
            assert await ac.count("c") == 0  # the channel is up before the server goes
            t, got = _restart_later(srv, after=1.2)
            try:
                return int(await ac.count("c"))
            finally:
                await asyncio.to_thread(t.join)
                started.extend(got)

    try:
        assert asyncio.run(run_restart()) == 0
    finally:
        for s in started:
            s.stop(grace=0)


def test_a_server_that_stays_away_fails_the_call_near_its_deadline(tmp_path: Path) -> None:
    """Retries end with the call's deadline: with timeout=1 and no server, the call raises
    Unavailable (or DeadlineExceeded) after about 1 s, not sooner and not much later."""
    srv = VecdbServer(server_config(tmp_path / "db")).start()
    c = vecdb.connect(f"127.0.0.1:{srv.port}", timeout=1.0)
    try:
        c.create_collection("c", DIM, "l2", index="flat")
        srv.stop(grace=0)
        t0 = time.monotonic()
        with pytest.raises((vecdb.Unavailable, vecdb.DeadlineExceeded)):
            c.count("c")
        assert 0.8 <= time.monotonic() - t0 <= 2.5
        # optimize may run an hour, but an unreachable server is waited for only within the
        # client's own timeout (it hung for the hour)
        t0 = time.monotonic()
        with pytest.raises((vecdb.Unavailable, vecdb.DeadlineExceeded)):
            c.optimize("c")
        assert 0.8 <= time.monotonic() - t0 <= 2.5
    finally:
        c.close()


def test_an_async_optimize_waits_for_an_unreachable_server_within_the_client_timeout(
    tmp_path: Path,
) -> None:
    srv = VecdbServer(server_config(tmp_path / "db")).start()
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target) as c:
        c.create_collection("c", DIM, "l2", index="flat")
    srv.stop(grace=0)

    async def go() -> float:
        async with vecdb.AsyncClient(target, timeout=1.0) as a:
            t0 = time.monotonic()
            with pytest.raises((vecdb.Unavailable, vecdb.DeadlineExceeded)):
                await a.optimize("c")
            return time.monotonic() - t0

    assert 0.8 <= asyncio.run(go()) <= 2.5
