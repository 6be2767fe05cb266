"""Background maintenance racing with writes and searches: the database still equals the model.

Writer threads upsert and delete, each over its own id range (so each keeps an exact model of
its part), while a maintainer thread keeps asking the worker for background builds
(`optimize(name, wait=False)`) and searcher threads query. Checked during the race:
- a search never returns an id whose delete returned before the search started (deleted ids
  are never written again, so a delete is final);
- every returned (id, distance) is the exact distance to a vector that id was given at some
  point: no torn, stale-beyond-history or foreign vectors;
- searches filtered to a static part of the collection (points no writer touches) are exact
  at every moment, whatever the worker is doing: the engine promises buffer and index
  exact-merged during a build and an atomic switch to the new index.
At the end, after `optimize(name, wait=True)` and again after a reopen: count, get of every
id (and of every deleted one) and exact search equal the model.
Skipped while `Database.optimize` has no `wait` parameter: the lead's engine rewrite adds it.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import strategies as gen
from oracles import ALL_POSTINGS, INTEGER, SPANN_EXACT, Model, distances

from vecdb.engine import Database

DIM = 32
PARAMS = {**SPANN_EXACT, "posting_pages": 1, "head_fraction": 0.2, "threads": 1}
STATIC = 400  # ids 0..STATIC-1 are loaded first and never written again
WRITERS, SEARCHERS = 2, 2
OPS = 120  # write operations per writer
WRITER_IDS = 100_000  # writer w owns ids (w + 1) * WRITER_IDS + [0, WRITER_IDS)


class Race:
    """The shared record of the race: vector history per id and when deletes returned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clock = itertools.count()  # orders "delete returned" before "search started"
        self.history: dict[int, list[np.ndarray]] = {}  # every vector an id was ever sent
        self.deleted_at: dict[int, int] = {}  # id -> clock when its delete returned
        self.errors: list[str] = []  # failures seen by any thread
        self.stop = threading.Event()

    def tick(self) -> int:
        with self.lock:
            return next(self.clock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)
        self.stop.set()


def guarded(race: Race, body: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            body()
        except BaseException as exc:  # any failure ends the race and is reported
            race.fail(f"{threading.current_thread().name}: {exc!r}")

    return run


def writer(db: Database, race: Race, w: int, model: Model) -> None:
    rng = random.Random(w)
    base = (w + 1) * WRITER_IDS
    fresh = itertools.count(base)
    live: list[int] = []
    for op in range(OPS):
        if race.stop.is_set():
            return
        if live and rng.random() < 0.3:
            gone = rng.sample(live, min(len(live), rng.randint(1, 10)))
            assert db.delete("c", gone) == len(gone)
            model.delete(gone)
            with race.lock:
                now = next(race.clock)
                for pid in gone:
                    race.deleted_at[pid] = now
            live = [p for p in live if p not in set(gone)]
            continue
        replace = rng.sample(live, min(len(live), rng.randint(0, 10)))
        ids = replace + [next(fresh) for _ in range(rng.randint(1, 20))]
        vecs = gen.seeded_vectors(len(ids), DIM, [w, op])
        payloads = [{"w": w, "op": op}] * len(ids)
        with race.lock:  # recorded before the call: the write may be seen before it returns
            for pid, vec in zip(ids, vecs, strict=True):
                race.history.setdefault(pid, []).append(vec)
        assert db.upsert("c", ids, vecs, payloads) == len(ids)
        model.upsert(ids, vecs, payloads)
        live += ids[len(replace) :]


def maintainer(db: Database, race: Race) -> None:
    rng = random.Random(7)
    while not race.stop.is_set():
        db.optimize("c", wait=False)  # type: ignore[call-arg]  # returns at once
        time.sleep(rng.uniform(0.0, 0.05))


def searcher(db: Database, race: Race, s: int, static: Model) -> None:
    for it in itertools.count():
        if race.stop.is_set():
            return
        q = gen.query_vectors(2, DIM, s * 1_000_000 + it)
        started = race.tick()
        res = db.search("c", q, k=20, params=ALL_POSTINGS)
        with race.lock:
            for row in range(2):
                for pid, dist in zip(res.ids[row].tolist(), res.distances[row], strict=True):
                    if pid == -1:
                        assert np.isposinf(dist), f"padding id -1 with distance {dist}"
                        continue
                    gone = race.deleted_at.get(pid)
                    if gone is not None and gone < started:
                        raise AssertionError(f"id {pid} returned after its delete returned")
                    sent = race.history.get(pid) if pid >= STATIC else [static.points[pid][0]]
                    assert sent, f"id {pid} was never written"
                    true = distances(np.stack(sent), q[row], "l2")[0]
                    assert np.abs(true - dist).min() <= INTEGER.atol, f"id {pid}: distance {dist}"
        res = db.search("c", q, k=10, filter={"static": True}, params=ALL_POSTINGS)
        static.assert_search(res, q, 10, {"static": True}, INTEGER)


def test_background_optimize_races_writes_and_searches(tmp_path: Path) -> None:
    """Writers, background builds and searches together: no deleted id comes back after its
    delete, returned distances belong to the ids' vectors, static searches stay exact, and
    the database equals the model after a waited optimize and after a reopen."""
    path = tmp_path / "db"
    db = Database(path)
    db.create_collection("c", dim=DIM, metric="l2", index="spann", index_params=PARAMS)
    static = Model("l2")
    vecs = gen.seeded_vectors(STATIC, DIM, 12345)
    payloads: list[dict[str, Any] | None] = [{"static": True}] * STATIC
    db.upsert("c", list(range(STATIC)), vecs, payloads)
    static.upsert(range(STATIC), vecs, payloads)
    db.optimize("c", wait=True)  # type: ignore[call-arg]

    race = Race()
    models = [Model("l2") for _ in range(WRITERS)]
    writers = [
        threading.Thread(target=guarded(race, lambda w=w: writer(db, race, w, models[w])),
                         name=f"writer-{w}")
        for w in range(WRITERS)
    ]  # fmt: skip
    others = [threading.Thread(target=guarded(race, lambda: maintainer(db, race)), name="maint")]
    others += [
        threading.Thread(target=guarded(race, lambda s=s: searcher(db, race, s, static)),
                         name=f"searcher-{s}")
        for s in range(SEARCHERS)
    ]  # fmt: skip
    for t in writers + others:
        t.start()
    for t in writers:
        t.join(timeout=300)
    race.stop.set()
    for t in others:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in writers + others), "a thread hung"
    assert race.errors == [], race.errors

    model = Model("l2")
    for part in [static, *models]:
        model.points.update(part.points)
    assert len(race.deleted_at) > 0 and len(model) > STATIC  # the writers really worked
    queries = gen.query_vectors(16, DIM, 0)
    for reopen in (False, True):
        if reopen:
            db.close()
            db = Database(path)
        db.optimize("c", wait=True)  # type: ignore[call-arg]
        model.assert_stored(db, "c", absent=race.deleted_at)
        res = db.search("c", queries, k=25, params=ALL_POSTINGS)
        model.assert_search(res, queries, 25, None, INTEGER)
        res = db.search("c", queries, k=STATIC, filter={"static": True}, params=ALL_POSTINGS)
        static.assert_search(res, queries, STATIC, {"static": True}, INTEGER)
    db.close()
