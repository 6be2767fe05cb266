"""A never-built SPANN collection whose write buffer spills to files behaves like a dict.

Hypothesis state machines drive a real Database (real RocksDB under a tmp dir, real SPANN
builds, real unnamed spill files) next to the dict model of `oracles.Model`, as
test_engine_state_machine does, through the spill path: the buffer holds its first rows in
memory and opens its later chunks on an unnamed file in the index directory; the one first
build gathers that file as its input, started by the worker at `spill_build_bytes` while
writes stream in, by `optimize`, or (second machine) on quiet time; once built, later writes
drain into the index, and a second load of a fifth of the index or more is rebuilt from
everything. After every step: count, get of every id of the pool (bit-identical vectors,
unchanged payloads, nothing for absent ids) and exact search (tie-aware); after a waited
optimize nothing is left buffered or on file; after a close and reopen every acknowledged
write is back (spilled rows included: they are in RocksDB), no spill file is open, and a
never-built buffer comes back spilled (the cap counts what it holds in memory). Every write
must be accepted (writers wait for the worker's jobs). Rules: upserts (a few ids with any
payload, or big batches that cross file chunks, some of their rows copies of others for
exact ties), deletes by ids (present and absent, a few or many; all but a few: a spilled
segment left with what fits in memory is compacted there, an emptied index spills its next
load again) and by filter, optimize waiting and not, close + reopen, searches with filters
and k.

Sizes: the engine's caps are bytes with floors (`buffer_max_bytes` >= 1 MiB, so the first
build point is >= 512 KiB, and a buffer spills only when `rebuild_max_bytes` lies beyond it),
so rows are wide (512-d float32, 2 KiB) to keep a load at a few hundred rows: 256 rows is the
first build point, 384 the spill build (`rebuild_max_bytes`, also the largest rebuild), 512
the memory cap, and the pool of 600 ids passes it (writers wait for the worker). The module
constants shrink the rest (`shrink`): the buffer spills past 40 rows, in 37-row file chunks
(mapped at offsets that are not page multiples), memory chunks of at most 24 rows. SPANN has
float32 postings and searches read every posting (`oracles.SPANN_EXACT`, `ALL_POSTINGS`), so
searches must be exact; vectors have small-integer coordinates (`oracles.INTEGER`).
Two machines: the worker's quiet-time builds off (`idle_seconds` a day: the first build comes
from the spill trigger or optimize), run again with builds of 359+ rows in a child process
(which maps a gathered spill file through its descriptor), and on (`idle_seconds` 0.02,
built from 200 rows), so checks run while the worker builds, drains and rebuilds on its own.

Found with this machine and fixed (668f461): a reopened never-built buffer was read wholly
into memory and counted against the cap (every write refused); overwrites of a hot set grew
the spill file until every write was refused; then a spilled buffer whose rows were all
deleted kept its file through optimize (nothing live to build; only a write compacted it),
and a closed database's spill file stayed open until the cycle collector freed the database
(the tests at the end). Still so: a closed database whose index replaced its posting file
holds the retired (deleted) file until the cycle collector runs; `reopen` collects first.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import strategies as gen
from hypothesis import currently_in_test_context, event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from oracles import ALL_POSTINGS, INTEGER, SPANN_EXACT, Model, matches
from spill_files import unnamed_files

from vecdb.engine import Database, maintenance
from vecdb.engine import settings as engine_settings
from vecdb.index import flat

MIB = 1 << 20
DIM = 512
ROW = 4 * DIM  # bytes of one float32 row
SPILL_BUILD_ROWS = 384  # `rebuild_max_bytes`: the spill build point and the largest rebuild
POOL = 600  # ids 0..599: more than the 512 rows of the memory cap
SPILL_FROM_ROWS = 40  # SPILL_FROM_BYTES: a spilling buffer holds this many rows in memory
SPILL_CHUNK_ROWS = 37  # rows of a file chunk (odd: most chunks start off a page boundary)
MEMORY_CHUNK_ROWS = 24  # CHUNK_BYTES: rows of a memory chunk at most
ENGINE: dict[str, Any] = {
    "buffer_max_bytes": MIB,
    "rebuild_max_bytes": SPILL_BUILD_ROWS * ROW,
    "idle_seconds": 86_400,  # no quiet-time builds or drains: optimize, or the size triggers
    "build_min_vectors": 10**9,
    "drain_vectors": 120,  # a built index takes its buffer at 120 writes, in the background
    "stall_timeout": 20,  # a write waits for the worker's job rather than being refused
}
BACKGROUND = {**ENGINE, "idle_seconds": 0.02, "build_min_vectors": 200}
# builds of at least this many MiB run in a child process (`spann.child`): those of 359+
# rows, so a spilled load built at its trigger hands the child its spill file
BUILD_CHILD_MIB = "0.7"
# float32 postings of 8 entries (5 pages of 512-d entries), a fifth of the vectors as heads:
# drains split and merge; at most a few hundred heads, far below the 4096 `ALL_POSTINGS` reads
SPANN_PARAMS = {
    **SPANN_EXACT,
    "posting_vectors": 8,
    "head_fraction": 0.2,
    "merge_threshold": 3,
    "threads": 1,
}
# Each example opens RocksDB several times (reopen rule); on tmpfs that costs CPU only.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


def shrink(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module constants that size a spilling buffer, shrunk to this test's rows; builds
    in process unless a test says otherwise."""
    monkeypatch.setattr(engine_settings, "SPILL_FROM_BYTES", SPILL_FROM_ROWS * ROW)
    monkeypatch.setattr(flat, "CHUNK_BYTES", MEMORY_CHUNK_ROWS * ROW)
    monkeypatch.setattr(flat, "SPILL_CHUNK_BYTES", SPILL_CHUNK_ROWS * ROW)
    monkeypatch.setattr(flat, "MIN_CHUNK_ROWS", 16)
    monkeypatch.setattr(flat, "_COMPACT_MIN_WASTE", 64)  # overwritten rows compact sooner
    monkeypatch.setenv("VECDB_BUILD_CHILD_MIB", "off")


def note(what: str) -> None:
    """`hypothesis.event` in a machine run; nothing when a test calls the rules itself."""
    if currently_in_test_context():
        event(what)


def big_payloads(ids: list[int], seed: int) -> list[dict[str, Any] | None]:
    """Payloads of a big batch, cheap to make: a `tag` from `strategies.TAGS`, some None."""
    tags = gen.TAGS
    return [
        None if (i + seed) % 5 == 0 else {"tag": tags[(7 * i + seed) % len(tags)], "n": i % 11 - 5}
        for i in ids
    ]


class SpillingEngineVsDict(RuleBasedStateMachine):
    """Quiet-time builds off: the first build is the spill trigger's or optimize's."""

    engine: dict[str, Any] = ENGINE

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-spill-sm-", dir=SCRATCH))
        self.db: Database | None = self.open()
        self.db.create_collection(
            "c", dim=DIM, metric="l2", index="spann", index_params=SPANN_PARAMS
        )
        self.model = Model("l2")
        self.fixed_queries = gen.query_vectors(3, DIM, 0)
        self.spilled = 0  # most bytes seen on file (events) ...
        self.work = {"builds": 0, "drains": 0}  # ... and index jobs done, over the reopens

    def open(self) -> Database:
        return Database(self.dir / "db", sync=False, settings=self.engine)

    @property
    def live(self) -> Database:
        assert self.db is not None
        return self.db

    def stats(self) -> dict[str, Any]:
        return self.live.stats("c")

    def count_work(self) -> None:
        """Add the index jobs of this open (its counters start at 0) to `work`."""
        status = self.stats()["index_status"]
        for key in self.work:
            self.work[key] += status[key]

    def teardown(self) -> None:
        if self.db is not None:
            self.count_work()
            note(f"spilled: {'yes' if self.spilled else 'no'}")
            note(f"builds and rebuilds: {min(self.work['builds'], 3)}")
            note(f"drains: {'yes' if self.work['drains'] else 'no'}")
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- writes ----------------------------------------------------------------------------

    def write(self, ids: list[int], vecs: np.ndarray, payloads: list[Any]) -> None:
        assert self.live.upsert("c", ids, vecs, payloads) == len(ids)
        self.model.upsert(ids, vecs, payloads)

    def load(self, ids: range | list[int], seed: int) -> None:
        """One big batch of `ids` (rows and payloads from `seed` and the first id)."""
        ids = list(ids)
        vecs = gen.seeded_vectors(len(ids), DIM, [seed, ids[0]])
        self.write(ids, vecs, big_payloads(ids, ids[0]))

    @initialize(seed=gen.seeds(), data=st.data())
    def bulk_load(self, seed: int, data: st.DataObject) -> None:
        """Start with nothing, a buffer in memory, a spilled one, or one past the spill
        build point (the worker builds it while the rest streams in), in big batches."""
        n = data.draw(
            st.sampled_from([0, 30]) | st.integers(150, 330) | st.integers(390, POOL),
            label="rows",
        )
        lo = 0
        while lo < n:
            size = data.draw(st.integers(20, 150), label="batch")
            self.load(range(lo, min(n, lo + size)), seed)
            lo += size

    @rule(data=st.data(), seed=gen.seeds())
    def upsert(self, data: st.DataObject, seed: int) -> None:
        ids = data.draw(gen.id_lists(gen.int_ids(POOL - 1), 1, 12), label="ids")
        payloads = data.draw(st.lists(gen.payloads(), min_size=len(ids), max_size=len(ids)))
        self.write(ids, gen.seeded_vectors(len(ids), DIM, seed), payloads)

    @rule(seed=gen.seeds(), n=st.integers(20, 200), fresh=st.booleans(), copies=st.booleans())
    def upsert_big(self, seed: int, n: int, fresh: bool, copies: bool) -> None:
        """A big batch (crosses file chunks): ids absent from the model if `fresh` (and
        enough are), else anywhere in the pool (mostly overwrites); `copies` repeats rows
        (exact ties)."""
        rng = np.random.default_rng(seed)
        absent = [i for i in range(POOL) if i not in self.model]
        pool = absent if fresh and len(absent) >= n else list(range(POOL))
        ids = sorted(int(i) for i in rng.choice(pool, size=n, replace=False))
        vecs = gen.seeded_vectors(n, DIM, [seed, 1])
        if copies:
            vecs[1::2] = vecs[rng.integers(0, n, size=len(vecs[1::2]))]
        self.write(ids, vecs, big_payloads(ids, seed))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ids = data.draw(gen.id_lists(gen.int_ids(POOL + 9), 1, 12), label="ids")
        assert self.live.delete("c", ids) == self.model.delete(ids)

    @rule(seed=gen.seeds(), n=st.integers(10, 300))
    def delete_many(self, seed: int, n: int) -> None:
        ids = np.random.default_rng(seed).choice(POOL, size=n, replace=False).tolist()
        assert self.live.delete("c", ids) == self.model.delete(ids)

    @rule(seed=gen.seeds(), keep=st.just(0) | st.integers(1, 40))
    def delete_most(self, seed: int, keep: int) -> None:
        """All but `keep` points: a spilled buffer left with what fits in memory is
        compacted there at its next write; with none kept, an emptied index takes its next
        load as a first build again, spilled."""
        ids = list(self.model.points)
        np.random.default_rng(seed).shuffle(ids)
        gone = ids[keep:]
        if gone:
            assert self.live.delete("c", gone) == self.model.delete(gone)

    @rule(tag=st.sampled_from(gen.FILTER_TAGS))
    def delete_by_filter(self, tag: Any) -> None:
        flt = {"tag": tag}
        gone = [pid for pid, (_, pay) in self.model.points.items() if matches(pay, flt)]
        assert self.live.delete("c", filter=flt) == self.model.delete(gone)

    # -- index work and lifecycle ----------------------------------------------------------

    @rule()
    def optimize(self) -> None:
        """Waits for every write to be indexed: nothing is buffered or on file after it."""
        self.live.optimize("c", wait=True)
        s = self.stats()
        assert s["indexed"] == s["count"] == len(self.model), s["index_status"]
        assert s["buffer"]["active"] == s["buffer"]["frozen"] == 0
        assert s["buffer"]["spilled_bytes"] == 0
        assert unnamed_files(self.dir) == []  # the build's input (the spill file) is gone

    @rule()
    def optimize_in_background(self) -> None:
        self.live.optimize("c", wait=False)  # returns at once; the checks go on meanwhile

    @rule()
    def reopen(self) -> None:
        """Close and open again: every acknowledged write is back, no spill file is open."""
        self.count_work()
        self.live.close()
        self.db = None
        assert unnamed_files(self.dir) == []  # (no collector: close lets go of every map)
        self.db = self.open()
        s = self.stats()
        if s["indexed"] == 0:  # refilled as writes arrive: spilled again, not all in memory
            assert s["buffer"]["bytes"] <= MIB, s["buffer"]

    # -- reads -----------------------------------------------------------------------------

    @rule(seed=gen.seeds(), k=st.integers(1, 40), flt=gen.filters())
    def search(self, seed: int, k: int, flt: dict[str, Any] | None) -> None:
        q = gen.query_vectors(2, DIM, seed)
        res = self.live.search("c", q, k=k, filter=flt, params=ALL_POSTINGS)
        self.model.assert_search(res, q, k, flt, INTEGER)

    @invariant()
    def equals_model(self) -> None:
        """After every step: count, every id of the pool (and absent ones), exact search."""
        if self.db is None:
            return
        self.model.assert_stored(self.db, "c", absent=range(POOL + 10))
        res = self.db.search("c", self.fixed_queries, k=10, params=ALL_POSTINGS)
        self.model.assert_search(res, self.fixed_queries, 10, None, INTEGER)
        self.spilled = max(self.spilled, self.stats()["buffer"]["spilled_bytes"])


class BackgroundSpillingEngineVsDict(SpillingEngineVsDict):
    """Quiet-time builds on: the worker builds (from 200 rows), drains and rebuilds on its
    own 20 ms after the writes pause (it polls every 10 ms here), while the checks run."""

    engine = BACKGROUND

    @rule()
    def pause(self) -> None:
        """Let the quiet time pass: the worker starts its job while the next steps run."""
        time.sleep(0.05)


def test_a_spilling_buffer_behaves_like_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine with quiet-time builds off."""
    shrink(monkeypatch)
    run_state_machine_as_test(SpillingEngineVsDict, settings=gen.machine_settings(8, 30))


def test_a_spilling_buffer_built_in_a_child_process_behaves_like_a_dict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same with builds of 359+ rows in a child process (about 0.8 s each: fewer
    examples), which maps a gathered spill file through its inherited descriptor."""
    shrink(monkeypatch)
    monkeypatch.setenv("VECDB_BUILD_CHILD_MIB", BUILD_CHILD_MIB)
    run_state_machine_as_test(SpillingEngineVsDict, settings=gen.machine_settings(4, 25))


def test_a_spilling_buffer_built_in_the_background_behaves_like_a_dict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine with quiet-time builds on: checks run while the worker builds."""
    shrink(monkeypatch)
    monkeypatch.setattr(maintenance, "_IDLE_POLL", 0.01)  # quiet time is seen at once
    run_state_machine_as_test(BackgroundSpillingEngineVsDict, settings=gen.machine_settings(8, 30))


# -- fixed sequences of the machine's rules ---------------------------------------------------


def test_the_machine_sizes_reach_every_spill_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shrunk sizes reach what the machines are for (a fixed sequence): rows past 40 go
    to one unnamed file, and go there again after a reopen; deleted down to what fits in
    memory, the segment is compacted there and lets its file go; the worker builds at the
    spill point without an optimize; a second load is rebuilt; a waited optimize leaves no
    file; a reopen brings everything back."""
    shrink(monkeypatch)
    m = SpillingEngineVsDict()
    try:
        m.load(range(300), seed=1)
        s = m.stats()
        assert s["indexed"] == 0 and s["buffered"] == 300
        assert s["buffer"]["spilled_bytes"] >= (300 - 2 * SPILL_FROM_ROWS) * ROW
        assert s["buffer"]["bytes"] <= 2 * SPILL_FROM_ROWS * ROW  # what the cap counts
        assert len(unnamed_files(m.dir)) == 1
        m.reopen()
        again = m.stats()["buffer"]  # spilled again, the cap counting what it did
        assert (again["spilled_bytes"], again["bytes"]) == (s["buffer"]["spilled_bytes"],
                                                            s["buffer"]["bytes"])  # fmt: skip
        m.equals_model()
        m.live.delete("c", list(range(295)))
        m.model.delete(range(295))
        m.load(range(300, 330), seed=2)  # 35 live rows fit in memory: compacted there
        assert m.stats()["buffer"]["spilled_bytes"] == 0
        assert unnamed_files(m.dir) == []
        m.load(range(330, 530), seed=3)  # 235 live rows: a new file
        assert len(unnamed_files(m.dir)) == 1
        m.equals_model()
        m.load(range(200), seed=4)  # 435 live rows: past the spill build point (384)
        deadline = time.monotonic() + 60
        while m.stats()["index_status"]["builds"] == 0 and time.monotonic() < deadline:
            m.equals_model()  # exact while the worker builds
        s = m.stats()
        assert s["index_status"]["builds"] == 1 and s["index_status"]["optimize_requested"] == 0
        assert s["indexed"] > 0
        m.live.delete("c", list(range(200)))  # 235 left in the index
        m.model.delete(range(200))
        m.load(range(530, 600), seed=5)  # 70 >= a fifth of 235; 305 rows <= 384: rebuilt
        m.optimize()  # nothing buffered or on file after it
        assert m.stats()["index_status"]["builds"] == 2
        m.reopen()
        m.equals_model()
    finally:
        m.live.close()
        shutil.rmtree(m.dir, ignore_errors=True)


def test_optimize_lets_go_of_a_spilled_buffer_without_live_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """150 rows spilled, all deleted: after optimize the empty collection holds nothing on
    file (it held 110 dead rows there until its next write)."""
    shrink(monkeypatch)
    m = SpillingEngineVsDict()
    try:
        m.load(range(150), seed=1)
        m.delete_most(seed=1, keep=0)
        m.live.optimize("c")
        s = m.stats()
        assert s["count"] == s["buffer"]["active"] == 0
        assert s["buffer"]["spilled_bytes"] == 0 and unnamed_files(m.dir) == []
    finally:
        m.live.close()
        shutil.rmtree(m.dir, ignore_errors=True)


def test_close_releases_the_spill_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """After close the spill file is gone, whether or not the cycle collector has run
    (disabled here: a fixed outcome; the closed database held it until collected)."""
    shrink(monkeypatch)
    m = SpillingEngineVsDict()
    gc.disable()
    try:
        m.load(range(300), seed=1)
        assert len(unnamed_files(m.dir)) == 1
        m.live.close()
        m.db = None
        assert unnamed_files(m.dir) == []
    finally:
        gc.enable()
        gc.collect()
        if m.db is not None:
            m.db.close()
        shutil.rmtree(m.dir, ignore_errors=True)
