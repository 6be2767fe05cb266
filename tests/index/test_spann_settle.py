"""Structures back to size once maintenance is idle (`compaction.settle`, run by
`SpannIndex.checkpoint`): same answers, same free space, arrays at their used size, and the
index goes on taking inserts after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_spann_support import assert_no_orphans, assert_tree_consistent, clustered

from vecdb.index.spann import open_spann
from vecdb.index.spann.space import SpaceMap

D = 16


def test_settle_trims_to_size_and_changes_no_answer(tmp_path: Path) -> None:
    idx, _ = open_spann(D, "l2", {"threads": 1}, tmp_path)
    x = clustered(6000, D, seed=4)
    idx.build(np.arange(3000), x[:3000])
    idx.add(np.arange(3000, 6000), x[3000:])  # appends: postings over budget queue splits
    st = idx.state
    assert st.pending
    while idx.maintain(None):
        pass
    assert st.counters["splits"] > 0
    q = clustered(40, D, seed=5)
    before = idx.search(q, 10, {"max_postings": 64})
    free_before = list(st.file.space.by_off)
    keys_before = [id(k) for k in st.file.space.by_off]

    idx.checkpoint(1)  # idle: settles

    t, tree = st.table, st.tree
    assert len(t.blk_off) == len(t.blk_next) == len(t.blk_cnt) == t.used
    assert len(t.free_ids) == t.n_free
    assert len(tree.parent) == tree.n_nodes and len(tree.centroids) == tree.n_rows
    space = st.file.space
    assert list(space.by_off) == free_before and len(space.by_size) == len(free_before)
    big = [i for i, k in zip(keys_before, space.by_off, strict=True) if k > 256]
    assert not set(big) & {id(k) for k in space.by_off}  # new objects, same values
    after = idx.search(q, 10, {"max_postings": 64})
    np.testing.assert_array_equal(before.slots, after.slots)
    np.testing.assert_allclose(before.distances, after.distances)
    assert_no_orphans(idx, set(range(6000)))
    assert_tree_consistent(idx, set(range(6000)))

    # it grows again from its trimmed size, and reopens the same
    y = clustered(2000, D, seed=6)
    idx.add(np.arange(6000, 8000), y)
    while idx.maintain(None):
        pass
    idx.checkpoint(2)
    assert_no_orphans(idx, set(range(8000)))
    assert_tree_consistent(idx, set(range(8000)))
    res = idx.search(q, 10, {"max_postings": 64})
    idx.close()
    again, seq = open_spann(D, "l2", {}, tmp_path)
    assert seq == 2
    np.testing.assert_array_equal(again.search(q, 10, {"max_postings": 64}).slots, res.slots)
    again.close()


def test_settle_waits_while_splits_are_queued(tmp_path: Path) -> None:
    idx, _ = open_spann(D, "l2", {"threads": 1}, tmp_path)
    x = clustered(6000, D, seed=7)
    idx.build(np.arange(3000), x[:3000])
    idx.add(np.arange(3000, 6000), x[3000:])
    st = idx.state
    assert st.pending
    cap = len(st.table.blk_off)
    idx.checkpoint(1)  # not idle: nothing trimmed
    assert len(st.table.blk_off) == cap
    idx.close()


def test_repack_keeps_the_map() -> None:
    m = SpaceMap(4096, 4096 + 64 * 1000)
    m.rebuild(np.array([4096 + 64 * i for i in range(0, 1000, 3)]), np.full(334, 64))
    off, size, free = list(m.by_off), list(m.by_size), m.free_bytes
    m.repack()
    assert list(m.by_off) == off and list(m.by_size) == size and m.free_bytes == free
    assert m.alloc(128, grow=False) >= 0  # still allocates from it
