"""The rerank store's rows in head order (`row_order="head"`): a bulk build writes its rows in
the order of their primary postings and keeps a slot -> row map; searches on every path (warm
batch, warm single-query kernels, cold O_DIRECT reads) answer as with rows in slot order; the
map survives a checkpoint and reopen; inserts get new rows and a re-inserted live slot keeps
its own; dead rows give their pages back; a rebuild of an emptied index starts at row 0 again.
Also `aio.plan_reads`, the O_DIRECT readers' plan of requests (nearby rows merged into one),
against a byte-level reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from test_spann_support import clustered, recall, stored

from vecdb.errors import InvalidArgument
from vecdb.index.params import BuildParams
from vecdb.index.spann import open_spann
from vecdb.index.spann.aio import plan_reads
from vecdb.index.spann.persist import verify_files
from vecdb.index.spann.vectors import HEAD, MERGE_GAP, SECTOR

N, D, K = 3_000, 256, 10
BITS = {"threads": 1, "vector_dtype": "bits", "head_fraction": 0.02}
INT8 = {"threads": 1, "vector_dtype": "int8", "rerank": "float16", "head_fraction": 0.05}
SEARCH = {"max_postings": 12}


def _pair(tmp_path: Path, base: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    """The same build in slot order and in head order, checkpointed at sequence 1."""
    out = {}
    for order in ("slot", "head"):
        idx, _ = open_spann(D, "l2", dict(base, row_order=order), tmp_path / order)
        idx.build(np.arange(len(x)), x)
        idx.checkpoint(1)
        out[order] = idx
    return out


def _single(idx: Any, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    got = [idx.search(q[i : i + 1], K, SEARCH) for i in range(len(q))]
    return np.concatenate([g.slots for g in got]), np.concatenate([g.distances for g in got])


# --- parameters ---------------------------------------------------------------------------------


def test_a_new_bits_index_orders_rows_by_head_and_others_by_slot() -> None:
    """Defaults: "head" for a "bits" index being created, "slot" for narrower ones and for an
    index opened from a manifest that predates the parameter; "head" without a store is an
    error naming the parameter."""
    assert BuildParams.parse(None, 384).row_order == "head"
    assert BuildParams.parse(None, 50).row_order == "slot"
    assert BuildParams.parse({"vector_dtype": "bits"}, 384).row_order == "head"
    assert BuildParams.parse({"vector_dtype": "bits", "row_order": "slot"}, 384).row_order == "slot"
    old = BuildParams.parse(None, 384).__dict__ | {}
    del old["row_order"]
    assert BuildParams.parse(old).row_order == "slot"  # (a manifest written before)
    with pytest.raises(InvalidArgument, match="row_order"):
        BuildParams.parse({"row_order": "head", "rerank": "none"}, 50)
    with pytest.raises(InvalidArgument, match="row_order"):
        BuildParams.parse({"row_order": "diagonal"}, 50)


# --- searches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [BITS, INT8], ids=["bits", "int8"])
def test_head_order_answers_as_slot_order_on_every_path(
    base: dict[str, Any], tmp_path: Path
) -> None:
    """Rows in head order hold each slot's vector, are laid out by primary posting, and every
    search path (batch, the single-query kernels, cold batch and single) returns the same slots
    and distances as the same build in slot order. Fails if any path reads rows by slot."""
    x = clustered(N, D, seed=1, centres=40)
    q = clustered(40, D, seed=2, centres=40)
    idx = _pair(tmp_path, base, x)
    head = idx["head"].state
    slots = np.arange(N)
    rows = head.store.rows_of(slots)
    assert sorted(rows.tolist()) == list(range(N))  # one row each, packed from row 0
    by_row = np.argsort(rows)
    assert (np.diff(head.tree.primary[slots][by_row]) >= 0).all()  # primary posting order
    np.testing.assert_array_equal(head.store.vectors(slots), idx["slot"].state.store.vectors(slots))
    want = idx["slot"].search(q, K, SEARCH)
    got = idx["head"].search(q, K, SEARCH)
    np.testing.assert_array_equal(got.slots, want.slots)
    np.testing.assert_array_equal(got.distances, want.distances)
    live = {int(s): x[s] for s in slots}
    assert recall(got.slots, live, q, K, "l2") >= 0.9
    one = _single(idx["head"], q)
    np.testing.assert_array_equal(one[0], want.slots)
    np.testing.assert_array_equal(one[1], want.distances)
    for order in ("slot", "head"):
        idx[order].close()
    cold, _ = open_spann(D, "l2", {"io": "direct"}, tmp_path / "head")
    assert cold.state.store.mapped
    got = cold.search(q, K, SEARCH)
    np.testing.assert_array_equal(got.slots, want.slots)
    np.testing.assert_array_equal(got.distances, want.distances)
    one = _single(cold, q)
    np.testing.assert_array_equal(one[0], want.slots)
    cold.close()


def test_cold_rows_in_head_order_take_fewer_requests(tmp_path: Path) -> None:
    """A query's candidates lie in the few postings it read: in head order their rows are
    near each other and the cold reader merges them (fewer requests than rows), in slot
    order (slots drawn at random over the clusters) almost never."""
    x = clustered(N, D, seed=3, centres=40)
    idx = _pair(tmp_path, BITS, x)
    q = clustered(20, D, seed=4, centres=40)
    cand = idx["head"].search(q, 50, {"max_postings": 12, "rerank_k": 0}).slots
    requests = {}
    for order in ("slot", "head"):
        store = idx[order].state.store
        n = [
            len(
                plan_reads(
                    HEAD + store.rows_of(c[c >= 0]) * store.row, store.row, SECTOR, MERGE_GAP
                )[0]
            )
            for c in cand
        ]
        requests[order] = float(np.mean(n))
        idx[order].close()
    assert requests["head"] < 0.7 * requests["slot"], requests


# --- durability and space -----------------------------------------------------------------------


def test_map_survives_reopen_inserts_append_and_a_live_slot_keeps_its_row(tmp_path: Path) -> None:
    """After a checkpoint and reopen the map and next row are the checkpoint's; inserts get
    rows from the next row on; a live slot inserted again (an op-log replay) is written in
    place; inserts not checkpointed are forgotten by a reopen and their rows reused."""
    x = clustered(N + 200, D, seed=5, centres=40)
    d = tmp_path / "i"
    idx, _ = open_spann(D, "l2", dict(BITS, row_order="head"), d)
    idx.build(np.arange(N), x[:N])
    idx.checkpoint(1)
    built = idx.state.store.rows_of(np.arange(N)).copy()
    idx.close()
    idx, seq = open_spann(D, "l2", {}, d)
    store = idx.state.store
    assert seq == 1 and store.next_row == N and store.ckpt_live == N
    np.testing.assert_array_equal(store.rows_of(np.arange(N)), built)
    idx.add(np.arange(N, N + 100), x[N : N + 100])
    assert store.next_row == N + 100
    np.testing.assert_array_equal(store.rows_of(np.arange(N, N + 100)), np.arange(N, N + 100))
    idx.add(np.arange(10), x[:10])  # a replayed live slot: re-placed, its row kept
    np.testing.assert_array_equal(store.rows_of(np.arange(10)), built[:10])
    assert store.next_row == N + 100
    idx.close()  # (no checkpoint: the inserts are the op log's to replay)
    idx, seq = open_spann(D, "l2", {}, d)
    store = idx.state.store
    assert seq == 1 and store.next_row == N and len(idx) == N
    idx.add(np.arange(N, N + 200), x[N:])  # the replay, and more
    np.testing.assert_array_equal(store.rows_of(np.arange(N, N + 200)), np.arange(N, N + 200))
    np.testing.assert_array_equal(store.vectors(np.arange(N + 200)), stored(x))
    got = idx.search(x[N : N + 200 : 7], 1, SEARCH).slots[:, 0]
    np.testing.assert_array_equal(got, np.arange(N, N + 200, 7))
    idx.checkpoint(2)
    idx.close()
    assert all(r["ok"] for r in verify_files(d))


def test_dead_rows_give_pages_back_and_an_emptied_index_rebuilds_from_row_zero(
    tmp_path: Path,
) -> None:
    """Removing the slots of the first half of the postings frees the first half of the
    rows: the checkpoint punches their pages. A build over live rows writes after them (the
    old rows die at the next checkpoint); a build after every slot is removed and
    checkpointed starts at row 0."""
    x = clustered(N, D, seed=6, centres=40)
    idx, _ = open_spann(D, "l2", dict(BITS, row_order="head"), tmp_path)
    idx.build(np.arange(N), x)
    idx.checkpoint(1)
    store = idx.state.store
    full = store.allocated_bytes()
    rows = store.rows_of(np.arange(N))
    gone = np.flatnonzero(rows < N // 2)
    idx.remove(gone)
    idx.checkpoint(2)
    freed = full - store.allocated_bytes()
    assert freed >= (N // 2) * store.row - 2 * 4096, (freed, full)
    assert store.ckpt_live == N - len(gone)
    keep = np.setdiff1d(np.arange(N), gone)
    idx.build(keep, x[keep])  # over live rows: new rows after them
    assert store.rows_of(keep).min() >= N
    idx.checkpoint(3)
    np.testing.assert_array_equal(store.vectors(keep), stored(x[keep]))
    idx.remove(keep)
    idx.checkpoint(4)
    assert store.ckpt_live == 0 and store.allocated_bytes() <= 2 * 4096
    again = np.arange(N, 2 * N)  # (new slots: a removed slot is never used again)
    idx.build(again, x)  # nothing live here or in the checkpoint: row 0 again
    assert sorted(store.rows_of(again).tolist()) == list(range(N))
    idx.checkpoint(5)
    idx.close()
    idx, _ = open_spann(D, "l2", {}, tmp_path)
    got = idx.search(x[::97], 1, SEARCH).slots[:, 0]
    np.testing.assert_array_equal(got, again[::97])
    idx.close()


# --- the cold reader's request plan -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    ranges=hs.lists(
        hs.tuples(hs.integers(0, 2_000_000), hs.integers(1, 20_000)), min_size=1, max_size=80
    ),
    unit=hs.sampled_from([512, 4096]),
    gap=hs.integers(0, 12),
)
def test_plan_reads_reads_every_range_with_the_fewest_requests(
    ranges: list[tuple[int, int]], unit: int, gap: int
) -> None:
    """Reading a file by the plan's requests into one buffer puts every range's bytes at its
    place (a byte-level simulation); requests are unit-aligned, sorted, disjoint, packed end
    to end in the buffer, each asks no more bytes than its length, and they split exactly
    where the next range starts more than `gap` units past every unit before it."""
    offs = np.array([o for o, _ in ranges], np.int64)
    nbytes = np.array([n for _, n in ranges], np.int64)
    lo, spans, need, at, pos = plan_reads(offs, nbytes, unit, gap)
    assert (lo % unit == 0).all() and (spans % unit == 0).all() and (spans > 0).all()
    np.testing.assert_array_equal(at, np.r_[0, np.cumsum(spans)[:-1]])
    assert (lo[1:] - (lo[:-1] + spans[:-1]) > gap * unit).all()  # split only past the gap
    assert ((need > 0) & (need <= spans)).all()
    file = (np.arange(int((offs + nbytes).max()) + 2 * unit) % 251).astype(np.uint8)
    buf = np.zeros(int(at[-1] + spans[-1]), np.uint8)
    for a, o, n in zip(at.tolist(), lo.tolist(), need.tolist(), strict=True):
        buf[a : a + n] = file[o : o + n]  # (bytes past `need` may not exist in the file)
    for p_, o, n in zip(pos.tolist(), offs.tolist(), nbytes.tolist(), strict=True):
        np.testing.assert_array_equal(buf[p_ : p_ + n], file[o : o + n])
    order = np.argsort(offs, kind="stable")
    first = offs[order] // unit
    reach = np.maximum.accumulate((offs[order] + nbytes[order] - 1) // unit)
    assert len(lo) == 1 + int((first[1:] > reach[:-1] + gap + 1).sum())  # the fewest requests


def test_plan_reads_of_nothing_is_no_request() -> None:
    assert all(len(a) == 0 for a in plan_reads(np.zeros(0, np.int64), 100, SECTOR))


@pytest.mark.parametrize("rerank", ["float16", "float32"])
@pytest.mark.parametrize("order", ["slot", "head"])
def test_rows_written_in_any_slot_order_read_back_as_written(
    rerank: str, order: str, tmp_path: Path
) -> None:
    """`VectorStore.write` takes slices of the input when its slots ascend (a bulk build)
    and gathers them otherwise: the rows read back the same either way."""
    from vecdb.index.spann.vectors import VectorStore
    from vecdb.kernels.half import half_round

    rng = np.random.default_rng(8)
    x = rng.standard_normal((5_000, 24)).astype(np.float32)
    want = x if rerank == "float32" else half_round(x)  # float16, subnormals flushed
    for name, slots in (("ascending", np.arange(5_000)), ("shuffled", rng.permutation(5_000))):
        (tmp_path / name).mkdir()
        store = VectorStore(tmp_path / name, 24, rerank, order=order)
        store.write(slots, x, fresh=True)
        store.refresh(np.zeros(0, np.int64))
        np.testing.assert_array_equal(store.vectors(slots), want)
        store.close()
