"""A drain into a built SPANN index run in a child process (`vecdb.index.spann.drain_child`):
the index it publishes holds every vector (recall against the exact oracle, no orphans, a
consistent tree), reopens from the child's checkpoint, keeps the slots removed while the
child ran removed; a child that dies or a caller that gives up leaves the old index whole and
no exchange file; the size threshold's setting."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_spann_support import assert_no_orphans, assert_tree_consistent, clustered, recall

from vecdb.errors import Internal, InvalidArgument
from vecdb.index.spann import child, drain_child, open_spann
from vecdb.index.spann.persist import read_manifest

N, TAIL, D, K = 4_000, 1_200, 16, 10
PARAMS = {"threads": 1, "head_fraction": 0.05}
WIDE = {"max_postings": 4096, "prune_ratio": 1e9}  # every posting: what the index holds


def _children() -> list[int]:
    """Live drain children of this process (zombies and other children not counted)."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        pids += [int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()]
    out = []
    for p in pids:
        try:
            mine = b"drain_child" in Path(f"/proc/{p}/cmdline").read_bytes()
            if mine and "\nState:\tZ" not in Path(f"/proc/{p}/status").read_text():
                out.append(p)
        except FileNotFoundError:
            pass
    return out


def _built(directory: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An index of N clustered vectors built in process and checkpointed at sequence 1."""
    monkeypatch.setenv(child.ENV, "off")
    idx, _ = open_spann(D, "l2", PARAMS, directory)
    x = clustered(N + TAIL, D, seed=3)
    idx.build(np.arange(N), x[:N])
    idx.checkpoint(1)
    return idx, x


def _exchange_files(directory: Path) -> list[Path]:
    return list(directory.glob("build.*"))


def test_drain_in_child_holds_every_vector_and_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child inserts the tail, splits what grew over budget and checkpoints at the
    drain's sequence; the parent's index then finds every vector (exact recall with every
    posting read), each live slot has a copy, the tree adds up, the reopened index answers
    the same, and no exchange file or child is left."""
    idx, x = _built(tmp_path, monkeypatch)
    seen: list[str] = []
    chunks = [(np.arange(N, N + 600), x[N : N + 600]), (np.arange(N + 600, N + TAIL), x[N + 600 :])]
    drain_child.add_in_child(idx.state, iter(chunks), 2, 1, lambda p, d, t: seen.append(p))
    assert "add" in seen and "maintain" in seen
    live = set(range(N + TAIL))
    assert_no_orphans(idx, live)
    assert_tree_consistent(idx, live)
    q = x[N : N + 200] + 0.01
    got = idx.search(q, K, WIDE).slots
    base = {i: x[i] for i in range(N + TAIL)}
    assert recall(got, base, q, K, "l2") == 1.0
    assert read_manifest(tmp_path)["applied_seq"] == 2
    assert not _exchange_files(tmp_path) and not _children()
    idx.checkpoint(2)  # the engine's checkpoint after the drain
    idx.close()
    reopened, seq = open_spann(D, "l2", PARAMS, tmp_path)
    assert seq == 2
    np.testing.assert_array_equal(reopened.search(q, K, WIDE).slots, got)
    reopened.close()


def test_the_child_never_writes_over_blocks_the_parent_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the child inserts and maintains, the parent's searches read the table of the
    checkpoint the child started from. The child's splits drop blocks of that table, and
    its own checkpoints (between maintenance batches, once a megabyte or more waits) would
    free them for its next writes; it must not reuse them (they were overwritten: the
    parent's searches then failed DATA_LOSS on a block header, or a numba scan read garbage
    slots). Every block of the parent's table keeps its bytes, and a search in the parent
    answers as before, at every step of the child's work."""
    monkeypatch.setenv(child.ENV, "off")
    n, d = 6_000, 64  # wide enough rows that the splits free over a megabyte at a time
    x = clustered(4 * n, d, seed=5)
    idx, _ = open_spann(d, "l2", PARAMS, tmp_path)
    idx.build(np.arange(n), x[:n])
    idx.checkpoint(1)
    st = idx.state
    ext = st.table.extents()

    def blocks() -> list[bytes]:
        with open(st.file.path, "rb") as f:
            return [os.pread(f.fileno(), int(b), int(o)) for o, b in zip(ext.offset, ext.size)]

    before = blocks()
    q = x[:50] + 0.01
    want = idx.search(q, K, WIDE).slots
    checked: list[str] = []

    def check(phase: str, done: int, total: int) -> None:
        if len(idx) != n:  # adopted: the parent reads the child's table now
            return
        changed = sum(a != b for a, b in zip(before, blocks(), strict=True))
        assert changed == 0, f"{changed} of the parent's blocks overwritten at {phase} {done}"
        np.testing.assert_array_equal(idx.search(q, K, WIDE).slots, want)
        checked.append(phase)

    drain_child.add_in_child(st, iter([(np.arange(n, 4 * n), x[n:])]), 2, 1, check)
    assert checked.count("maintain") >= 2
    assert_no_orphans(idx, set(range(4 * n)))
    idx.close()


def test_removes_while_the_child_runs_stay_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slots removed in the parent while the child works (old ones and tail ones) are gone
    from the published index: remove wins over the child's copy."""
    idx, x = _built(tmp_path, monkeypatch)
    gone = np.r_[np.arange(0, 300), np.arange(N, N + 100)]

    def remove_once(phase: str, done: int, total: int) -> None:
        if phase == "maintain" and len(idx) == N:  # the parent's index, during the child
            idx.remove(gone)

    chunk = (np.arange(N, N + TAIL), x[N:])
    drain_child.add_in_child(idx.state, iter([chunk]), 2, 1, remove_once)
    live = set(range(N + TAIL)) - set(gone.tolist())
    assert len(idx) == len(live)
    assert_tree_consistent(idx, live)
    got = idx.search(x[gone[::10]], K, WIDE).slots
    assert not np.isin(got, gone).any()
    assert_no_orphans(idx, live)
    idx.close()


def test_child_killed_raises_internal_and_keeps_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that dies without a word: Internal with its exit status; the index published
    before answers as before and no exchange file is left."""
    idx, x = _built(tmp_path, monkeypatch)
    before = idx.search(x[:20], K, WIDE).slots
    monkeypatch.setenv("VECDB_KILL_AT", "drain_child_start")
    chunk = (np.arange(N, N + TAIL), x[N:])
    with pytest.raises(Internal, match="exited with status -9"):
        drain_child.add_in_child(idx.state, iter([chunk]), 2, 1, None)
    np.testing.assert_array_equal(idx.search(x[:20], K, WIDE).slots, before)
    assert len(idx) == N and not _exchange_files(tmp_path) and not _children()
    idx.close()


def test_caller_that_gives_up_stops_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A progress callback that raises (a closing collection does) kills the child; the
    parent's index is unchanged and reopens whole (the op log would replay the drain)."""
    idx, x = _built(tmp_path, monkeypatch)
    seen: list[int] = []

    def give_up(phase: str, done: int, total: int) -> None:
        seen.extend(_children())
        raise KeyboardInterrupt("closing")

    chunk = (np.arange(N, N + TAIL), x[N:])
    with pytest.raises(KeyboardInterrupt, match="closing"):
        drain_child.add_in_child(idx.state, iter([chunk]), 2, 1, give_up)
    assert len(seen) == 1 and seen[0] not in _children()
    assert len(idx) == N and not _exchange_files(tmp_path)
    idx.close()
    reopened, seq = open_spann(D, "l2", PARAMS, tmp_path)
    assert seq in (1, 2) and len(reopened) in (N, N + TAIL)
    reopened.close()


def test_use_child_needs_a_built_index_size_and_disk_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a built index, a drain of at least the threshold, and a disk with room for the
    input twice over go to a child (with a rerank store too: `test_spann_drain_child_rerank`)."""
    idx, _ = _built(tmp_path, monkeypatch)
    st = idx.state
    monkeypatch.delenv(drain_child.ENV, raising=False)
    assert not drain_child.use_child(st, 2_047 * 1024 // D)  # under the default 8 MiB
    assert drain_child.use_child(st, 2_048 * 1024 // D)
    monkeypatch.setenv(drain_child.ENV, "0")
    assert drain_child.use_child(st, 1) and not drain_child.use_child(st, 0)
    free = shutil.disk_usage(tmp_path).free
    assert not drain_child.use_child(st, free // (4 * D + 8) + 1)
    monkeypatch.setenv(drain_child.ENV, "off")
    assert not drain_child.use_child(st, 10**6)
    idx.close()
    empty, _ = open_spann(D, "l2", PARAMS, tmp_path / "empty")
    monkeypatch.setenv(drain_child.ENV, "0")
    assert not drain_child.use_child(empty.state, 100)  # nothing built: a build, not a drain
    empty.close()


# The two children's size thresholds (`VECDB_BUILD_CHILD_MIB`, `VECDB_DRAIN_CHILD_MIB`), each
# read from the environment by `child.env_min_bytes`, with its own default.
CHILDREN = [(child, 64 << 20), (drain_child, 8 << 20)]


@pytest.mark.parametrize(("module", "default"), CHILDREN)
@pytest.mark.parametrize("raw", ["-1", "x", "1e9", "nan"])
def test_threshold_setting_out_of_bounds_is_refused(
    module: Any, default: int, raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(module.ENV, raw)
    with pytest.raises(InvalidArgument, match=module.ENV) as e:
        module.child_min_bytes()
    assert e.value.field == module.ENV


@pytest.mark.parametrize(("module", "default"), CHILDREN)
@pytest.mark.parametrize(("raw", "least"), [("", None), ("off", None), ("0.5", 1 << 19)])
def test_threshold_setting(
    module: Any, default: int, raw: str, least: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(module.ENV, raw)
    assert module.child_min_bytes() == (default if raw == "" else least)


def test_posting_file_stays_within_4x_raw_through_drains_in_children(tmp_path: Path) -> None:
    """The 1024-d disk bound (`test_spann_disk_bound`) with every drain and its maintenance
    in a child: after each child's run the posting file is within 4x the raw float32 bytes
    of the live vectors, and every stored vector is found."""
    dim, bound = 1024, 4.0
    rng = np.random.default_rng(3)

    def normal(n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    idx, _ = open_spann(dim, "cosine", {"threads": 1, "max_disk_ratio": bound}, tmp_path)
    x = normal(3000)
    idx.build(np.arange(3000), x)
    idx.checkpoint(1)
    stored = {i: x[i] for i in range(3000)}
    nxt, seq = 3000, 1
    for step in range(4):
        if step >= 2:  # churn: a tenth removed before the drain
            gone = rng.choice(np.array(sorted(stored)), size=len(stored) // 10, replace=False)
            idx.remove(gone)
            for g in gone.tolist():
                del stored[g]
        y = normal(500)
        chunk = (np.arange(nxt, nxt + 500), y)
        stored.update(zip(range(nxt, nxt + 500), y, strict=True))
        nxt, seq = nxt + 500, seq + 1
        drain_child.add_in_child(idx.state, iter([chunk]), seq, seq - 1, None)
        ratio = idx.state.file.length / (4 * dim * len(stored))
        assert ratio <= bound, f"posting file {ratio:.2f}x raw after drain {step}"
    assert len(idx) == len(stored)
    assert idx.state.counters["splits"] > 0  # the children did split
    probe = np.array(sorted(stored)[:: max(1, len(stored) // 200)])
    res = idx.search(np.stack([stored[i] for i in probe]), 1, WIDE)
    np.testing.assert_array_equal(res.slots[:, 0], probe)
    idx.close()


def test_child_killed_after_publishing_leaves_the_parents_state_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that dies after its first checkpoint: the parent publishes its own state
    again, so its next in-process writes (here an add, never checkpointed) cannot land in
    bytes the published checkpoint names: the directory reopens at the parent's state,
    whole."""
    idx, x = _built(tmp_path, monkeypatch)
    monkeypatch.setenv("VECDB_KILL_AT", "drain_child_published")
    chunk = (np.arange(N, N + TAIL), x[N:])
    with pytest.raises(Internal, match="exited with status -9"):
        drain_child.add_in_child(idx.state, iter([chunk]), 2, 1, None)
    monkeypatch.delenv("VECDB_KILL_AT")
    assert read_manifest(tmp_path)["applied_seq"] == 1 and len(idx) == N
    idx.add(np.arange(N, N + TAIL), x[N:])  # written where the child's blocks were
    idx.close()  # no checkpoint: the published state is the parent's, from before the add
    reopened, seq = open_spann(D, "l2", PARAMS, tmp_path)
    assert seq == 1
    reopened.verify()  # every referenced block whole (raises FormatError otherwise)
    assert_no_orphans(reopened, set(range(N)))
    assert_tree_consistent(reopened, set(range(N)))
    reopened.close()
