"""The space map's free list: two sorted int64 orders of disjoint extents that match a plain
model after any sequence of inserts, removals and bulk assignments, and a space map whose free
extents hold no Python object per extent."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vecdb.index.spann.freelist import MIN_CAPACITY, FreeList
from vecdb.index.spann.space import ALIGN, SpaceMap

SLOTS = 400  # extents are drawn from a grid of this many 8-unit cells


class FreeListModel(RuleBasedStateMachine):
    """Random inserts and removals of disjoint extents against a set of (start, length)."""

    def __init__(self) -> None:
        super().__init__()
        self.fl = FreeList()
        self.model: set[tuple[int, int]] = set()
        self.used: set[int] = set()  # grid cells taken (extents never overlap)

    @rule(cell=st.integers(0, SLOTS - 1), ln=st.integers(1, 8))
    def add(self, cell: int, ln: int) -> None:
        if cell in self.used:
            return
        self.fl.add(8 * cell, ln)
        self.model.add((8 * cell, ln))
        self.used.add(cell)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        if not self.model:
            return
        a, ln = data.draw(st.sampled_from(sorted(self.model)))
        self.fl.remove(a, ln)
        self.model.discard((a, ln))
        self.used.discard(a // 8)

    @rule(data=st.data())
    def remove_absent(self, data: st.DataObject) -> None:
        a = 8 * data.draw(st.integers(0, SLOTS - 1))
        if any(x == a for x, _ in self.model):
            return
        with pytest.raises(KeyError):
            self.fl.remove(a, 3)

    @rule(cells=st.sets(st.integers(0, SLOTS - 1), max_size=200), ln=st.integers(1, 8))
    def assign(self, cells: set[int], ln: int) -> None:
        starts = np.array(sorted(8 * c for c in cells), dtype=np.int64)
        lens = (starts // 8) % ln + 1
        self.fl.assign(starts, lens)
        self.model = set(zip(starts.tolist(), lens.tolist(), strict=True))
        self.used = set(cells)

    @invariant()
    def orders_match(self) -> None:
        fl, by_start = self.fl, sorted(self.model)
        by_size = sorted(self.model, key=lambda e: (e[1], e[0]))
        n = len(fl)
        assert n == len(by_start)
        assert list(zip(fl.starts().tolist(), fl.lengths().tolist(), strict=True)) == by_start
        assert list(zip(fl.sz_a[:n].tolist(), fl.sz_l[:n].tolist(), strict=True)) == by_size
        assert fl.largest() == (by_size[-1][1] if by_size else 0)
        assert MIN_CAPACITY <= len(fl.off_a) and n <= len(fl.off_a)
        assert len(fl.off_a) <= max(MIN_CAPACITY, 4 * n)  # shrinks once mostly empty
        for s in (1, 4, 8, 9):
            a, ln = fl.fitting(s, 5)
            assert (
                list(zip(a.tolist(), ln.tolist(), strict=True))
                == ([e for e in by_size if e[1] >= s][:5])
            )
        a, ln = fl.lowest(3)
        assert list(zip(a.tolist(), ln.tolist(), strict=True)) == by_start[:3]
        for x in (0, 7, 8 * SLOTS // 2, 8 * SLOTS):
            assert fl.index_of_start(x) == sum(1 for e in by_start if e[0] < x)


FreeListModel.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestFreeListModel = FreeListModel.TestCase


def test_map_keeps_no_python_object_per_free_extent() -> None:
    """Thousands of free extents cost no more live allocations than a few: the extents live
    in the free list's arrays (a Python int key made per extent in the middle of maintenance
    pinned CPython arenas after it)."""
    sizes = ALIGN * np.random.default_rng(0).integers(1, 200, 4000)
    offs = np.zeros(len(sizes), dtype=np.int64)
    m = SpaceMap(4096, 4096)
    gc.collect()
    before = sys.getallocatedblocks()
    for i in range(len(sizes)):  # page padding leaves free extents between some blocks
        offs[i] = m.alloc(int(sizes[i]))
    for i in range(0, len(sizes), 2):  # every other block: each leaves its own free extent
        m.release(int(offs[i]), int(sizes[i]), fresh=True)
        if i % 400 == 0:
            m.readers_done()  # one at a time (coalescing), not only the bulk merge
    m.readers_done()
    gc.collect()
    n = m.stats().free_extents
    assert n >= 1000
    assert sys.getallocatedblocks() - before < 50  # not ~2 per extent
    assert m.stats().map_bytes >= 32 * n
