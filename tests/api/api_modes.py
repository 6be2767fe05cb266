"""The three SDK modes the API tests compare: embedded, remote (gRPC) and async remote.

Owns how a test gets a client of each mode over a database of its own (`serve` starts a real
server on 127.0.0.1 with an ephemeral port; `AioAdapter` runs `vecdb.AsyncClient` behind
synchronous calls so one scenario function serves every mode), and `outcome`, the comparable
form of an error. No tests here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vecdb
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

MODES = ("local", "remote", "aio")


def serve(data: Path) -> VecdbServer:
    """A started server over `data` on 127.0.0.1:<ephemeral>, metrics off."""
    cfg = load_config(env={}, overrides={
        "server": {"data": str(data), "port": 0, "workers": 4},
        "metrics": {"enabled": False},
    })  # fmt: skip
    return VecdbServer(cfg).start()


class AioAdapter:
    """`vecdb.AsyncClient` seen through synchronous calls: each method runs on the adapter's
    own event loop (in a thread), so a scenario written for `vecdb.Client` runs unchanged."""

    def __init__(self, target: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def make() -> vecdb.AsyncClient:
            return vecdb.AsyncClient(target, timeout=60)

        self._client = self._run(make())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class Trio:
    """An embedded client, a remote client and an async remote client, each over a database
    of its own (two servers), so a scenario that writes runs identically in each."""

    def __init__(self, root: Path) -> None:
        self._servers = [serve(root / "remote"), serve(root / "aio")]
        self.clients: dict[str, Any] = {
            "local": vecdb.connect(str(root / "local")),
            "remote": vecdb.connect(f"127.0.0.1:{self._servers[0].port}", timeout=60),
            "aio": AioAdapter(f"127.0.0.1:{self._servers[1].port}"),
        }

    def run(self, scenario: Callable[[Any], Any]) -> dict[str, Any]:
        """`scenario(client)` in every mode, local first."""
        return {mode: scenario(c) for mode, c in self.clients.items()}

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        for s in self._servers:
            s.stop(grace=0)


def outcome(c: Any, case: Callable[[Any], object]) -> tuple[Any, ...]:
    """(class, message, field, reason) of the error `case` raises on `c`."""
    with pytest.raises(vecdb.VecdbError) as info:
        case(c)
    err = info.value
    return type(err), err.message, err.field, err.reason
