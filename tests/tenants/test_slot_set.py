"""`SlotSet` behaves like a Python set of ints through any mix of adds, discards and reads."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vecdb.engine.slot_set import SlotSet

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
