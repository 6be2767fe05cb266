"""Snapshots, restores and drops carry or remove everything a collection owns in the meta
column family: payload index definitions and entries come back with a restore (under the
new collection id) and answer filters exactly; no row of a dropped or replaced collection
is left behind.

Real RocksDB in tmp_path, the flat index and SPANN (exact settings) for the searches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracles import SPANN_EXACT, Model

from vecdb.engine import Database
from vecdb.engine.filters import parse
from vecdb.engine.payload_index import IndexDef
from vecdb.storage import kv as kvmod

DIM, N = 8, 3000
INDEXES = {"year": "int", "tag": "str"}
FILTERS: list[dict[str, Any]] = [
    {"year": {"$gte": 45}},
    {"tag": "t3"},
    {"year": {"$in": [1, 2, 3]}, "tag": {"$ne": "t1"}},
    {"$or": [{"year": 7}, {"tag": "t0"}]},
]


def payload(i: int, gen: int = 0) -> dict[str, Any]:
    return {"year": (i + gen) % 50, "tag": f"t{(i + gen) % 7}"}


def fill(db: Database, name: str, index: str) -> Model:
    rng = np.random.default_rng(5)
    xb = rng.standard_normal((N, DIM)).astype(np.float32)
    params = SPANN_EXACT if index == "spann" else None
    db.create_collection(name, dim=DIM, metric="l2", index=index, index_params=params)
    db.create_payload_index(name, "year", "int")  # before the points: maintained by writes
    ids = list(range(N))
    pays = [payload(i) for i in ids]
    db.upsert(name, ids, xb, pays)
    db.create_payload_index(name, "tag", "str")  # after them: built over the stored ones
    model = Model("l2")
    model.upsert(ids, xb, pays)
    return model


def rows_of(db: Database, cid: int) -> list[tuple[str, bytes]]:
    """Every row of the store that belongs to collection `cid`."""
    prefix = kvmod.cid_prefix(cid)
    return [(cf, head + tail) for cf, head, tail, _ in kvmod.collection_rows(db.kv, prefix)]


def assert_indexed_filters_exact(db: Database, name: str, model: Model) -> None:
    """Every filter is answered from the payload indexes, and counts and searches agree with
    brute force."""
    core = db.collections[name].core
    q = np.random.default_rng(9).standard_normal((3, DIM)).astype(np.float32)
    for flt in FILTERS:
        compiled = parse(flt)
        assert compiled is not None and core.pindex.answerable(compiled), flt
        want_ids, _ = model.live(flt)
        mask = core.pindex.plan(compiled, core.points.alive())
        assert mask is not None
        got = set(core.points.ids_of(np.flatnonzero(mask).astype(np.int64)).tolist())
        assert got == set(want_ids), flt
        assert db.count(name, filter=flt) == len(want_ids)
        model.assert_search(db.search(name, q, k=10, filter=flt), q, 10, flt)


@pytest.mark.parametrize("index", ["flat", "spann"])
def test_restore_brings_payload_indexes_back(tmp_path: Path, index: str) -> None:
    """Indexes dropped or changed after a snapshot are back after its restore, under the new
    collection id, and indexed filters answer exactly what brute force does."""
    with Database(tmp_path / "db") as db:
        model = fill(db, "c", index)
        snap = db.create_snapshot("c")
        old_cid = db.collections["c"].core.cfg.cid
        # Change everything the snapshot holds: points, payloads, indexes.
        db.drop_payload_index("c", "tag")
        db.create_payload_index("c", "other", "bool")
        db.set_payload("c", list(range(0, N, 3)), {"year": 999})
        db.delete("c", filter={"year": {"$lt": 10}})
        db.restore_snapshot("c", snap.name)
        info = db.get_collection("c")
        assert info.payload_indexes == INDEXES
        assert info.count == N
        core = db.collections["c"].core
        assert core.cfg.cid != old_cid
        assert rows_of(db, old_cid) == []  # the replaced collection left nothing behind
        assert_indexed_filters_exact(db, "c", model)
        # The restored indexes are maintained by later writes.
        db.set_payload("c", [1, 2], {"year": 7})
        for i in (1, 2):
            model.points[i] = (model.points[i][0], {**payload(i), "year": 7})
        assert_indexed_filters_exact(db, "c", model)
    with Database(tmp_path / "db") as db:  # and survive a reopen
        assert db.get_collection("c").payload_indexes == INDEXES
        assert_indexed_filters_exact(db, "c", model)


def test_restore_of_a_dropped_collection_brings_its_indexes(tmp_path: Path) -> None:
    """A collection dropped after its snapshot comes back with its payload indexes."""
    with Database(tmp_path / "db") as db:
        model = fill(db, "c", "flat")
        snap = db.create_snapshot("c")
        db.drop_collection("c")
        db.restore_snapshot("c", snap.name)
        assert db.get_collection("c").payload_indexes == INDEXES
        assert_indexed_filters_exact(db, "c", model)


def test_index_caught_mid_build_is_finished_by_restore(tmp_path: Path) -> None:
    """An index whose build a snapshot caught (definition not ready) is built by the
    restore, so filters on it are answered from it afterwards."""
    with Database(tmp_path / "db") as db:
        model = fill(db, "c", "flat")
        core = db.collections["c"].core
        batch = db.kv.batch()  # what a build interrupted right after it began leaves
        fp = core.pindex.field_prefix("tag")
        batch.delete_range(kvmod.CF_META, fp, kvmod.prefix_end(fp))
        core.pindex.put_def(batch, IndexDef("tag", "str", ready=False))
        db.seq.commit(batch)
        snap = db.create_snapshot("c")
        db.restore_snapshot("c", snap.name)
        restored = db.collections["c"].core
        assert all(d.ready for d in restored.pindex.defs.values())
        assert_indexed_filters_exact(db, "c", model)


def test_drop_collection_removes_every_row(tmp_path: Path) -> None:
    """After a drop no row of the collection is left in any column family: points, op log,
    slot counter, payload index definitions and entries; other collections keep theirs."""
    with Database(tmp_path / "db") as db:
        fill(db, "a", "spann")
        model_b = fill(db, "b", "flat")
        cid_a = db.collections["a"].core.cfg.cid
        cid_b = db.collections["b"].core.cfg.cid
        heads = {cf + ":" + key[:4].decode(errors="replace") for cf, key in rows_of(db, cid_a)}
        assert {"meta:pidx", "meta:next"} <= heads  # the check sees meta rows at all
        before_b = rows_of(db, cid_b)
        db.drop_collection("a")
        assert rows_of(db, cid_a) == []
        assert rows_of(db, cid_b) == before_b
        assert_indexed_filters_exact(db, "b", model_b)
