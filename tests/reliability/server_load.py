"""Load and acknowledged-state models for the kill -9 server test (`test_reliability_server_kill`).

Owns three client threads, each with its own gRPC client and its own ids, and what each one
was told: `DenseWriter` (multi-tenant dense collection "m": upserts with grant_to, deletes,
grants, revokes, every request on ids of one owner), `DocWriter` (multivector collection "d":
document upserts and deletes), `Admin` (optimize of either collection, and one tenant drop per
trial). Each keeps the acknowledged state and the one request it had in flight when the
server died; `check` compares a restarted server with that, counting acknowledged writes lost
and torn requests (a request seen partly applied), and adopts the in-flight request's fate.
Vectors and tokens are pure functions of (id, generation).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import vecdb
from vecdb.errors import NotFound, VecdbError

DIM = 16
TENANTS = [f"t{i}" for i in range(4)]
DENSE_IDS = 400  # ids 0..399 of "m", owned by t{i % 4}
DOC_IDS = 300  # ids 0..299 of "d"
VICTIM_BASE, VICTIM_POINTS = 100_000, 20  # victim v<trial> owns ids VICTIM_BASE + 100 trial + j


def vector_of(i: int, gen: int) -> np.ndarray:
    return np.random.default_rng([i, gen]).standard_normal(DIM).astype(np.float32)


def doc_of(i: int, gen: int) -> np.ndarray:
    rng = np.random.default_rng([i, gen, 7])
    t = rng.standard_normal((int(rng.integers(3, 10)), DIM)).astype(np.float32)
    return (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Tally:
    """What the checks found over all trials."""

    acked: int = 0  # acknowledged requests
    lost: int = 0  # acknowledged requests not (wholly) in the restarted server
    torn: int = 0  # in-flight requests seen partly applied
    in_flight_landed: int = 0
    in_flight_not: int = 0
    drops_acked: int = 0


@dataclass
class DenseWriter:
    model: dict[int, tuple[int, set[str]]] = field(default_factory=dict)  # id -> (gen, grants)
    pending: tuple[str, int, list[int], list[str]] | None = None  # (op, gen, ids, tenants)
    acks: int = 0
    gen: int = 1_000_000

    def run(self, target: str, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        with vecdb.connect(target, timeout=3) as c:
            while not stop.is_set():
                self.gen += 1
                o = rng.randrange(len(TENANTS))
                owner = TENANTS[o]
                pool = list(range(o, DENSE_IDS, len(TENANTS)))
                have = [i for i in pool if i in self.model]
                others = [t for t in TENANTS if t != owner]
                r = rng.random()
                if r < 0.55 or not have:
                    op, ids, ts = (
                        "up",
                        rng.sample(pool, rng.randint(1, 12)),
                        rng.sample(others, rng.randint(0, 1)),
                    )
                elif r < 0.7:
                    op, ids, ts = "grant", rng.sample(have, min(len(have), 6)), [rng.choice(others)]
                elif r < 0.85:
                    op, ids, ts = (
                        "revoke",
                        rng.sample(have, min(len(have), 6)),
                        [rng.choice(others)],
                    )
                else:
                    op, ids, ts = "del", rng.sample(pool, rng.randint(1, 8)), []
                ids = sorted(ids)
                self.pending = (op, self.gen, ids, ts)
                try:
                    if op == "up":
                        vecs = np.stack([vector_of(i, self.gen) for i in ids])
                        c.upsert("m", ids, vecs, [{"gen": self.gen}] * len(ids), tenant=owner,
                                 grant_to=ts)  # fmt: skip
                    elif op == "del":
                        c.delete("m", ids, tenant=owner)
                    else:
                        (c.grant if op == "grant" else c.revoke)(
                            "m", ids, tenant=ts[0], owner=owner
                        )
                except VecdbError:
                    return  # the server is gone: this request stays in flight
                self.pending = None
                self.acks += 1
                self.apply(op, self.gen, ids, ts)

    def apply(self, op: str, gen: int, ids: list[int], ts: list[str]) -> None:
        for i in ids:
            if op == "up":
                kept = self.model[i][1] if i in self.model else set()
                self.model[i] = (gen, kept | set(ts))
            elif op == "del":
                self.model.pop(i, None)
            elif op == "grant":
                self.model[i][1].update(ts)
            else:
                self.model[i][1].difference_update(ts)

    def check(self, c: Any, tally: Tally) -> None:
        ids = list(range(DENSE_IDS))
        seen = {r.id: r for r in c.get("m", ids)}
        sees: dict[int, set[str]] = {i: set() for i in seen}
        for t in TENANTS:
            for r in c.get("m", ids, with_vectors=False, tenant=t):
                sees[r.id].add(t)

        def state(i: int) -> tuple[int, set[str]] | None:
            if i not in seen:
                return None
            rec = seen[i]
            gen = int(rec.payload["gen"])
            np.testing.assert_array_equal(rec.vector, vector_of(i, gen))
            return gen, sees[i] - {TENANTS[i % len(TENANTS)]}

        if self.pending is not None:  # all of it or none of it
            op, gen, pids, ts = self.pending
            old = {i: _copy(self.model.get(i)) for i in pids}
            self.apply(op, gen, pids, ts)
            new = {i: _copy(self.model.get(i)) for i in pids}
            got = {i: state(i) for i in pids}
            if all(got[i] == new[i] for i in pids):
                tally.in_flight_landed += 1
            elif all(got[i] == old[i] for i in pids):
                tally.in_flight_not += 1
                for i in pids:
                    if old[i] is None:
                        self.model.pop(i, None)
                    else:
                        self.model[i] = old[i]  # type: ignore[assignment]
            else:
                tally.torn += 1
            self.pending = None
        for i in ids:
            want, got = self.model.get(i), state(i)
            if want != got:  # counted, then the model follows the server for later trials
                tally.lost += 1
                if got is None:
                    self.model.pop(i, None)
                else:
                    self.model[i] = got


def _copy(x: tuple[int, set[str]] | None) -> tuple[int, set[str]] | None:
    return None if x is None else (x[0], set(x[1]))


@dataclass
class DocWriter:
    model: dict[int, int] = field(default_factory=dict)  # id -> gen
    pending: tuple[str, int, list[int]] | None = None
    acks: int = 0
    gen: int = 2_000_000

    def run(self, target: str, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        with vecdb.connect(target, timeout=3) as c:
            while not stop.is_set():
                self.gen += 1
                up = rng.random() < 0.8 or not self.model
                ids = sorted(rng.sample(range(DOC_IDS), rng.randint(1, 8)))
                self.pending = ("up" if up else "del", self.gen, ids)
                try:
                    if up:
                        c.upsert_documents("d", ids, [doc_of(i, self.gen) for i in ids],
                                           payloads=[{"gen": self.gen}] * len(ids))  # fmt: skip
                    else:
                        c.delete("d", ids)
                except VecdbError:
                    return
                self.pending = None
                self.acks += 1
                self.apply(up, self.gen, ids)

    def apply(self, up: bool, gen: int, ids: list[int]) -> None:
        for i in ids:
            if up:
                self.model[i] = gen
            else:
                self.model.pop(i, None)

    def check(self, c: Any, tally: Tally) -> None:
        seen: dict[int, int] = {}
        for d in c.get_documents("d", list(range(DOC_IDS))):
            seen[d.id] = int(d.payload["gen"])
            np.testing.assert_allclose(d.tokens, doc_of(d.id, seen[d.id]), rtol=0, atol=1e-6)
        if self.pending is not None:
            op, gen, pids = self.pending
            new = {i: (gen if op == "up" else None) for i in pids}
            old = {i: self.model.get(i) for i in pids}
            got = {i: seen.get(i) for i in pids}
            if got == new:
                tally.in_flight_landed += 1
                self.apply(op == "up", gen, pids)
            elif got == old:
                tally.in_flight_not += 1
            else:
                tally.torn += 1
            self.pending = None
        for i in range(DOC_IDS):
            if self.model.get(i) != seen.get(i):
                tally.lost += 1
        self.model = dict(seen)


@dataclass
class Admin:
    """Optimize calls, and the drop of this trial's victim tenant at a random moment."""

    drop: dict[str, str] = field(
        default_factory=dict
    )  # victim -> "not sent" | "in flight" | "acked"
    optimizes: int = 0

    def setup_victim(self, c: Any, trial: int) -> str:
        victim = f"v{trial}"
        c.create_tenant("m", victim)
        ids = victim_ids(trial)
        c.upsert("m", ids, np.stack([vector_of(i, 0) for i in ids]), [{"gen": 0}] * len(ids),
                 tenant=victim, grant_to=["t0"])  # fmt: skip
        self.drop[victim] = "not sent"
        return victim

    def run(self, target: str, stop: threading.Event, seed: int, victim: str, at: float) -> None:
        rng = random.Random(seed)
        with vecdb.connect(target, timeout=3) as c:
            dropped, start = False, time.monotonic()
            while not stop.is_set():
                try:
                    if not dropped and time.monotonic() - start >= at:
                        dropped = True
                        self.drop[victim] = "in flight"
                        c.drop_tenant("m", victim)
                        self.drop[victim] = "acked"
                    else:
                        c.optimize(rng.choice(["m", "d"]))
                        self.optimizes += 1
                except VecdbError:
                    if stop.is_set() or self.drop.get(victim) == "in flight":
                        return
                stop.wait(0.05)

    def check(self, c: Any, tally: Tally) -> None:
        """Every victim: an acknowledged drop in force (its points invisible, its name gone
        or dropping), one never sent not in force; in flight: either, never half."""
        for victim, fate in list(self.drop.items()):
            trial = int(victim[1:])
            there = {r.id for r in c.get("m", victim_ids(trial), with_vectors=False)}
            try:
                gone = c.get_tenant("m", victim).state == "dropping"
            except NotFound:
                gone = True
            whole = there == set(victim_ids(trial))
            if gone and there or not gone and not whole:
                tally.torn += 1
            elif fate == "acked" and not gone or fate == "not sent" and gone:
                tally.lost += 1
            elif fate == "in flight":
                tally.in_flight_landed += gone
                tally.in_flight_not += not gone
            if gone:
                tally.drops_acked += fate == "acked"
                del self.drop[victim]  # checked once; its cleanup finishes by itself
            else:
                self.drop[victim] = "not sent"  # still there: must stay so


def victim_ids(trial: int) -> list[int]:
    return [VICTIM_BASE + 100 * trial + j for j in range(VICTIM_POINTS)]
