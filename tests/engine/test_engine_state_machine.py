"""The engine behaves like a dict under any sequence of upsert / delete / search / reopen.

A hypothesis state machine drives a real Database (real RocksDB under a tmp dir, real numba
kernels) next to a plain dict model, and checks get, count and exact search after each step.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vecdb.engine import Database

DIM = 4
IDS = st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True)


class EngineVsDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-sm-"))
        self.db = Database(self.dir / "db")
        self.db.create_collection("c", dim=DIM, metric="l2", index="flat")
        self.model: dict[int, tuple[np.ndarray, dict[str, int]]] = {}

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(ids=IDS, seed=st.integers(0, 2**31), tag=st.integers(0, 3))
    def upsert(self, ids: list[int], seed: int, tag: int) -> None:
        # Small integer coordinates make exact ties common, which the search check must accept.
        vecs = np.random.default_rng(seed).integers(-3, 4, size=(len(ids), DIM)).astype(np.float32)
        payloads = [{"tag": tag, "id": i} for i in ids]
        assert self.db.upsert("c", ids, vecs, payloads) == len(ids)
        for i, vec, p in zip(ids, vecs, payloads, strict=False):
            self.model[i] = (vec, p)

    @rule(ids=IDS)
    def delete(self, ids: list[int]) -> None:
        expected = sum(1 for i in ids if i in self.model)
        assert self.db.delete("c", ids) == expected
        for i in ids:
            self.model.pop(i, None)

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = Database(self.dir / "db")

    @rule(ids=IDS)
    def get(self, ids: list[int]) -> None:
        got = {r.id: r for r in self.db.get("c", ids)}
        assert set(got) == {i for i in ids if i in self.model}
        for i, rec in got.items():
            np.testing.assert_array_equal(rec.vector, self.model[i][0])
            assert rec.payload == self.model[i][1]

    @precondition(lambda self: True)
    @rule(seed=st.integers(0, 2**31), k=st.integers(1, 12), tag=st.none() | st.integers(0, 3))
    def search(self, seed: int, k: int, tag: int | None) -> None:
        q = np.random.default_rng(seed).integers(-3, 4, size=(2, DIM)).astype(np.float32)
        flt = None if tag is None else {"tag": tag}
        res = self.db.search("c", q, k=k, filter=flt)
        items = [(i, v) for i, (v, p) in self.model.items() if flt is None or p["tag"] == tag]
        for row in range(2):
            true = sorted(float(((v - q[row]) ** 2).sum()) for _, v in items)[:k]
            got_ids = [i for i in res.ids[row].tolist() if i != -1]
            assert len(got_ids) == len(true)
            assert len(set(got_ids)) == len(got_ids)
            got_d = res.distances[row, : len(got_ids)]
            np.testing.assert_allclose(got_d, true, rtol=1e-5, atol=1e-5)  # tie-aware
            for i, d in zip(got_ids, got_d, strict=False):
                assert abs(float(((self.model[i][0] - q[row]) ** 2).sum()) - d) < 1e-4
            assert np.all(np.isinf(res.distances[row, len(got_ids) :]))

    @invariant()
    def count_matches(self) -> None:
        assert self.db.count("c") == len(self.model)


EngineVsDict.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_behaves_like_a_dict = EngineVsDict.TestCase
