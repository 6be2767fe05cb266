"""The block table's numpy-only paths: the state-file sections and the free-id stack keep
the chains a per-block walk gives, after any sequence of pushes and clears."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.index.spann.table import BlockTable

OPS = st.lists(
    st.tuples(st.booleans(), st.integers(0, 11), st.integers(1, 9)), min_size=0, max_size=120
)


def _sections_by_walk(t: BlockTable) -> list[bytes]:
    """The sections as a per-posting chain walk lays them out (the reference)."""
    offs, cnts = [], []
    for p in range(t.n_postings):
        for off, cnt in t.chain(p):
            offs.append(off)
            cnts.append(cnt)
    counts = t.post_blocks.astype(np.int64)
    return [
        counts.tobytes(),
        np.asarray(offs, np.int64).tobytes(),
        np.asarray(cnts, np.int64).tobytes(),
    ]


def _play(ops: list[tuple[bool, int, int]]) -> tuple[BlockTable, dict[int, list[tuple[int, int]]]]:
    """Apply pushes / clears to a table and to a dict of Python lists (the model)."""
    t = BlockTable(4)
    model: dict[int, list[tuple[int, int]]] = {}
    off = 0
    for is_push, p, cnt in ops:
        if is_push or p >= t.n_postings:
            off += 4096
            t.push(p, off, cnt)
            model.setdefault(p, []).insert(0, (off, cnt))
        else:
            t.clear(p)
            model[p] = []
    return t, model


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_sections_match_a_chain_walk_and_round_trip(ops: list[tuple[bool, int, int]]) -> None:
    t, model = _play(ops)
    for p in range(t.n_postings):
        assert t.chain(p) == model.get(p, [])
    assert t.to_arrays() == _sections_by_walk(t)
    again = BlockTable.from_arrays(4, t.to_arrays())
    for p in range(t.n_postings):
        assert again.chain(p) == t.chain(p)
    # every block id is either referenced or on the free stack, once
    post, blk = t.chain_order()
    assert len(post) == int(t.post_blocks.sum())
    ids = np.concatenate([blk, np.asarray(t.free, np.int64)])
    assert sorted(ids.tolist()) == list(range(t.used))


def test_free_ids_are_reused_last_freed_first() -> None:
    t = BlockTable(4)
    for j in range(4):
        t.push(0, 4096 * (j + 1), 1)
    ids_before = t.chain_order()[1].tolist()  # chain order: newest block first
    t.clear(0)
    assert t.free == [ids_before[0], ids_before[1], ids_before[2], ids_before[3]]
    t.push(5, 99 * 4096, 2)
    assert t.used == 4 and len(t.free) == 3  # a freed id, no new one
    assert t.chain(5) == [(99 * 4096, 2)]
