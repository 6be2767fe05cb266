"""The index contract (vecdb.index.base) on SPANN: `visible` tested inside the scan, per-call
stats and head ef, remove wins, bounded maintenance, the one "entry visible" predicate, the
state file's version check, and searches and removes racing with add + maintain."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_spann_support import SMALL, assert_no_orphans, assert_tree_consistent, clustered

from vecdb.errors import FormatError
from vecdb.index.base import SearchStats, Visible
from vecdb.index.spann import open_spann, persist
from vecdb.index.spann import state as state_mod
from vecdb.kernels.posting import (
    NO_VISIBLE,
    VERSION_REMOVED,
    count_visible,
    entries_visible,
    next_versions,
)

D, K = 16, 10
EXHAUSTIVE = {"max_postings": 4096, "prune_ratio": 1e9}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """4,000 clustered vectors, bulk built (read-only tests)."""
    x = clustered(4000, D, seed=21)
    idx, _ = open_spann(D, "l2", {"threads": 2}, tmp_path_factory.mktemp("contract"))
    idx.build(np.arange(4000), x)
    yield idx, x
    idx.close()


def exact_visible(x: np.ndarray, q: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    d = ((q[:, None, :] - x[members][None, :, :]) ** 2).sum(2)
    return np.sort(d, axis=1)[:, :k]


def test_visible_set_fills_k_results_from_inside_the_scan(built) -> None:  # type: ignore[no-untyped-def]
    """A small visible set far from the query still gives k results, all from the set, with
    their true distances, sorted (the search widens past max_postings when it must)."""
    idx, x = built
    rng = np.random.default_rng(0)
    members = rng.choice(4000, 25, replace=False)
    q = clustered(5, D, seed=22)
    res = idx.search(q, K, {"max_postings": 2}, Visible.from_slots(members, bound=4000))
    assert (res.slots >= 0).all() and np.isin(res.slots, members).all()
    true = ((q[:, None, :] - x[res.slots]) ** 2).sum(2)
    np.testing.assert_allclose(res.distances, true, rtol=2e-3, atol=2e-3)
    assert (np.diff(res.distances, axis=1) >= 0).all()
    assert (res.distances[:, 0] <= exact_visible(x, q, members, 1)[:, 0] * 1.5).all()
    # an array of slots is accepted too; a set smaller than k pads
    few = idx.search(q, K, None, Visible.from_slots(members[:3]))
    assert (np.sort(few.slots[:, :3], axis=1) == np.sort(members[:3])).all()
    assert (few.slots[:, 3:] == -1).all() and np.isinf(few.distances[:, 3:]).all()
    empty = idx.search(q, K, None, Visible.from_slots([]))
    assert (empty.slots == -1).all()


def test_unrestricted_and_all_visible_searches_agree(built) -> None:  # type: ignore[no-untyped-def]
    """A visible set holding every slot changes nothing."""
    idx, _ = built
    q = clustered(20, D, seed=23)
    a = idx.search(q, K)
    b = idx.search(q, K, None, Visible.from_mask(np.ones(4000, bool)))
    np.testing.assert_array_equal(a.slots, b.slots)


def test_stats_are_per_call(built) -> None:  # type: ignore[no-untyped-def]
    """Each result carries what its own call read."""
    idx, _ = built
    q = clustered(7, D, seed=24)
    small, big = idx.search(q, K, {"max_postings": 2}), idx.search(q, K, {"max_postings": 32})
    assert isinstance(small.stats, SearchStats) and small.stats.queries == 7
    assert small.stats.postings_read < big.stats.postings_read
    assert small.stats.heads_searched == 7 * 2 and big.stats.bytes_read > 0
    assert small.stats.as_dict()["postings_read_per_query"] <= 2


def test_concurrent_searches_with_different_ef_match_serial(built) -> None:  # type: ignore[no-untyped-def]
    """Searches with different head_ef from several threads give the serial answers (no
    shared set_ef)."""
    idx, _ = built
    q = clustered(50, D, seed=25)
    settings = [{"head_ef": ef, "max_postings": 4} for ef in (1, 4, 16, 64, 256)]
    serial = [idx.search(q, K, s).slots for s in settings]
    out: dict[int, list[np.ndarray]] = {i: [] for i in range(len(settings))}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for _ in range(20):
                out[i].append(idx.search(q, K, settings[i]).slots)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(settings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, got in out.items():
        for slots in got:
            np.testing.assert_array_equal(slots, serial[i])


def test_removes_while_a_publish_prepares_stay_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`publish` merges the versions before taking the write lock; removes that land in
    that window (here: from inside the preparation, which the read lock around the log's
    start does not block) are logged and applied under the lock: the slots stay removed,
    leave the new tree's primary leaves, and the live count is right. Dropping the log
    (applying only what the preparation saw) fails the first assertion below."""
    x = clustered(600, D, seed=27)
    idx, _ = open_spann(D, "l2", {"threads": 1}, tmp_path)
    idx.remove(np.array([3]))  # before the build: seen by the preparation
    real = state_mod._remove_wins
    calls: list[int] = []

    def racing(merged, tree, gone):  # type: ignore[no-untyped-def]
        if not calls:  # the first call is the preparation's, outside the write lock
            idx.remove(np.array([11, 12, 650]))  # 650: past every known slot
        calls.append(len(gone))
        return real(merged, tree, gone)

    monkeypatch.setattr(state_mod, "_remove_wins", racing)
    idx.build(np.arange(600), x)
    monkeypatch.undo()
    assert len(idx) == 597
    assert idx.state.slot_version[[3, 11, 12, 650]].tolist() == [VERSION_REMOVED] * 4
    for s in (3, 11, 12):
        assert s not in idx.search(x[s][None, :], K, EXHAUSTIVE).slots
        assert idx.state.tree.primary[s] == -1
    live = set(range(600)) - {3, 11, 12}
    assert_no_orphans(idx, live)
    assert_tree_consistent(idx, live)
    assert idx.state.removes_since is None
    assert len(calls) == 2 and calls[1] == 3  # the log held the three late removes


def test_remove_wins_over_later_add_and_build(tmp_path: Path) -> None:
    """A removed slot never comes back: not by add, not by a later bulk build naming it,
    and unknown slots removed first are ignored when they arrive."""
    x = clustered(600, D, seed=26)
    idx, _ = open_spann(D, "l2", {"threads": 1}, tmp_path)
    idx.remove(np.array([5, 700]))  # 700 is not known yet
    idx.build(np.arange(600), x)
    assert len(idx) == 599
    idx.remove(np.array([7]))
    idx.add(np.array([7, 700, 800]), np.vstack([x[7], x[8], x[9]]))
    assert len(idx) == 599  # 7 and 700 stay removed, 800 is new
    for s, v in ((5, x[5]), (7, x[7]), (700, x[8])):
        assert s not in idx.search(v[None, :], K, EXHAUSTIVE).slots
    assert idx.search(x[9][None, :], 1, EXHAUSTIVE).slots[0, 0] in (9, 800)
    assert idx.state.slot_version[[5, 7, 700]].tolist() == [VERSION_REMOVED] * 3
    live = set(range(600)) - {5, 7} | {800}
    assert_no_orphans(idx, live)
    assert_tree_consistent(idx, live)


def test_bulk_build_leaves_no_maintenance(built) -> None:  # type: ignore[no-untyped-def]
    """Postings small from the build are not merged: maintain after a build does nothing."""
    idx, _ = built
    before = dict(idx.state.counters)
    assert idx.maintain() is False
    assert idx.state.counters == before


def test_maintain_is_bounded_and_reports_work_left(tmp_path: Path) -> None:
    """With no budget left, maintain does one batch and says work is left; repeated calls
    finish the work and then say none is left."""
    idx, _ = open_spann(8, "l2", {"threads": 1, "posting_pages": 1}, tmp_path)
    x = clustered(2000, 8, seed=27)
    idx.build(np.arange(2000), x)
    blob = x[0] + 0.05 * np.random.default_rng(1).normal(size=(3000, 8)).astype(np.float32)
    idx.add(np.arange(2000, 5000), blob)
    assert idx.state.pending
    calls = 1
    while idx.maintain(budget_s=0.0):
        calls += 1
        assert calls < 500
    assert calls > 1 and not idx.state.pending
    assert idx.stats()["posting_size_max"] <= idx.state.limit
    assert_no_orphans(idx, set(range(5000)))
    assert_tree_consistent(idx, set(range(5000)))


def test_predicate_twins_agree() -> None:
    """The numpy twin of the entry-visible predicate agrees with the numba one (stale,
    removed, never-added, out-of-range slots, bitmap membership)."""
    rng = np.random.default_rng(3)
    slot_version = rng.integers(0, 256, 300).astype(np.uint8)
    slots = rng.integers(-5, 320, 2000).astype(np.int64)
    versions = next_versions(rng.integers(0, 254, 2000).astype(np.uint8))
    hit = slots[(slots >= 0) & (slots < 300)][:500]
    versions[: len(hit)] = slot_version[hit]
    slots[: len(hit)] = hit
    vis = Visible.from_slots(rng.choice(300, 100, replace=False), bound=200).bits
    for bits in (None, vis):
        got = entries_visible(slots, versions, slot_version, bits)
        want = np.array(
            [
                0 <= s < 300
                and slot_version[s] not in (0, VERSION_REMOVED)
                and slot_version[s] == v
                and (bits is None or (s < 8 * len(bits) and (bits[s >> 3] >> (s & 7)) & 1 == 1))
                for s, v in zip(slots.tolist(), versions.tolist(), strict=True)
            ]
        )
        np.testing.assert_array_equal(got, want)
        n = count_visible(slot_version, NO_VISIBLE if bits is None else bits, bits is not None)
        live = np.arange(300)
        assert n == entries_visible(live, slot_version, slot_version, bits).sum()
    assert next_versions(np.array([0, 1, 253, 254], np.uint8)).tolist() == [1, 2, 254, 1]


def test_older_state_file_is_refused_naming_versions(tmp_path: Path) -> None:
    """A state file of an older version is a FormatError naming file, found and supported
    versions (the engine then rebuilds the index from its store)."""
    idx, _ = open_spann(4, "l2", {}, tmp_path)
    idx.add(np.arange(50), np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    idx.checkpoint(1)
    idx.close()
    (state,) = tmp_path.glob("state.*.bin")
    data = bytearray(state.read_bytes())
    data[8:12] = (2).to_bytes(4, "little")
    state.write_bytes(bytes(data))
    with pytest.raises(
        FormatError, match=rf"{state.name}.*version 2.*supports {persist.STATE_VERSION}"
    ):
        open_spann(4, "l2", {}, tmp_path)


def test_searches_and_removes_race_with_add_and_maintain(tmp_path: Path) -> None:
    """Searches and removes in threads while the worker adds and maintains: no exception, a
    slot is never returned once its remove returned, and at the end every live slot is
    found by an exhaustive search."""
    rng = np.random.default_rng(4)
    total = 6000
    x = clustered(total, 8, seed=28, spread=0.3)
    idx, _ = open_spann(8, "l2", SMALL, tmp_path)
    idx.build(np.arange(1000), x[:1000])
    removed: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for lo in range(1000, total, 250):
                idx.add(np.arange(lo, lo + 250), x[lo : lo + 250])
                idx.maintain(budget_s=0.02)
            while idx.maintain(budget_s=0.05):
                pass
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            stop.set()

    def remover() -> None:
        try:
            while not stop.is_set() and len(removed) < total // 4:
                stop.wait(0.002)
                s = rng.integers(0, total, 5)
                idx.remove(s)
                with lock:
                    removed.update(s.tolist())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def searcher() -> None:
        try:
            while not stop.is_set():
                with lock:
                    gone = np.fromiter(removed, np.int64, len(removed))
                q = x[rng.integers(0, total, 8)]
                res = idx.search(q, K, {"max_postings": 8})
                assert not np.isin(res.slots, gone).any()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=f) for f in (worker, remover, searcher, searcher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[0]
    live = sorted(set(range(total)) - removed)
    found = idx.search(x[live], 1, EXHAUSTIVE).slots[:, 0]
    assert (found == np.array(live)).mean() > 0.999  # clustered data may hold exact ties
    assert not np.isin(found, list(removed)).any()
    assert len(idx) == len(live)
    assert_no_orphans(idx, set(live))
    assert_tree_consistent(idx, set(live))
    assert idx.stats()["longest_write_lock_phase"]  # write sections were recorded
