"""`vecdb ingest` waits out a write buffer that is full while the index build catches up.

A real Database (RocksDB in tmp_path) whose buffer cap is 1 MiB and whose writers are refused
at once above it (`stall_timeout` 0); its index is wrapped so that the bulk build the test
starts is held until the test lets it go. Ingest's first batches are then refused with
`ResourceExhausted` / `BUFFER_FULL`; ingest must wait (the error's `retry_after`), go on
from the last acknowledged row once the build ends, and store every row exactly once,
embedded and over a real gRPC server on 127.0.0.1. Before, the refusal ended the load with
an error after the engine's 30 s stall.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import vecdb
from vecdb.cli.main import main
from vecdb.client.backpressure import Patience, buffer_full, upsert_patiently
from vecdb.engine import Database
from vecdb.errors import BUFFER_FULL, DiskFull, ResourceExhausted
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

DIM = 64  # 256 bytes a row: the 1 MiB cap holds 4,096
FILL = 4_200  # rows buffered before the ingest: over the cap once frozen by the build
ROWS = 1_000  # rows the ingest loads
# (an explicit `bulk_build_bytes`: the never-built buffer does not spill to files past it,
# so the cap holds for every row; `tests/engine/test_engine_spill.py`)
SETTINGS = {"idle_seconds": 3600, "build_min_vectors": 1, "buffer_max_bytes": 2**20,
            "bulk_build_bytes": 2**19, "stall_timeout": 0.0}  # fmt: skip
WAIT = 60.0


class HeldIndex:
    """The collection's index, whose next build waits until `open` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.open = threading.Event()

    def build(self, slots: Any, vectors: Any, progress: Any = None) -> None:
        self.entered.set()
        while not self.open.wait(0.02):
            if progress is not None:
                progress("held", 0, 1)
        self.inner.build(slots, vectors, progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def fill_and_hold(db: Database) -> HeldIndex:
    """Collection "c" with FILL rows (ids 10**6 + i) frozen in a bulk build that is held:
    the buffer is over its cap until the hold is released."""
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    core = db.collections["c"].core
    held = HeldIndex(core.index)
    core.index = held
    x = np.random.default_rng(1).standard_normal((FILL, DIM)).astype(np.float32)
    db.upsert("c", [10**6 + i for i in range(FILL)], x)
    db.optimize("c", wait=False)
    assert held.entered.wait(WAIT)
    with pytest.raises(ResourceExhausted) as err:  # the premise: a write is refused now
        db.upsert("c", [0], x[:1])
    assert err.value.reason == BUFFER_FULL and err.value.retry_after
    return held


class Kept:
    """A client whose close() leaves it open (ingest closes the client it was given)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture(params=["local", "remote"])
def held_target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Database, HeldIndex]]:
    if request.param == "local":
        client = vecdb.connect(tmp_path / "db", engine=SETTINGS)
        db = client._db  # type: ignore[attr-defined]
        held = fill_and_hold(db)
        real = vecdb.connect  # ingest's embedded connect calls vecdb.connect(target)

        def connect(target: Any, *args: Any, **kwargs: Any) -> Any:
            return Kept(client) if str(target) == str(tmp_path / "db") else real(target)

        monkeypatch.setattr(vecdb, "connect", connect)
        try:
            yield str(tmp_path / "db"), db, held
        finally:
            held.open.set()
            client.close()
        return
    db = Database(tmp_path / "srv", settings=SETTINGS)
    held = fill_and_hold(db)
    cfg = load_config(env={}, overrides={"server": {"data": str(tmp_path / "srv"), "port": 0},
                                         "metrics": {"enabled": False}})  # fmt: skip
    srv = VecdbServer(cfg, db=db).start()
    try:
        yield f"127.0.0.1:{srv.port}", db, held
    finally:
        held.open.set()
        srv.stop(grace=0)
        db.close()


def test_ingest_waits_for_the_index_and_loads_every_row(
    tmp_path: Path, held_target: tuple[str, Database, HeldIndex]
) -> None:
    target, db, held = held_target
    x = np.random.default_rng(2).standard_normal((ROWS, DIM)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    release = threading.Timer(2.5, held.open.set)  # the build ends while ingest waits
    release.start()
    try:
        res = CliRunner().invoke(
            main, ["ingest", str(tmp_path / "in.npy"), "--collection", "c", "--target", target,
                   "--batch-size", "200", "--quiet"], catch_exceptions=False,
        )  # fmt: skip
    finally:
        release.cancel()
    assert res.exit_code == 0, res.output
    assert "for the index to catch up (write buffer full" in res.output
    assert db.stats("c")["buffer"]["rejected"] >= 1
    assert db.count("c") == FILL + ROWS
    got = db.get("c", list(range(ROWS)), with_vectors=True)
    assert [r.id for r in got] == list(range(ROWS))
    np.testing.assert_array_equal(np.stack([r.vector for r in got]), x)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def full(retry_after: float | None = 2.0) -> ResourceExhausted:
    return ResourceExhausted("buffer full", reason=BUFFER_FULL, retry_after=retry_after)


def test_patience_waits_retry_after_and_gives_up_without_progress() -> None:
    clock = FakeClock()
    p = Patience(5.0, sleep=clock.sleep, clock=lambda: clock.now)
    assert not p.progressed()  # no wait before it
    p.wait(full())
    p.wait(full(None))  # no hint: DEFAULT_PAUSE
    p.wait(full(0.0))  # nor a zero one (it would spin)
    assert clock.slept == [2.0, 1.0, 1.0] and p.waits == 3 and p.waited == 4.0
    p.wait(full(10.0))  # cut to what is left of the patience
    assert clock.slept[-1] == 1.0
    with pytest.raises(ResourceExhausted):
        p.wait(full())  # spent: the refusal is raised
    assert p.progressed()  # a write went through after waits: a new 5 s
    assert not p.progressed()
    p.wait(full())
    assert clock.slept[-1] == 2.0


def test_only_a_full_buffer_is_waited_for() -> None:
    clock = FakeClock()
    p = Patience(100.0, sleep=clock.sleep, clock=lambda: clock.now)
    for err in (DiskFull("disk full"), ResourceExhausted("quota", reason="TENANT_VECTOR_QUOTA"),
                ResourceExhausted("no reason"), ValueError("x")):  # fmt: skip
        assert not buffer_full(err)
        with pytest.raises(type(err)):
            p.wait(err)
    assert clock.slept == []


def test_upsert_patiently_retries_the_same_call() -> None:
    calls: list[tuple[Any, ...]] = []
    answers: list[Any] = [full(0.5), full(0.5), 3]

    class Client:
        def upsert(self, *args: Any, **kwargs: Any) -> int:
            calls.append((args, kwargs))
            a = answers.pop(0)
            if isinstance(a, Exception):
                raise a
            return int(a)

    clock = FakeClock()
    p = Patience(60.0, sleep=clock.sleep, clock=lambda: clock.now)
    assert upsert_patiently(Client(), "c", [1, 2, 3], "v", payloads=None, patience=p) == 3
    assert calls == [(("c", [1, 2, 3], "v"), {"payloads": None})] * 3
    assert clock.slept == [0.5, 0.5]
