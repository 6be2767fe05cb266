"""A drain run in a child process (`vecdb.index.spann.drain_child`) into a SPANN index with a
rerank store (int8 postings, float16 rows): the child writes the rows, the parent's store
object takes them in before the swap (`VectorStore.refresh`), so searches (rerank on) equal
the same drain's in process; rows read back after the swap, after a checkpoint and reopen,
and after a crash at each of the drain child's kill points and the op-log replay; slots
removed while the child ran stay removed and give their pages back at the next checkpoint;
the store object's own rules that this leans on (a file grown by another object of it, pages
written after they were punched). Each drain test runs with the store's rows in slot order and
in head order (`row_order`: the child's rows and slot -> row map taken in by the parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_spann_support import clustered, exact_dists, store_rows, stored

from vecdb.engine import Database
from vecdb.index.spann import child, drain_child, open_spann
from vecdb.index.spann.persist import read_manifest, verify_files
from vecdb.index.spann.vectors import HEAD, PAGE, VectorStore
from vecdb.kernels.postscan import half_to_float

N, TAIL, D, K = 4_000, 1_200, 16, 10
PARAMS = {"threads": 1, "head_fraction": 0.05, "vector_dtype": "int8", "rerank": "float16"}
ORDERS = ("slot", "head")  # the rerank store's row order (`row_order`)
# every posting read and 200 code candidates re-ranked: the answer is the exact top-k over
# the store's rows, whatever the postings' layout (a child's splits draw other random numbers)
WIDE = {"max_postings": 4096, "prune_ratio": 1e9, "rerank_k": 200}


def allocated_bound(idx: Any, live: np.ndarray) -> int:
    """Bytes the store may take on disk: the header page and the pages holding live rows."""
    store = idx.state.store
    row, live = store.row, store.rows_of(live)
    first, last = HEAD + live * row, HEAD + (live + 1) * row - 1
    pages = set((first // PAGE).tolist()) | set((last // PAGE).tolist())
    return PAGE * (1 + len(pages))


def assert_verified(directory: Path) -> None:
    bad = [r for r in verify_files(directory) if not r["ok"]]
    assert not bad, bad


def _built(  # type: ignore[no-untyped-def]
    directory: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any] = PARAMS, pre: int = 0
):
    """N clustered vectors built in process (plus `pre` more added in process), checkpointed
    at sequence 1."""
    monkeypatch.setenv(child.ENV, "off")
    idx, _ = open_spann(D, "l2", params, directory)
    x = clustered(N + pre + TAIL, D, seed=3)
    idx.build(np.arange(N), x[:N])
    if pre:
        idx.add(np.arange(N, N + pre), x[N : N + pre])
    idx.checkpoint(1)
    return idx, x


def _maintain_in_process(idx: Any, seq: int) -> None:
    """What the child does after its add, here: checkpoint, maintain until no work is left."""
    idx.checkpoint(seq)
    for _ in range(drain_child.MAINTAIN_ROUNDS):
        more = idx.maintain(None)
        idx.checkpoint(seq)
        if not (more or idx.unstuck()):
            break


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("io", ["mmap", "direct"])
def test_drain_in_child_equals_drain_in_process_and_reopens(
    io: str, order: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same tail drained in a child and in process: searches with the rerank give the
    same slots and distances (the exact top-k over the float16 rows), every row reads back
    through the parent's store object, and again after a checkpoint and reopen; the files
    verify. Fails if the parent's store keeps its map from before the drain (the child grew
    the file past it): with io=mmap the searches skip the rows past the map; with io=direct
    they read rows by offset, and the rows check through the map fails."""
    params = dict(PARAMS, io=io, row_order=order)
    here, x = _built(tmp_path / "here", monkeypatch, params)
    there, _ = _built(tmp_path / "there", monkeypatch, params)
    assert there.state.store.capacity < N + TAIL  # the drain must grow the store
    tail = (np.arange(N, N + TAIL), x[N:])
    here.add(*tail)
    _maintain_in_process(here, 2)
    drain_child.add_in_child(there.state, iter([tail]), 2, 1, None)
    assert read_manifest(tmp_path / "there")["applied_seq"] == 2
    everything = np.arange(N + TAIL)
    np.testing.assert_array_equal(store_rows(there, everything), stored(x))
    q = np.r_[x[N : N + 100], x[:100]] + 0.01
    want, got = here.search(q, K, WIDE), there.search(q, K, WIDE)
    np.testing.assert_array_equal(got.slots, want.slots)
    np.testing.assert_array_equal(got.distances, want.distances)
    assert got.stats.extra["rerank_rows"] > 0
    exact = np.sort(exact_dists(stored(x), q, "l2"), axis=1)[:, :K]
    np.testing.assert_allclose(got.distances, exact, rtol=1e-4, atol=1e-5)
    there.checkpoint(2)  # the engine's checkpoint after the drain
    there.close()
    here.close()
    assert_verified(tmp_path / "there")
    reopened, seq = open_spann(D, "l2", params, tmp_path / "there")
    assert seq == 2
    np.testing.assert_array_equal(store_rows(reopened, everything), stored(x))
    again = reopened.search(q, K, WIDE)
    np.testing.assert_array_equal(again.slots, got.slots)
    np.testing.assert_array_equal(again.distances, got.distances)
    reopened.close()


@pytest.mark.parametrize("order", ORDERS)
def test_removes_while_the_child_runs_stay_removed_and_give_their_pages_back(
    order: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slots removed in the parent while the child works (old ones, and a run of tail ones
    whose pages the parent's checkpoint before the drain had punched: free room past its
    live rows) are gone from the answers, and the next checkpoint punches their pages: the
    store's allocated bytes are the live rows' pages. Fails if the parent's store still
    takes those pages for holes (`refresh` not forgetting them for the drained rows)."""
    pre = 100
    params = dict(PARAMS, row_order=order)
    idx, x = _built(tmp_path, monkeypatch, params, pre=pre)
    store = idx.state.store
    top = N + pre + TAIL
    gone = np.r_[np.arange(0, 300), np.arange(N + pre, N + pre + 900)]
    done: list[bool] = []

    def remove_once(phase: str, n: int, total: int) -> None:
        if phase == "maintain" and not done:  # the parent's index, while the child runs
            idx.remove(gone)
            done.append(True)

    # the pre-drain checkpoint punched pages past the live rows (in slot order; in head
    # order rows past the next row are not judged until they are given out)
    assert store.punched.any() == (order == "slot")
    chunk = (np.arange(N + pre, top), x[N + pre :])
    drain_child.add_in_child(idx.state, iter([chunk]), 2, 1, remove_once)
    assert done
    live = np.setdiff1d(np.arange(top), gone)
    assert len(idx) == len(live)
    got = idx.search(x[gone[::10]], K, WIDE).slots
    assert not np.isin(got, gone).any()
    np.testing.assert_array_equal(store_rows(idx, live), stored(x[live]))
    idx.checkpoint(2)
    assert store.allocated_bytes() <= allocated_bound(idx, live)
    idx.close()
    assert_verified(tmp_path)
    reopened, _ = open_spann(D, "l2", params, tmp_path)
    np.testing.assert_array_equal(store_rows(reopened, live), stored(x[live]))
    assert not np.isin(reopened.search(x[gone[::10]], K, WIDE).slots, gone).any()
    reopened.close()


def test_use_child_takes_an_index_with_a_rerank_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A built index with a rerank store drains in a child like one without."""
    idx, _ = _built(tmp_path, monkeypatch)
    monkeypatch.setenv(drain_child.ENV, "0")
    assert idx.state.store is not None and drain_child.use_child(idx.state, 100)
    idx.close()


CRASH = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import numpy as np
from test_spann_support import clustered
from vecdb.index.spann import drain_child, open_spann
N, TAIL, D = {n}, {tail}, {d}
idx, _ = open_spann(D, "l2", {params!r}, Path({directory!r}))
x = clustered(N + TAIL, D, seed=3)
idx.build(np.arange(N), x[:N])
idx.checkpoint(1)
if {with_child}:  # the parent dies with the child: it never publishes its own state again
    drain_child._republish = lambda *a: os.kill(os.getpid(), 9)
try:
    drain_child.add_in_child(idx.state, iter([(np.arange(N, N + TAIL), x[N:])]), 2, 1, None)
finally:
    os.kill(os.getpid(), 9)  # whatever happened: the process dies without a close
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    ("point", "with_child", "durable"),
    [
        ("drain_child_start", False, 1),
        ("drain_child_published", False, 1),
        ("drain_child_published", True, 2),
        ("drain_child", False, 2),
    ],
)
def test_crash_at_each_kill_point_reopens_with_every_row(
    point: str, with_child: bool, durable: int, order: str, tmp_path: Path
) -> None:
    """SIGKILL at each of the drain child's kill points (the child before it inserts; the
    child after its first checkpoint, with the parent republishing its own state or dying
    with the child; the parent after the child's last checkpoint, before its swap), then
    reopen and replay what the op log holds after the durable sequence (the tail, in
    process, when the child's checkpoint is not the published one): every live slot's row
    holds its vector, every vector finds itself at its row's exact distance, the files
    verify. Where the child's checkpoint is the one reopened (durable 2) this fails if the
    rows are written by the parent at the swap instead of by the child."""
    code = CRASH.format(
        tests=str(Path(__file__).parent),
        n=N,
        tail=TAIL,
        d=D,
        params=dict(PARAMS, row_order=order),
        directory=str(tmp_path),
        with_child=with_child,
    )
    env = dict(os.environ, VECDB_KILL_AT=point, **{child.ENV: "off"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert out.returncode == -signal.SIGKILL, out.stderr.decode()[-2000:]
    assert not list(tmp_path.glob("build.*"))  # a reopen would delete them; none left here
    idx, seq = open_spann(D, "l2", dict(PARAMS, row_order=order), tmp_path)
    assert seq == durable
    x = clustered(N + TAIL, D, seed=3)
    if seq == 1:  # the engine's replay: the tail comes back through the buffer's drain
        assert len(idx) == N
        idx.add(np.arange(N, N + TAIL), x[N:])
        idx.checkpoint(2)
    everything = np.arange(N + TAIL)
    assert len(idx) == N + TAIL
    np.testing.assert_array_equal(store_rows(idx, everything), stored(x))
    probe = everything[::7]
    got = idx.search(x[probe], 1, WIDE)
    np.testing.assert_array_equal(got.slots[:, 0], probe)
    want = ((stored(x[probe]) - x[probe]) ** 2).sum(1)
    np.testing.assert_allclose(got.distances[:, 0], want, rtol=1e-3, atol=1e-6)
    idx.close()
    assert_verified(tmp_path)


# --- the store object's rules the drain child leans on ----------------------------------------


def test_store_refresh_reads_rows_another_object_wrote_past_its_map(tmp_path: Path) -> None:
    """Two store objects of one file (the parent's and a drain child's): rows the other one
    wrote past this one's map are out of reach (warm reads see `capacity` rows) until
    `refresh`, then read back."""
    x = clustered(3000, D, seed=5)
    mine = VectorStore(tmp_path, D, "float16")
    mine.write(np.arange(1000), x[:1000])
    theirs = VectorStore(tmp_path, D, "float16")
    theirs.write(np.arange(1000, 3000), x[1000:])
    theirs.sync()
    assert len(mine.rows()) < 3000
    mine.refresh(np.arange(1000, 3000))
    assert len(mine.rows()) >= 3000
    got = half_to_float(np.asarray(mine.rows()[:3000]).ravel()).reshape(3000, D)
    np.testing.assert_array_equal(got, stored(x))
    mine.close()
    theirs.close()


def test_store_growth_never_cuts_rows_another_object_wrote(tmp_path: Path) -> None:
    """A store object whose size is from before another object grew the file (a parent
    whose drain child failed after writing rows): its own growth keeps the file at least as
    long (ftruncate to its own idea of the size would cut the other's rows off)."""
    x = clustered(3100, D, seed=6)
    mine = VectorStore(tmp_path, D, "float16")
    mine.write(np.arange(10), x[:10])  # room for MIN_ROWS
    theirs = VectorStore(tmp_path, D, "float16")
    theirs.write(np.arange(3000, 3100), x[3000:])
    mine.write(np.arange(1100, 1200), x[1100:1200])  # grows its room past MIN_ROWS, not 3100
    with open(mine.path, "rb") as f:
        raw = f.read()
    assert len(raw) >= HEAD + 3100 * mine.row
    bits = np.frombuffer(raw[HEAD + 3000 * mine.row : HEAD + 3100 * mine.row], np.uint16)
    np.testing.assert_array_equal(half_to_float(bits.copy()).reshape(100, D), stored(x[3000:]))
    mine.close()
    theirs.close()


def test_store_page_punched_then_written_is_punched_again(tmp_path: Path) -> None:
    """A page punched while its slots were unused (room past the live rows), then written
    (by this object, or by another one and taken in with `refresh`), then dead again: the
    next `reclaim` punches it again (fails if the page is still taken for a hole)."""
    x = clustered(2048, D, seed=7)
    for other in (False, True):
        directory = tmp_path / str(other)
        directory.mkdir()
        mine = VectorStore(directory, D, "float16")
        mine.write(np.arange(128), x[:128])
        versions = np.zeros(2048, np.uint8)
        versions[:128] = 1
        mine.ensure(2048)
        mine.reclaim(versions)  # pages of slots 128.. are unused: marked as holes
        assert mine.punched[2:].all()
        slots = np.arange(512, 1024)
        if other:
            theirs = VectorStore(directory, D, "float16")
            theirs.write(slots, x[slots])
            theirs.close()
            mine.refresh(slots)
        else:
            mine.write(slots, x[slots])
        before = mine.allocated_bytes()
        assert before >= len(slots) * mine.row
        versions[slots] = 255  # removed
        assert mine.reclaim(versions) == len(slots) * mine.row
        assert mine.allocated_bytes() < before
        mine.close()


def test_engine_drains_into_a_rerank_index_in_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the database (`VECDB_DRAIN_CHILD_MIB=0`): the drain of an int8 + float16
    rerank collection goes to a child (fails on code that keeps such indexes' drains in
    process), and the answers are the exact top-k over the stored rows, before and after a
    reopen."""
    monkeypatch.setenv(drain_child.ENV, "0")
    started: list[dict[str, Any]] = []
    run = child._run

    def spy(job: dict[str, Any], *args: Any, **kw: Any) -> int:
        if kw.get("module") == drain_child.__name__:
            started.append(job)
        return run(job, *args, **kw)

    monkeypatch.setattr(child, "_run", spy)
    tail = 600  # under the engine's REBUILD_SHARE of the index: a drain, not a rebuild
    x = clustered(N + tail, D, seed=8)
    q = x[::53] + 0.01
    exact = np.sort(exact_dists(stored(x), q, "l2"), axis=1)[:, :K]
    settings = {"idle_seconds": 3600, "build_min_vectors": 1}
    db = Database(tmp_path / "db", settings=settings)
    db.create_collection("c", dim=D, metric="l2", index_params=PARAMS)
    db.upsert("c", list(range(N)), x[:N])
    db.optimize("c")
    db.upsert("c", list(range(N, N + tail)), x[N:])
    db.optimize("c")
    assert len(started) == 1 and started[0]["n"] == tail
    info = db.get_collection("c")
    assert (info.indexed, info.buffered) == (N + tail, 0)
    got = db.search("c", q, k=K, params=WIDE)
    np.testing.assert_allclose(np.asarray(got.distances), exact, rtol=1e-4, atol=1e-5)
    db.close()
    db = Database(tmp_path / "db", settings=settings)
    again = db.search("c", q, k=K, params=WIDE)
    np.testing.assert_array_equal(np.asarray(again.ids), np.asarray(got.ids))
    db.close()
