"""A flat index's compaction loses no add or remove made while it copies the live rows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from vecdb.index.flat import FlatIndex


class _HookLock:
    """The index's lock, running `hook` just before its `at`-th acquisition."""

    def __init__(self, at: int, hook: Callable[[], None]) -> None:
        self._inner = threading.Lock()
        self._at, self._hook, self._count = at, hook, 0

    def __enter__(self) -> bool:
        self._count += 1
        if self._count == self._at:
            self._hook()
        return self._inner.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)


def test_add_and_remove_between_copy_and_switch_are_kept() -> None:
    """maintain() takes the lock three times (due check, copy of the live rows, switch);
    an add and a remove landing just before the switch are both in the compacted rows."""
    rng = np.random.default_rng(0)
    index = FlatIndex(4, "l2")
    index.add(np.arange(3000), rng.standard_normal((3000, 4)).astype(np.float32))
    index.remove(np.arange(0, 2000))  # two thirds dead: maintain compacts
    late = rng.standard_normal((1, 4)).astype(np.float32)

    def concurrent_writes() -> None:
        index.add(np.array([5000]), late)
        index.remove(np.array([2500]))

    index._lock = _HookLock(3, concurrent_writes)  # type: ignore[assignment]
    index.maintain()
    slots, vectors = index.live()
    assert 5000 in slots.tolist()  # before: the add made during the copy was lost
    assert 2500 not in slots.tolist()  # before: the removed row came back
    assert len(index) == len(slots) == 1000
    assert np.array_equal(vectors[slots.tolist().index(5000)], late[0])
    assert index.stats()["rows"] < 3000  # compacted all the same
