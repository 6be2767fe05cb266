"""The maintenance worker: index work runs in the background, never inside a write.

A real Database (RocksDB in tmp_path, real kernels); the index of a collection is wrapped in a
`Gate` that can hold a build or a drain at a known point, so each test observes the engine
while index work is in progress, without timing anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from vecdb.engine import Database, commit
from vecdb.errors import FormatError, Internal, NotFound, ResourceExhausted, Unavailable
from vecdb.kernels.scan import exact_topk
from vecdb.storage import kv as kvmod

DIM = 8
WAIT = 60.0  # generous bound for background work in these tiny tests (never a timing assert)


class Gate:
    """Wraps an index: `build`/`add` report progress, then wait until `release()`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()  # a build/add is waiting at the gate
        self.open = threading.Event()
        self.fail: Exception | None = None  # raised by the next build/add instead

    def release(self) -> None:
        self.open.set()

    def _hold(self, progress: Any) -> None:
        self.entered.set()
        while not self.open.wait(0.02):
            if progress is not None:
                progress("gate", 0, 1)  # lets close/drop cancel us
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err

    def build(self, slots: Any, vectors: Any, progress: Any = None) -> None:
        self._hold(progress)
        self.inner.build(slots, vectors, progress)

    def add(self, slots: Any, vectors: Any, progress: Any = None) -> None:
        self._hold(progress)
        self.inner.add(slots, vectors, progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def wait_until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(tmp_path / "db", settings={"idle_seconds": 3600, "build_min_vectors": 1})
    yield d
    d.close()


def gated(db: Database, name: str = "c", **kw: Any) -> Gate:
    db.create_collection(name, dim=DIM, metric="l2", index_params={"vector_dtype": "float32"}, **kw)
    core = db.collections[name].core
    gate = Gate(core.index)
    core.index = gate  # type: ignore[assignment]
    return gate


def exact_ids(base: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    rows, _ = exact_topk(q, base, "l2", k)
    return ids[rows]


def test_writes_and_exact_searches_go_on_while_a_build_runs(db: Database) -> None:
    """An upsert returns while the bulk build is held, and searches see every write exactly."""
    gate = gated(db)
    x = vectors(300)
    db.upsert("c", list(range(200)), x[:200])
    db.optimize("c", wait=False)
    assert gate.entered.wait(WAIT)
    assert db.get_collection("c").index_state == "building"
    db.upsert("c", list(range(200, 300)), x[200:])  # returns although the build is held
    db.delete("c", [0, 1])
    info = db.get_collection("c")
    assert (info.count, info.indexed, info.buffered) == (298, 0, 298)
    live = np.arange(2, 300)
    q = vectors(5, seed=1)
    got = db.search("c", q, k=7).ids
    np.testing.assert_array_equal(got, exact_ids(x[2:], live, q, 7))
    gate.release()
    db.optimize("c", wait=True)
    info = db.get_collection("c")
    assert (info.count, info.indexed, info.buffered, info.index_state) == (298, 298, 0, "ready")
    assert info.last_build_seconds is not None
    res = db.search("c", x[2:4], k=1, params={"max_postings": 4096})
    np.testing.assert_array_equal(res.ids[:, 0], [2, 3])
    assert 0 not in db.search("c", x[:1], k=5, params={"max_postings": 4096}).ids


def test_delete_during_a_drain_is_not_undone(db: Database) -> None:
    """A point deleted while the worker applies it to the index stays deleted (remove wins)."""
    gate = gated(db)
    x = vectors(100)
    db.upsert("c", list(range(50)), x[:50])
    gate.release()
    db.optimize("c")
    gate.open.clear()
    gate.entered.clear()
    db.upsert("c", list(range(50, 100)), x[50:])
    db.optimize("c", wait=False)
    assert gate.entered.wait(WAIT)
    db.delete("c", [60, 61])
    gate.release()
    db.optimize("c")
    assert db.count("c") == 98
    res = db.search("c", x[60:62], k=3, params={"max_postings": 4096})
    assert 60 not in res.ids and 61 not in res.ids


def test_backpressure_waits_then_refuses_and_stores_nothing(tmp_path: Path) -> None:
    """Above the buffer cap a write waits at most stall_timeout, then ResourceExhausted
    (with retry_after) and nothing of it is stored; the counters say so."""
    # (an explicit `bulk_build_bytes`: the never-built buffer does not spill past it)
    settings = {"idle_seconds": 3600, "buffer_max_bytes": 2**20, "bulk_build_bytes": 2**19,
                "stall_timeout": 0.2}  # fmt: skip
    with Database(tmp_path / "db", settings=settings) as db:
        gate = gated(db)
        big = vectors(2**20 // (4 * DIM) + 10)
        db.upsert("c", list(range(len(big))), big)
        db.optimize("c", wait=False)
        assert gate.entered.wait(WAIT)  # the buffer is frozen and held: no room is made
        with pytest.raises(ResourceExhausted) as err:
            db.upsert("c", [10**6], vectors(1))
        assert err.value.retry_after is not None and "write buffer is full" in err.value.message
        assert err.value.reason == "BUFFER_FULL"  # what loaders wait for (client.backpressure)
        assert db.get("c", [10**6]) == []
        buf = db.stats("c")["buffer"]
        assert buf["stalls"] == 1 and buf["rejected"] == 1 and buf["stall_seconds"] > 0
        gate.release()
        db.optimize("c")
        assert db.upsert("c", [10**6], vectors(1)) == 1


def test_a_failed_build_keeps_the_data_and_is_retried(tmp_path: Path) -> None:
    """optimize(wait=True) raises the job's error, the state says error, every write stays
    searchable from the buffer, and the worker retries the build."""
    settings = {"idle_seconds": 3600, "retry_seconds": 0.0}
    with Database(tmp_path / "db", settings=settings) as db:
        gate = gated(db)
        x = vectors(50)
        db.upsert("c", list(range(50)), x)
        gate.fail = OSError("disk on fire")
        gate.release()
        with pytest.raises(Internal, match="disk on fire"):
            db.optimize("c", wait=True)
        assert db.search("c", x[7], k=1).ids[0, 0] == 7
        db.optimize("c", wait=True)  # the retry succeeds
        info = db.get_collection("c")
        assert (info.indexed, info.index_state) == (50, "ready")


def test_close_and_drop_abandon_a_running_build(tmp_path: Path) -> None:
    """close() and drop_collection() do not wait for a held build; after reopening, the
    buffered writes are replayed and indexed."""
    db = Database(tmp_path / "db", settings={"idle_seconds": 3600})
    gate = gated(db)
    gated(db, "d")
    x = vectors(40)
    db.upsert("c", list(range(40)), x)
    db.optimize("c", wait=False)
    assert gate.entered.wait(WAIT)
    db.close()  # returns although the gate never opens
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as again:
        assert again.get_collection("c").buffered == 40
        again.optimize("c")
        assert again.get_collection("c").indexed == 40
        gate2 = Gate(again.collections["d"].core.index)
        again.collections["d"].core.index = gate2  # type: ignore[assignment]
        again.upsert("d", [1], x[:1])
        again.optimize("d", wait=False)
        assert gate2.entered.wait(WAIT)
        again.drop_collection("d")
        assert [c.name for c in again.list_collections()] == ["c"]


def test_optimize_waiter_is_released_when_the_database_closes(tmp_path: Path) -> None:
    db = Database(tmp_path / "db", settings={"idle_seconds": 3600})
    gate = gated(db)
    db.upsert("c", [1, 2], vectors(2))
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            db.optimize("c", wait=True)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    assert gate.entered.wait(WAIT)
    db.close()
    t.join(WAIT)
    assert not t.is_alive() and isinstance(errors[0], Unavailable)


def test_quiet_time_triggers_the_build_without_optimize(tmp_path: Path) -> None:
    settings = {"idle_seconds": 0.05, "build_min_vectors": 10}
    with Database(tmp_path / "db", settings=settings) as db:
        db.create_collection("c", dim=DIM, metric="l2")
        db.upsert("c", list(range(5)), vectors(5))
        db.upsert("c", list(range(5, 30)), vectors(25, seed=3))
        wait_until(lambda: db.get_collection("c").indexed == 30, "the idle build")
        db.upsert("c", [100], vectors(1, seed=4))
        wait_until(lambda: db.get_collection("c").indexed == 31, "the idle drain")
        wait_until(lambda: db.get_collection("c").index_state == "ready", "the ready state")


def test_small_collections_stay_exact_until_they_grow(tmp_path: Path) -> None:
    """Below build_min_vectors an unbuilt collection is searched exactly by the buffer."""
    settings = {"idle_seconds": 0.0, "build_min_vectors": 1000}
    with Database(tmp_path / "db", settings=settings) as db:
        db.create_collection("c", dim=DIM, metric="l2")
        db.upsert("c", list(range(20)), vectors(20))
        time.sleep(0.3)  # several worker turns: none may build
        info = db.get_collection("c")
        assert (info.indexed, info.buffered, info.index_state) == (0, 20, "idle")


def test_op_log_entries_carry_a_version_and_old_entries_replay(tmp_path: Path) -> None:
    """v1 entries are written; a v0 entry (no version field) still replays on open; an
    entry from a newer format is a clear FormatError."""
    assert msgpack.unpackb(commit.encode_write(3, 2, [1]))["v"] == commit.OPLOG_VERSION
    legacy = msgpack.packb({"add": [5, 2], "rm": [1]})
    op = commit.decode(9, legacy)
    assert (op.seq, op.add_start, op.add_count, op.removed) == (9, 5, 2, [1])
    with pytest.raises(FormatError, match="format version 7"):
        commit.decode(9, msgpack.packb({"v": 7, "op": "write", "add": [0, 0], "rm": []}))
    with pytest.raises(FormatError, match="unknown op"):
        commit.decode(9, msgpack.packb({"v": 1, "op": "teleport", "add": [0, 0], "rm": []}))
    # A collection whose log was written by the old format reopens with its points.
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as db:
        db.create_collection("c", dim=DIM, metric="l2")
        db.upsert("c", [1, 2], vectors(2))
        core = db.collections["c"].core
        raw = list(core.kv.scan_prefix(kvmod.CF_OPLOG, core.prefix))
        assert len(raw) == 1
        key, value = raw[0]
        body = msgpack.unpackb(value)
        batch = core.kv.batch()
        batch.put(kvmod.CF_OPLOG, key, msgpack.packb({"add": body["add"], "rm": body["rm"]}))
        core.kv.commit(batch)
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as db:
        assert db.get_collection("c").buffered == 2
        assert {r.id for r in db.get("c", [1, 2])} == {1, 2}


def test_checkpoint_keeps_log_entries_written_during_a_drain(tmp_path: Path) -> None:
    """Writes that land while a drain runs are logged past the drain's checkpoint, so a
    crash right after it loses none of them (the log is truncated only up to the freeze)."""
    db = Database(tmp_path / "db", settings={"idle_seconds": 3600})
    gate = gated(db)
    db.upsert("c", list(range(10)), vectors(10))
    db.optimize("c", wait=False)
    assert gate.entered.wait(WAIT)
    db.upsert("c", list(range(10, 15)), vectors(5, seed=2))
    gate.release()
    wait_until(lambda: db.get_collection("c").indexed == 10, "the held build")
    core = db.collections["c"].core
    wait_until(lambda: core.applied_seq > 0, "the checkpoint")
    kept = commit.read_log(core.kv, core.prefix, 0)
    assert [op.add_count for op in kept] == [5]
    db.close()
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as again:
        info = again.get_collection("c")
        assert (info.count, info.indexed, info.buffered) == (15, 10, 5)


def test_calls_racing_a_drop_get_not_found_not_unavailable(tmp_path: Path) -> None:
    """A call that looked the collection up just before `drop_collection` shut it, and an
    optimize waiting on it, get NotFound (gone for good), not Unavailable (which tells a
    client to retry); a database that closes still answers Unavailable."""
    db = Database(tmp_path / "db", settings={"idle_seconds": 3600})
    db.create_collection("c", dim=DIM, metric="l2")
    gate = gated(db, "d")
    db.upsert("d", [1, 2], vectors(2))
    held = db.collections["d"]  # looked up by a call that has not entered yet
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            db.optimize("d", wait=True)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    assert gate.entered.wait(WAIT)
    db.drop_collection("d")
    t.join(WAIT)
    assert not t.is_alive() and isinstance(errors[0], NotFound), errors
    with pytest.raises(NotFound, match="'d' does not exist"):
        held.search(vectors(1), k=1)
    kept = db.collections["c"]
    db.close()
    with pytest.raises(Unavailable):
        kept.search(vectors(1), k=1)
