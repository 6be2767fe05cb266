"""The disk guard of SPANN maintenance: a bounded allocation never grows the file past its
limit and changes nothing when it cannot fit; maintenance under a tight budget never takes
the posting file past the limit, and when it can do nothing more it says so (it waits for
the disk state to change instead of spinning)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from vecdb.engine.maintenance import maintain as engine_maintain
from vecdb.index.spann import open_spann, split
from vecdb.index.spann.index import SpannIndex
from vecdb.index.spann.postings import PostingFile
from vecdb.index.spann.space import ALIGN, PAGE, NoRoom, SpaceMap
from vecdb.storage.kv import KV


def test_bounded_alloc_takes_free_space_or_fails_without_a_change() -> None:
    space = SpaceMap(PAGE, PAGE)
    a = space.alloc(4 * ALIGN)
    b = space.alloc(4 * ALIGN)
    space.release(a, 4 * ALIGN, fresh=True)
    space.readers_done()
    before = space.stats()
    assert space.alloc(8 * ALIGN, limit=b + 4 * ALIGN) == -1  # would grow past the limit
    assert space.stats() == before
    assert space.alloc(2 * ALIGN, limit=b + 4 * ALIGN) == a  # a free extent: no growth
    assert space.alloc(8 * ALIGN, limit=None) >= b + 4 * ALIGN  # unbounded: grows


def test_bounded_append_raises_and_gives_back_what_it_placed(tmp_path: Path) -> None:
    f = PostingFile(tmp_path / "postings.0.bin", 8, width=4)
    rng = np.random.default_rng(0)

    def block(n: int) -> np.ndarray:
        return f.encode(0, np.arange(n), np.ones(n, np.uint8), rng.random((n, 8), np.float32))

    f.append([block(4)])
    end, free = f.length, f.space.free_bytes
    with pytest.raises(NoRoom):
        f.append([block(2), block(200)], limit=end + len(block(2)) + PAGE)
    assert (f.length, f.space.free_bytes) == (end, free)
    f.close()


def test_maintenance_under_a_tight_budget_stays_below_it_and_stops(tmp_path: Path) -> None:
    dim, n = 128, 3000
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, _ = open_spann(dim, "cosine", {"threads": 1, "max_disk_ratio": 2.0}, tmp_path)
    idx.build(np.arange(n), x)
    idx.checkpoint(1)
    st = idx.state
    worst = 0.0

    def settle() -> int:
        nonlocal worst
        for calls in range(1, 5000):
            more = idx.maintain(0.0)
            worst = max(worst, st.file.length / st.rewrite_limit())  # the limit it used
            if not more:
                return calls
        raise AssertionError("maintenance never said it was done")

    settle()
    gone = rng.choice(n, n // 3, replace=False)
    idx.remove(gone)  # the budget drops under the file: the ceiling takes over
    settle()
    idx.add(n + np.arange(len(gone)), x[gone])
    settle()
    assert worst <= 1.0 + 1e-9, worst  # never past the guard's limit (growth chunk aside)
    assert st.file.length <= st.budget_bytes()
    res = idx.search(x[gone[:50]], 1, {"max_postings": 4096, "prune_ratio": 1e9})
    np.testing.assert_array_equal(res.slots[:, 0], n + np.arange(50))
    idx.close()


def test_a_split_held_back_goes_on_once_a_checkpoint_frees_room(tmp_path: Path) -> None:
    """A split the guard holds back (no room below the limit) makes `maintain` say it is done;
    the engine then checkpoints, which frees the space the split waits for: the engine's
    maintenance step asks `unstuck` and keeps maintenance pending, and the split goes on
    without any new write (it stayed unsplit, the collection READY)."""
    dim, n = 64, 3000
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = {"threads": 1, "max_disk_ratio": 1.8, "vector_dtype": "float16"}  # room for 1.8
    idx, _ = open_spann(dim, "cosine", params, tmp_path / "i")
    idx.build(np.arange(n), x)
    idx.checkpoint(1)
    st = idx.state
    settle(idx)
    idx.remove(rng.choice(n, n // 5, replace=False))
    settle(idx)
    y = x[:20][rng.integers(0, 20, 2000)] + 0.01 * rng.standard_normal((2000, dim))
    idx.add(
        10 * n + np.arange(2000), (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)
    )
    settle(idx)  # done, as far as it can go
    assert st.pending and st.is_stuck("split") and not idx.unstuck()
    splits = st.counters["splits"]
    kv = KV(tmp_path / "kv", sync=False)
    status = SimpleNamespace(state="", phase="", maintenance_pending=True)
    coll: Any = SimpleNamespace(
        status=status, index=idx, kv=kv, prefix=b"c", applied_seq=2,
        settings=SimpleNamespace(maintain_slice=0.0), kind=SimpleNamespace(persistent=True),
    )  # fmt: skip
    for turn in range(100):  # the worker's turns while maintenance is pending
        if not status.maintenance_pending:
            break
        engine_maintain(coll)
        assert turn > 0 or status.maintenance_pending  # the checkpoint freed what it waits on
    assert st.counters["splits"] > splits and not st.pending and not idx.unstuck()
    kv.close()
    idx.close()


def settle(idx: SpannIndex) -> None:
    """Maintain one batch at a time until it says it is done."""
    for _ in range(5000):
        if not idx.maintain(0.0):
            return
    raise AssertionError("maintenance never said it was done")


def test_a_held_back_split_batch_clusters_only_what_it_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the guard finds no room for the first posting of a batch, the batch goes back to
    the queue having clustered that one posting only (a retry redid every 2-means)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    idx, _ = open_spann(16, "l2", {"threads": 1}, tmp_path)
    idx.build(np.arange(600), x)
    st = idx.state
    batch = [int(p) for p in np.flatnonzero(st.leaf_mask(st.next_posting))[:5]]
    st.limit = 1  # every posting is over its entry budget
    calls: list[int] = []
    two_means = split.two_means

    def counted(state: object, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(vecs))
        return two_means(st, vecs)

    monkeypatch.setattr(split, "two_means", counted)
    monkeypatch.setattr(split, "write_plan", lambda *a: False)  # no room anywhere
    split.split_batch(st, batch, limit=0)
    assert len(calls) == 1 and st.pending == set(batch) and st.is_stuck("split")
    idx.close()


def test_maintenance_leaves_the_disks_headroom_and_goes_on_when_room_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clean-ups and splits write new blocks before the old ones free: on a disk with no
    room past `room.HEADROOM` they take only free space inside the file and otherwise wait
    (before, a clean-up batch of up to 2% of the file could take the disk to 0 bytes free,
    under RocksDB's reserve); once the disk has room again they go on. Searches stay right
    meanwhile."""
    from vecdb.index import room

    free = {"bytes": 1 << 50}
    monkeypatch.setattr(room, "free_bytes", lambda directory: free["bytes"])
    dim, n = 32, 6000
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    idx, _ = open_spann(dim, "l2", {"threads": 1}, tmp_path)
    idx.build(np.arange(n), x)
    idx.checkpoint(1)
    st = idx.state
    end = st.file.length
    gone = rng.choice(n, n // 2, replace=False)
    idx.remove(gone)  # postings full of dead entries: clean-ups are due
    y = x[:10][rng.integers(0, 10, 1500)] + 0.01 * rng.standard_normal((1500, dim))
    idx.add(n + np.arange(1500), y.astype(np.float32))  # a few postings over their budget
    grown = st.file.length  # (the add's own appends; the engine bounds them: add_bytes)
    rewrites = st.counters["gc"] + st.counters["splits"]
    free["bytes"] = room.HEADROOM  # nothing past the headroom
    settle(idx)
    assert st.file.length <= grown  # no rewrite past the end the disk allows
    assert st.is_stuck("clean") and st.is_stuck("split") and st.pending
    assert st.counters["gc"] + st.counters["splits"] == rewrites
    assert grown >= end
    keep = np.setdiff1d(np.arange(n), gone)
    res = idx.search(x[keep[:50]], 1, {"max_postings": 4096, "prune_ratio": 1e9})
    np.testing.assert_array_equal(res.slots[:, 0], keep[:50])
    assert not idx.unstuck()  # nothing changed: no retry
    free["bytes"] = 1 << 50
    assert idx.unstuck()  # the disk has room: the waiting rewrites go on
    settle(idx)
    assert st.counters["gc"] + st.counters["splits"] > rewrites and not st.pending
    res = idx.search(x[keep[:50]], 1, {"max_postings": 4096, "prune_ratio": 1e9})
    np.testing.assert_array_equal(res.slots[:, 0], keep[:50])
    idx.close()
