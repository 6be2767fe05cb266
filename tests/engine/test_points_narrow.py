"""The slot -> id table holds int ids in int32 while they fit and widens to int64 at the
first id that does not; the live mask is derived from it. Real RocksDB in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database

DIM = 4
BIG = 2**40  # an id past int32


def _table(db: Database, name: str) -> np.ndarray:
    return db.collections[name].core.points._slot_ids


def test_int_ids_stay_narrow_then_widen_and_search_returns_them(tmp_path: Path) -> None:
    """Ids below 2^31 keep an int32 table; an id of 2^40 widens it to int64 with every
    earlier id kept; search and alive() agree with the ids upserted and deleted."""
    db = Database(tmp_path / "db")
    db.create_collection("c", DIM, "l2", index="flat")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, DIM)).astype(np.float32)
    ids = [3 * i + 7 for i in range(50)]
    db.upsert("c", ids, x)
    assert _table(db, "c").dtype == np.int32
    got = db.search("c", x[:5], k=1).ids
    assert [int(r[0]) for r in got] == ids[:5]
    y = rng.standard_normal((1, DIM)).astype(np.float32) + 10
    db.upsert("c", [BIG], y)
    assert _table(db, "c").dtype == np.int64
    assert int(db.search("c", y, k=1).ids[0][0]) == BIG
    got = db.search("c", x[:5], k=1).ids
    assert [int(r[0]) for r in got] == ids[:5]
    db.delete("c", ids=[ids[0], BIG])
    points = db.collections["c"].core.points
    alive = points.alive()
    assert alive.sum() == 49 == points.count
    assert int(db.search("c", y, k=1).ids[0][0]) != BIG
    db.close()


def test_narrow_table_reopens_narrow_and_wide_reopens_wide(tmp_path: Path) -> None:
    """A reopened collection loads the narrowest table its ids allow."""
    db = Database(tmp_path / "db")
    db.create_collection("a", DIM, "l2", index="flat")
    db.create_collection("b", DIM, "l2", index="flat")
    x = np.eye(DIM, dtype=np.float32)
    db.upsert("a", [0, 1, 2, 2**31 - 1], x)
    db.upsert("b", [0, 1, 2, 2**31], x)
    db.close()
    db = Database(tmp_path / "db")
    assert _table(db, "a").dtype == np.int32
    assert _table(db, "b").dtype == np.int64
    assert [int(r[0]) for r in db.search("a", x, k=1).ids] == [0, 1, 2, 2**31 - 1]
    assert [int(r[0]) for r in db.search("b", x, k=1).ids] == [0, 1, 2, 2**31]
    assert db.collections["a"].core.points.alive().tolist() == [True] * 4
    db.close()


def test_str_ids_alive_follows_the_table(tmp_path: Path) -> None:
    """With str ids, alive() marks exactly the slots holding a live point."""
    db = Database(tmp_path / "db")
    db.create_collection("s", DIM, "l2", index="flat", id_type="str")
    x = np.eye(DIM, dtype=np.float32)
    db.upsert("s", ["a", "b", "c", "d"], x)
    db.delete("s", ids=["b"])
    db.upsert("s", ["c"], x[:1])  # a new slot for "c"; its old one is dead
    assert db.collections["s"].core.points.alive().tolist() == [True, False, False, True, True]
    db.close()


def test_a_batch_past_the_last_slot_is_refused_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slots are never reused and SPANN postings hold them as uint32: a batch that would hand
    out slot MAX_SLOTS or beyond is RESOURCE_EXHAUSTED naming the collection, with nothing
    written (count, ids, next slot as before, also after a reopen), dense points and
    documents alike; a batch that ends at the last slot goes through. The limit is lowered
    to 6 here (the real one, 2^32 - 1, is every value a uint32 slot can hold but its pad)."""
    from vecdb.engine import points as points_mod
    from vecdb.errors import ResourceExhausted
    from vecdb.kernels.posting import MAX_SLOTS, SLOT_DTYPE, SLOT_NONE

    assert MAX_SLOTS == np.iinfo(SLOT_DTYPE).max == SLOT_NONE
    monkeypatch.setattr(points_mod, "MAX_SLOTS", 6)
    db = Database(tmp_path / "db")
    db.create_collection("c", DIM, "l2", index="spann")
    x = np.random.default_rng(1).standard_normal((7, DIM)).astype(np.float32)
    db.upsert("c", [1, 2, 3, 4], x[:4])  # slots 0-3
    with pytest.raises(ResourceExhausted, match=r"'c'.*handed out 4 point slots.*needs 3") as e:
        db.upsert("c", [5, 6, 7], x[4:])
    assert e.value.field == "collection"
    assert db.collections["c"].core.points.next_slot == 4 and db.count("c") == 4
    assert db.get("c", [5, 6, 7]) == []
    db.upsert("c", [5, 6], x[4:6])  # slots 4 and 5: the last ones
    with pytest.raises(ResourceExhausted, match="point slots"):
        db.upsert("c", [1], x[:1])  # an update takes a new slot too
    db.create_collection("d", DIM, "cosine", kind="multivector")
    docs = [x[i : i + 2] for i in range(5)]
    db.upsert_documents("d", [1, 2, 3, 4], docs[:4])
    with pytest.raises(ResourceExhausted, match=r"'d'.*handed out 4 point slots.*needs 3"):
        db.upsert_documents("d", [5, 6, 7], docs[2:])
    assert db.count("d") == 4
    db.close()
    db = Database(tmp_path / "db")
    assert db.count("c") == 6 and db.collections["c"].core.points.next_slot == 6
    db.close()
