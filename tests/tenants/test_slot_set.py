"""`SlotSet` behaves like a Python set of ints through any mix of adds, discards and reads."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vecdb.engine.slot_set import BLOCK, GAPS_MIN, LazyVisible, Packed, SlotSet
from vecdb.index.base import Visible

ops = st.lists(st.tuples(st.sampled_from(["add", "discard", "read"]), st.integers(0, 40)))


@given(initial=st.sets(st.integers(0, 40)), ops=ops)
def test_slot_set_matches_a_python_set(initial: set[int], ops: list[tuple[str, int]]) -> None:
    """Same members, same answers to add/discard (whether it changed), sorted reads."""
    s = SlotSet(np.asarray(sorted(initial), np.int64))
    model = set(initial)
    for op, slot in ops:
        if op == "add":
            assert s.add(slot) == (slot not in model)
            model.add(slot)
        elif op == "discard":
            assert s.discard(slot) == (slot in model)
            model.discard(slot)
        else:
            assert s.array().tolist() == sorted(model)
        assert len(s) == len(model)
        assert (slot in s) == (slot in model)
    assert s.array().tolist() == sorted(model)


@given(
    initial=st.sets(st.integers(0, 200), max_size=120),
    high=st.booleans(),
    probes=st.lists(st.integers(-2, 210), max_size=30),
)
def test_packed_runs_or_flat_round_trip(initial: set[int], high: bool, probes: list[int]) -> None:
    """Whichever encoding `Packed` picks (runs for dense sets, flat otherwise; int64 past
    2^32), it expands to the same sorted slots and answers membership like a set."""
    off = 1 << 32 if high else 0
    slots = np.asarray(sorted(s + off for s in initial), np.int64)
    p = Packed(slots)
    assert p.expand().tolist() == slots.tolist()
    assert len(p) == len(slots)
    assert p.nbytes <= 4 * len(slots) + 8 if not high else p.nbytes <= 8 * len(slots) + 16
    model = set(slots.tolist())
    for x in probes:
        assert ((x + off) in p) == ((x + off) in model)


def test_packed_picks_runs_for_consecutive_slots() -> None:
    """A set made of long runs costs 8 bytes per run, not 4 per slot; a view of a larger
    array is copied, so it does not pin that array."""
    big = np.arange(100_000, dtype=np.uint32)
    p = Packed(np.concatenate([big[:5000], big[9000:20000]]))
    assert p.nbytes == 2 * 8
    assert p.expand().tolist() == [*range(5000), *range(9000, 20000)]
    short = Packed(np.concatenate([big[i : i + 4] for i in range(0, 4000, 8)]))
    assert short.nbytes == 2 * 2000 + 4 * 8  # runs of 4: gaps (and 8 block anchors)
    spread = Packed(big[::3][:1000])
    assert spread.nbytes == 2 * 1000 + 4 * 4
    assert spread.expand().tolist() == list(range(0, 3000, 3))
    far = Packed(np.asarray([0, *range(70_000, 70_300, 3)], np.uint32))
    assert far.nbytes == 4 * 101  # a gap past 16 bits: flat
    few = Packed(big[::3][:63])
    assert few.nbytes == 4 * 63 and few._flat.base is None  # noqa: SLF001


@given(
    gaps=st.lists(st.integers(2, 300), min_size=60, max_size=700),
    far=st.sampled_from([None, 65_535, 65_536, 200_000]),
    probes=st.lists(st.integers(0, 600), max_size=40),
)
def test_packed_gaps_round_trip(gaps: list[int], far: int | None, probes: list[int]) -> None:
    """Sets around `GAPS_MIN` slots, no runs, gaps of any size (16-bit ones encoded as
    gaps, a larger one forcing flat): the same sorted slots, and membership right across block edges."""
    if far is not None:
        gaps[len(gaps) // 2] = far
    slots = np.cumsum(np.asarray(gaps, np.int64))
    p = Packed(slots)
    assert p.expand().tolist() == slots.tolist()
    small = len(slots) >= GAPS_MIN and max(gaps[1:]) < 1 << 16
    assert p.nbytes == (2 * len(slots) + 4 * -(-len(slots) // BLOCK) if small else 4 * len(slots))
    model = set(slots.tolist())
    for i in probes:
        for x in (int(slots[i % len(slots)]), int(slots[i % len(slots)]) + 1, i):
            assert (x in p) == (x in model)


def test_lazy_visible_builds_once_and_reports_it() -> None:
    """The bitmap is made on first use only, once, and the callback learns of it."""
    made: list[int] = []
    told: list[LazyVisible] = []

    def make() -> Visible:
        made.append(1)
        return Visible.from_slots([1, 5, 9], 16)

    vis = LazyVisible(make, told.append)
    assert not vis.built and not made
    assert vis.contains([0, 1, 5, 9, 15]).tolist() == [False, True, True, True, False]
    assert vis.count() == 3 and vis.bits.nbytes == 2
    assert vis.built and made == [1] and told == [vis]
