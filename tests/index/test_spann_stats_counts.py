"""`stats` on an index too large to count on every call: the posting sizes come from the
worker's last whole count (plus appends since), or from the block table's entry counts before
any count, and never walk the posting file (a cold 10,000,000 x 96 index read 2.3 GB in 14
minutes for one `stats` call). Small indexes are still counted exactly on each call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_spann_support import SMALL, clustered

from vecdb.index.spann import compaction, open_spann

D = 16


def _exact(idx) -> np.ndarray:  # type: ignore[no-untyped-def]
    return compaction.counts(idx.state)


def _sizes(s: dict) -> tuple[int, int, float]:  # type: ignore[type-arg]
    return s["postings"], s["posting_size_max"], s["replicas_per_vector"]


def test_small_index_is_counted_on_every_call(tmp_path: Path) -> None:
    """Below compaction.WALK_BYTES a remove shows at once (the old behaviour, kept)."""
    idx, _ = open_spann(D, "l2", dict(SMALL), tmp_path)
    x = clustered(3_000, D, seed=1)
    idx.build(np.arange(3_000), x)
    before = idx.stats()
    assert before["posting_counts"] == "counted"
    idx.remove(np.arange(1_000))
    after = idx.stats()
    assert after["replicas_per_vector"] * after["vectors"] < (
        before["replicas_per_vector"] * before["vectors"]
    )
    idx.close()


def test_large_index_stats_never_walk_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every file 'large': a fresh open reports entry counts (an upper bound of the
    live ones), a maintenance pass's count makes them exact, appends since are added, and
    no `stats` call runs the counting kernel."""
    monkeypatch.setattr(compaction, "WALK_BYTES", 0)
    x = clustered(4_000, D, seed=2)
    idx, _ = open_spann(D, "l2", dict(SMALL), tmp_path)
    idx.build(np.arange(3_000), x[:3_000])
    idx.checkpoint(1)
    idx.close()

    idx, _ = open_spann(D, "l2", dict(SMALL), tmp_path)  # a fresh process: nothing counted
    walked: list[int] = []
    real = compaction.live_counts

    def spy(*a):  # type: ignore[no-untyped-def]
        walked.append(1)
        return real(*a)

    monkeypatch.setattr(compaction, "live_counts", spy)
    idx.remove(np.arange(500))  # dead entries the table still counts
    s = idx.stats()
    assert s["posting_counts"] == "entries" and not walked
    exact = _exact(idx)
    walked.clear()
    entries_total = s["replicas_per_vector"] * s["vectors"]
    assert entries_total > exact.sum()  # the removed vectors' entries are still in it

    idx.maintain(None)  # the worker's pass counts the whole file (and cleans up)
    s = idx.stats()
    assert s["posting_counts"] == "last_count"
    exact = _exact(idx)
    assert _sizes(s) == (
        int((exact > 0).sum()),
        int(exact.max()),
        pytest.approx(exact.sum() / s["vectors"]),
    )

    walked.clear()
    idx.add(np.arange(3_000, 4_000), x[3_000:])  # appends, no maintenance yet
    s = idx.stats()
    assert s["posting_counts"] == "last_count" and not walked
    exact = _exact(idx)
    assert s["replicas_per_vector"] * s["vectors"] == pytest.approx(exact.sum())
    idx.close()


def test_maintenance_counts_again_only_after_entries_may_have_gone_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's whole count is reused while only inserts arrive (their entries are
    live); a remove (its copies die in postings nobody knows) makes the next maintenance
    count again, and what that count finds is what a fresh count finds."""
    x = clustered(5_000, D, seed=3)
    idx, _ = open_spann(D, "l2", {"threads": 1}, tmp_path)
    idx.build(np.arange(4_000), x[:4_000])
    idx.maintain(None)
    walks: list[str] = []
    for name in ("live_counts", "removed_counts"):
        real = getattr(compaction, name)

        def spy(*a, _real=real, _name=name):  # type: ignore[no-untyped-def]
            walks.append(_name)
            return _real(*a)

        monkeypatch.setattr(compaction, name, spy)
    for lo in range(4_000, 5_000, 250):  # inserts only, and the maintenance after each
        idx.add(np.arange(lo, lo + 250), x[lo : lo + 250])
        idx.maintain(None)
    assert walks == [] and idx.state.live_seen is not None
    entries = idx.state.table.post_entries[: idx.state.next_posting].astype(np.int64)
    reused = idx.state.live_seen.estimate(entries)
    monkeypatch.undo()
    np.testing.assert_array_equal(reused, compaction.counts(idx.state, keep=False))

    idx.remove(np.arange(0, 4_000, 3))
    assert not idx.state.live_seen.current(idx.state)
    idx.maintain(None)
    seen = idx.state.live_seen
    assert seen is not None and seen.current(idx.state)
    entries = idx.state.table.post_entries[: idx.state.next_posting].astype(np.int64)
    np.testing.assert_array_equal(seen.estimate(entries), compaction.counts(idx.state, keep=False))
    idx.close()


def test_a_large_file_is_counted_again_once_enough_may_have_gone_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above WALK_BYTES (here: every file), removes of fewer slots than STALE_SHARE of the
    entries keep the worker's count (no walk); past it, the next maintenance counts again
    and then sees every dead entry."""
    monkeypatch.setattr(compaction, "WALK_BYTES", 0)
    monkeypatch.setattr(compaction, "STALE_SHARE", 0.05)
    x = clustered(3_000, D, seed=4)
    # a disk budget this small index is within (over it, every maintenance counts); int8
    # postings, whose build leaves free space that defragmenting moves fill (a moved posting
    # holds only visible entries: the kept count must follow it)
    params = {"threads": 1, "max_disk_ratio": 50.0, "vector_dtype": "int8"}
    idx, _ = open_spann(D, "l2", params, tmp_path)
    idx.build(np.arange(3_000), x)
    idx.maintain(None)
    seen = idx.state.live_seen
    assert seen is not None
    idx.remove(np.arange(0, 30))  # 1% of the slots: under 5% of the entries
    idx.maintain(None)
    assert idx.state.live_seen is seen  # kept, not counted again
    idx.remove(np.arange(30, 300))  # 10% in all: past it
    idx.maintain(None)
    again = idx.state.live_seen
    assert again is not seen and again is not None and again.current(idx.state)
    entries = idx.state.table.post_entries[: idx.state.next_posting].astype(np.int64)
    np.testing.assert_array_equal(again.estimate(entries), compaction.counts(idx.state, keep=False))
    assert idx.state.counters["defrags"] > 0
    idx.close()
