"""Day-one calls of the engine: delete by filter, set/overwrite payload (payload indexes kept
in step), payload index create/drop/reopen, scroll by id with str ids, get/search with
vectors, create_collection(exist_ok) and collection_exists. Real RocksDB in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracles import ALL_POSTINGS, SPANN_EXACT, Model

from vecdb.engine import Database, commit
from vecdb.engine.filters import parse
from vecdb.engine.payload_index import IndexDef, encode_number, encode_string
from vecdb.errors import AlreadyExists, InvalidArgument, NotFound

DIM = 4


def fill(db: Database, name: str, n: int = 200, index: str = "spann") -> Model:
    db.create_collection(name, DIM, "l2", index=index,
                         index_params=SPANN_EXACT if index == "spann" else None)  # fmt: skip
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((n, DIM)).astype(np.float32)
    pays = [{"year": 2000 + i % 20, "tag": "ab"[i % 2]} for i in range(n)]
    db.upsert(name, list(range(n)), xb, pays)
    model = Model("l2")
    model.upsert(range(n), xb, pays)
    return model


def test_delete_by_filter_is_durable_and_logged(tmp_path: Path) -> None:
    """delete(filter) removes exactly the matching points, writes one op-log entry, and the
    deletion survives a reopen; an unknown field deletes nothing."""
    db = Database(tmp_path / "db")
    model = fill(db, "c")
    db.create_payload_index("c", "year", "int")
    flt = {"$and": [{"year": {"$lt": 2005}}, {"tag": "a"}]}
    gone = model.live(flt)[0]
    core = db.collections["c"].core
    core_slots = core.points.lookup([int(i).to_bytes(8, "big") for i in gone])
    seq_before = db.seq.value
    assert db.delete("c", filter=flt) == len(gone) > 0
    model.delete(gone)
    ops = commit.read_log(db.kv, core.prefix, seq_before)
    assert [sorted(op.removed) for op in ops] == [sorted(core_slots)]
    assert db.delete("c", filter={"nope": 1}) == 0
    assert db.delete("c", filter=flt) == 0
    db.close()
    db = Database(tmp_path / "db")
    model.assert_stored(db, "c", absent=gone)
    assert db.count("c", {"year": {"$lt": 2005}, "tag": "a"}) == 0
    db.close()


def test_bad_deletes_change_nothing(tmp_path: Path) -> None:
    """A bad filter, both ids and filter, or neither: InvalidArgument, nothing deleted."""
    db = Database(tmp_path / "db")
    model = fill(db, "c", 50, index="flat")
    for call in (
        lambda: db.delete("c", filter={"year": {"$gte": [1]}}),
        lambda: db.delete("c", filter={"$bogus": 1}),
        lambda: db.delete("c", [1], filter={"year": 2001}),
        lambda: db.delete("c"),
    ):
        with pytest.raises(InvalidArgument):
            call()
    model.assert_stored(db, "c")
    db.close()


@pytest.mark.parametrize("index", ["flat", "spann"])
def test_set_and_overwrite_payload_keep_indexes_in_step(tmp_path: Path, index: str) -> None:
    """set_payload merges keys and overwrite_payload replaces; a filtered search on the new
    value finds the points (through the index) and the old value no longer does."""
    db = Database(tmp_path / "db")
    model = fill(db, "c", index=index)
    db.create_payload_index("c", "year", "int")
    db.create_payload_index("c", "color", "str")
    if index == "spann":
        db.optimize("c")
    assert db.set_payload("c", [3, 4, 999], {"year": 1900, "color": "red"}) == 2
    assert db.overwrite_payload("c", [5], {"color": "red"}) == 1
    [r3, r5] = db.get("c", [3, 5])
    assert r3.payload == {"year": 1900, "tag": "b", "color": "red"}
    assert r5.payload == {"color": "red"}
    q = np.zeros(DIM, np.float32)
    params = ALL_POSTINGS if index == "spann" else None
    res = db.search("c", q, 10, filter={"color": "red"}, params=params)
    assert sorted(int(i) for i in res.ids[0] if i >= 0) == [3, 4, 5]
    assert db.count("c", {"year": 1900}) == 2
    assert db.count("c", {"year": 2005}) == len(model.live({"year": 2005})[0]) - 1  # id 5 lost it
    with pytest.raises(InvalidArgument, match="payload must be a JSON object"):
        db.set_payload("c", [1], [1])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="payload"):
        db.overwrite_payload("c", [1], {"x": float("nan")})
    db.close()
    db = Database(tmp_path / "db")  # payload changes and index entries are durable
    assert db.count("c", {"color": "red"}) == 3 and db.count("c", {"year": 1900}) == 2
    db.close()


def test_payload_indexes_reopen_and_unfinished_builds_are_redone(tmp_path: Path) -> None:
    """Indexes survive a reopen; one left not ready (a crash mid-build) is rebuilt on open;
    create is idempotent for the same type; another type, a bad type or key are refused;
    drop removes it (NotFound the second time)."""
    db = Database(tmp_path / "db")
    model = fill(db, "c", index="flat")
    db.create_payload_index("c", "year", "int")
    db.create_payload_index("c", "year", "int")  # idempotent
    with pytest.raises(AlreadyExists, match="type 'int'"):
        db.create_payload_index("c", "year", "str")
    with pytest.raises(InvalidArgument, match="type 'date' is unknown"):
        db.create_payload_index("c", "when", "date")
    with pytest.raises(InvalidArgument, match="key"):
        db.create_payload_index("c", "a..b", "int")
    core = db.collections["c"].core
    batch = db.kv.batch()  # what a crash after the first chunk of a build leaves behind
    core.pindex.put_def(batch, IndexDef("tag", "str", ready=False))
    db.kv.commit(batch)
    db.close()
    db = Database(tmp_path / "db")
    assert db.get_collection("c").payload_indexes == {"tag": "str", "year": "int"}
    core = db.collections["c"].core
    assert all(d.ready for d in core.pindex.defs.values())
    for flt in ({"tag": "a"}, {"year": {"$gt": 2010}}):
        assert db.count("c", flt) == len(model.live(flt)[0])
        compiled = parse(flt)
        assert compiled is not None and core.selector.planned(compiled) is not None
    db.drop_payload_index("c", "tag")
    with pytest.raises(NotFound):
        db.drop_payload_index("c", "tag")
    assert db.get_collection("c").payload_indexes == {"year": "int"}
    db.close()


def test_scroll_with_str_ids_orders_by_utf8_bytes(tmp_path: Path) -> None:
    """Str ids come in UTF-8 byte order, offsets are inclusive, limits are checked."""
    db = Database(tmp_path / "db")
    db.create_collection("s", DIM, "l2", id_type="str", index="flat")
    ids = ["b", "a", "é", "Z", "aa", "~", "日本"]
    db.upsert("s", ids, np.ones((len(ids), DIM), np.float32))
    want = sorted(ids, key=lambda s: s.encode("utf-8"))
    recs, nxt = db.scroll("s", limit=3, with_vectors=True)
    assert [r.id for r in recs] == want[:3] and nxt == want[3]
    assert all(r.vector is not None and r.payload is None for r in recs)
    recs, nxt = db.scroll("s", limit=10, offset=nxt)
    assert [r.id for r in recs] == want[3:] and nxt is None
    for bad in ({"limit": 0}, {"limit": 10_001}, {"limit": "3"}, {"offset": 3}):
        with pytest.raises(InvalidArgument, match=next(iter(bad))):
            db.scroll("s", **bad)  # type: ignore[arg-type]
    db.close()


def test_get_and_search_with_vectors(tmp_path: Path) -> None:
    """get(with_vectors=False) leaves vectors out; search(with_vectors=True) returns the
    stored vectors of the results (as upserted, not normalised), None where padded."""
    db = Database(tmp_path / "db")
    db.create_collection("c", DIM, "cosine", index="flat")
    xb = np.array([[3, 0, 0, 0], [0, 2, 0, 0]], np.float32)
    db.upsert("c", [1, 2], xb, [{"a": 1}, None])
    [r] = db.get("c", [1], with_vectors=False)
    assert r.vector is None and r.payload == {"a": 1}
    res = db.search("c", xb[0], 3, with_vectors=True)
    assert res.payloads is None and res.vectors is not None
    assert res.vectors[0][0].tolist() == xb[0].tolist() and res.vectors[0][2] is None
    assert db.search("c", xb[0], 3).vectors is None
    with pytest.raises(InvalidArgument, match="with_vectors"):
        db.search("c", xb[0], 3, with_vectors=1)  # type: ignore[arg-type]
    db.close()


def test_create_collection_exist_ok_and_collection_exists(tmp_path: Path) -> None:
    """exist_ok returns the existing collection when the settings agree; a differing
    setting is AlreadyExists naming it, with or without exist_ok."""
    db = Database(tmp_path / "db")
    assert not db.collection_exists("c")
    db.create_collection("c", DIM, "l2", index="flat")
    assert db.collection_exists("c")
    info = db.create_collection("c", DIM, "l2", index="flat", exist_ok=True)
    assert info.name == "c" and info.dim == DIM
    with pytest.raises(AlreadyExists, match="already exists$"):
        db.create_collection("c", DIM, "l2", index="flat")
    with pytest.raises(AlreadyExists, match="dim=4 .asked dim=5"):
        db.create_collection("c", 5, "l2", index="flat", exist_ok=True)
    with pytest.raises(AlreadyExists, match="metric"):
        db.create_collection("c", DIM, "ip", index="flat", exist_ok=True)
    with pytest.raises(InvalidArgument):
        db.collection_exists("bad name!")
    db.close()


def test_value_encodings_sort_like_the_values() -> None:
    """Number and string encodings order as the values do (ints beyond 2**53 exactly)."""
    nums = [-1e300, -(2**70), -2.5, -1, -0.0, 0, 1, 1.5, 2**53, 2**53 + 1, 2**60 + 1, 1e300]
    enc = [encode_number(x) for x in nums]
    assert enc == sorted(enc)
    assert encode_number(1) == encode_number(1.0) and encode_number(-0.0) == encode_number(0)
    strs = ["", "\x00", "\x00a", "a", "a\x00", "ab", "b", "é", "日"]
    enc_s = [encode_string(s) for s in strs]
    assert enc_s == sorted(enc_s) and strs == sorted(strs)
