"""The engine behaves like a dict under any sequence of writes, searches, optimize and reopen.

Hypothesis state machines drive a real Database (real RocksDB under a tmp dir, real numba
kernels) next to the dict model of `oracles.Model`, and after every step check count, get of
every id (bit-identical vectors, unchanged payloads) and exact search; rules add random
searches with filters and k. Three machines:
- flat: small 4-d collection, many exact ties;
- SPANN with float32 postings of a single page (8 entries of 128-d float32) and half the
  vectors as heads, so bulk builds, splits, merges, reassignment and compaction all happen
  within a few optimize() calls; searches read every posting, so they must stay exact;
- the same with the background-maintenance API (`optimize(name, wait=False)` returns at once
  while the worker builds; `wait=True` waits), skipped while `Database.optimize` has no `wait`
  parameter: the lead's engine rewrite adds it. The engine promises searches exact-merged over
  buffer and index while a build runs, switching atomically, so the checks stay as strict.
Vectors have small-integer coordinates (exact distances, `oracles.INTEGER`; ties common);
queries come from streams of their own (`strategies.query_vectors`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import strategies as gen
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from oracles import ALL_POSTINGS, INTEGER, SPANN_EXACT, Model

from vecdb.engine import Database

# The lead's engine adds `optimize(name, wait=True)` (background maintenance worker).

# SPANN with tiny postings: one 4 KiB page holds the floor of 8 entries of 128-d float32
# (posting_pages=1; posting_vectors cannot go below the automatic budget's 3-page floor),
# half the vectors become heads, merges below 3 live entries; one build thread.
TINY_SPANN = {
    **SPANN_EXACT,
    "posting_pages": 1,
    "head_fraction": 0.5,
    "merge_threshold": 3,
    "threads": 1,
}
# Each example opens RocksDB a dozen times (reopen rule); on tmpfs that costs CPU only.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


class EngineVsDict(RuleBasedStateMachine):
    """The flat machine; subclasses change the index and add rules."""

    dim = 4
    max_id = 40  # ids 0..max_id: batches overlap, replace and delete each other
    max_batch = 8
    index = "flat"
    index_params: dict[str, Any] | None = None
    search_params: dict[str, Any] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-sm-", dir=SCRATCH))
        self.db = self.open()
        self.db.create_collection(
            "c", dim=self.dim, metric="l2", index=self.index, index_params=self.index_params
        )
        self.model = Model("l2")
        self.fixed_queries = gen.query_vectors(3, self.dim, 0)

    def open(self) -> Database:
        # sync=False: within one process a reopen sees every write either way; what fsync
        # adds (survival of a kill) is test_engine_crash's subject, and here it only costs
        # time (fsync latency on CI swings from under 1 ms to tens of ms).
        return Database(self.dir / "db", sync=False)

    def teardown(self) -> None:
        if self.index == "spann":  # which maintenance paths this example reached
            counters = self.db.stats("c")["index"]
            for key in ("splits", "merges", "reassigned", "compactions"):
                event(f"spann {key}: {'yes' if counters.get(key) else 'no'}")
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ids(self) -> st.SearchStrategy[list[int]]:
        return gen.id_lists(gen.int_ids(self.max_id), 1, self.max_batch)

    # -- writes ----------------------------------------------------------------------------

    @rule(data=st.data(), seed=gen.seeds())
    def upsert(self, data: st.DataObject, seed: int) -> None:
        ids = data.draw(self.ids(), label="ids")
        payloads = data.draw(st.lists(gen.payloads(), min_size=len(ids), max_size=len(ids)))
        vecs = gen.seeded_vectors(len(ids), self.dim, seed)
        assert self.db.upsert("c", ids, vecs, payloads) == len(ids)
        self.model.upsert(ids, vecs, payloads)
        self.after_write(data)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ids = data.draw(self.ids(), label="ids")
        assert self.db.delete("c", ids) == self.model.delete(ids)
        self.after_write(data)

    def after_write(self, data: st.DataObject) -> None:
        """Index work a subclass may start after a write (rules alone start it too rarely:
        swarm testing leaves a rule out of most examples)."""

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = self.open()

    # -- reads -----------------------------------------------------------------------------

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        ids = data.draw(self.ids(), label="ids")
        self.model.assert_records(self.db.get("c", ids), ids)

    @rule(seed=gen.seeds(), k=st.integers(1, 12), flt=gen.filters())
    def search(self, seed: int, k: int, flt: dict[str, Any] | None) -> None:
        q = gen.query_vectors(2, self.dim, seed)
        res = self.db.search("c", q, k=k, filter=flt, params=self.search_params)
        self.model.assert_search(res, q, k, flt, INTEGER)

    @invariant()
    def equals_model(self) -> None:
        """After every step: count, every stored id (and a few absent ones), exact search."""
        self.model.assert_stored(self.db, "c", absent=range(self.max_id + 1))
        k = max(1, min(10, len(self.model)))
        res = self.db.search("c", self.fixed_queries, k=k, params=self.search_params)
        self.model.assert_search(res, self.fixed_queries, k, None, INTEGER)


class SpannEngineVsDict(EngineVsDict):
    """SPANN with tiny postings; optimize() builds, then splits and merges as writes go on."""

    dim = 128  # 8-entry postings (see TINY_SPANN)
    max_id = 99
    max_batch = 16
    index = "spann"
    index_params = TINY_SPANN
    search_params = ALL_POSTINGS

    @initialize(seed=gen.seeds(), n=st.integers(16, 64))
    def bulk_load(self, seed: int, n: int) -> None:
        """Start with enough points for a build with many heads (then writes split them)."""
        ids = list(range(n))
        vecs = gen.seeded_vectors(n, self.dim, seed)
        self.db.upsert("c", ids, vecs, [{"tag": i % 3} for i in ids])
        self.model.upsert(ids, vecs, [{"tag": i % 3} for i in ids])

    @rule()
    def optimize(self) -> None:
        self.db.optimize("c")  # the plain call: waits, today and with the rewrite's default

    def after_write(self, data: st.DataObject) -> None:
        if data.draw(st.booleans(), label="optimize after the write"):
            self.optimize()


class BackgroundSpannEngineVsDict(SpannEngineVsDict):
    """SPANN with the background worker: optimize without waiting, then keep going."""

    @rule()
    def optimize_in_background(self) -> None:
        self.db.optimize("c", wait=False)  # type: ignore[call-arg]  # returns at once

    @rule()
    def optimize_and_wait(self) -> None:
        self.db.optimize("c", wait=True)  # type: ignore[call-arg]

    def after_write(self, data: st.DataObject) -> None:
        then = data.draw(st.sampled_from(["nothing", "background", "wait"]), label="then")
        if then == "background":
            self.optimize_in_background()
        elif then == "wait":
            self.optimize_and_wait()


EngineVsDict.TestCase.settings = gen.machine_settings(40, 25)
test_engine_behaves_like_a_dict = EngineVsDict.TestCase

SpannEngineVsDict.TestCase.settings = gen.machine_settings(25, 30)
test_spann_engine_behaves_like_a_dict = SpannEngineVsDict.TestCase


def test_spann_engine_with_background_optimize_behaves_like_a_dict() -> None:
    """The SPANN machine with optimize(wait=False) and optimize(wait=True) rules."""
    run_state_machine_as_test(BackgroundSpannEngineVsDict, settings=gen.machine_settings(25, 30))


def test_tiny_spann_postings_split_merge_and_stay_exact(tmp_path: Path) -> None:
    """The SPANN machine's parameters do reach splits, reassignment, merges and compaction
    through the engine (a fixed sequence), and reading every posting stays exact. Drains
    insert (rebuilds off), so the online path is what runs."""
    dim = SpannEngineVsDict.dim
    db = Database(tmp_path / "db", sync=False, settings={"rebuild_max_bytes": 0})
    db.create_collection("c", dim=dim, metric="l2", index="spann", index_params=TINY_SPANN)
    model = Model("l2")
    queries = gen.query_vectors(8, dim, 1)
    for step in range(12):
        ids = list(range(step * 10, step * 10 + 20))  # overlapping: half are replacements
        vecs = gen.seeded_vectors(len(ids), dim, step)
        assert db.upsert("c", ids, vecs) == model.upsert(ids, vecs)
        gone = list(range(max(0, step * 10 - 30), step * 10 - 14))
        if gone:
            assert db.delete("c", gone) == model.delete(gone)
        db.optimize("c")
        model.assert_search(db.search("c", queries, k=10, params=ALL_POSTINGS), queries, 10,
                            None, INTEGER)  # fmt: skip
    counters = db.stats("c")["index"]
    assert min(counters[k] for k in ("splits", "reassigned", "merges", "gc")) > 0, counters
    model.assert_stored(db, "c", absent=range(140))
    db.close()
