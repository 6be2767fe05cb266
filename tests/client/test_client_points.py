"""SDK point operations: upsert, get, delete and count, with exact round-trips.

Each test runs on the flat index and on SPANN, buffered and built (the `index` fixture): a
point's vector and payload come back from storage unchanged whatever the index holds, and
search sees the latest write in every state.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import strategies as gen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from index_cases import IndexCase
from oracles import INTEGER, Model, same_json

import vecdb
from vecdb.types import Record

DIM = 5


@pytest.fixture
def client(clean_client: vecdb.Client) -> vecdb.Client:
    """The module shares one client per mode; each case starts with no collections."""
    return clean_client


@pytest.fixture
def coll(client: vecdb.Client, index: IndexCase) -> str:
    """An empty int-id l2 collection of DIM-dimensional vectors."""
    index.create(client, "pts", DIM, "l2")
    return "pts"


@pytest.fixture
def scoll(client: vecdb.Client, index: IndexCase) -> str:
    """An empty str-id cosine collection of DIM-dimensional vectors."""
    index.create(client, "spts", DIM, "cosine", id_type="str")
    return "spts"


def test_upsert_returns_number_written(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """upsert returns how many points it wrote, new or replaced."""
    vecs = rng.standard_normal((4, DIM)).astype(np.float32)
    assert client.upsert(coll, ids=[1, 2, 3, 4], vectors=vecs) == 4
    index.settle(client, coll)
    assert client.upsert(coll, ids=[4, 5], vectors=vecs[:2]) == 2
    assert client.count(coll) == 5
    index.settle(client, coll)
    assert client.count(coll) == 5


def test_count_follows_upserts_and_deletes(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """count is the number of live points after each write (and after settling)."""
    assert client.count(coll) == 0
    client.upsert(coll, ids=list(range(10)), vectors=rng.standard_normal((10, DIM)))
    assert client.count(coll) == 10
    index.settle(client, coll)
    assert client.count(coll) == 10
    client.delete(coll, ids=[0, 1, 2])
    assert client.count(coll) == 7
    client.upsert(coll, ids=[0, 9], vectors=rng.standard_normal((2, DIM)))
    assert client.count(coll) == 8
    index.settle(client, coll)
    assert client.count(coll) == 8


def test_count_is_an_int_that_names_no_missing_shard(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """count answers a `vecdb.Count`: an int (equal, hashable, JSON as a number) whose
    missing_shards is empty on one node, with allow_partial or without."""
    client.upsert(coll, ids=list(range(6)), vectors=rng.standard_normal((6, DIM)))
    for partial in (False, True):
        got = client.count(coll, allow_partial=partial)
        assert isinstance(got, vecdb.Count) and isinstance(got, int)
        assert got == 6 and got.missing_shards == [] and json.dumps(got) == "6"
    assert client.count(coll, {"no_such_key": 1}, allow_partial=True) == 0


def test_get_returns_records_in_request_order_omitting_missing(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """get answers in the order asked, skipping ids that are not stored."""
    vecs = rng.standard_normal((3, DIM)).astype(np.float32)
    client.upsert(coll, ids=[10, 20, 30], vectors=vecs)
    index.settle(client, coll)
    recs = client.get(coll, ids=[30, 99, 10, 20, 7])
    assert all(isinstance(r, Record) for r in recs)
    assert [r.id for r in recs] == [30, 10, 20]
    assert client.get(coll, ids=[1, 2]) == []


def test_get_returns_exact_vector_bytes(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """Stored float32 vectors come back bit-identical, as float32."""
    vecs = rng.standard_normal((6, DIM)).astype(np.float32)
    vecs[0] = [np.float32(1e-38), -0.0, np.float32(1e17), np.float32(1 / 3), -7.25]
    client.upsert(coll, ids=list(range(6)), vectors=vecs)
    index.settle(client, coll)
    recs = client.get(coll, ids=list(range(6)))
    for i, r in enumerate(recs):
        assert r.vector.dtype == np.float32
        assert r.vector.shape == (DIM,)
        assert r.vector.tobytes() == vecs[i].tobytes()


def test_plain_list_vectors_are_stored_as_float32(
    client: vecdb.Client, index: IndexCase, coll: str
) -> None:
    """Python lists of floats are accepted and stored as their float32 values."""
    rows = [[0.1, 0.2, 0.3, 0.4, 0.5], [1, 2, 3, 4, 5]]
    client.upsert(coll, ids=[1, 2], vectors=rows)
    index.settle(client, coll)
    recs = client.get(coll, ids=[1, 2])
    for r, row in zip(recs, rows, strict=True):
        assert r.vector.tobytes() == np.asarray(row, np.float32).tobytes()


def test_numpy_int_ids_are_accepted(client: vecdb.Client, index: IndexCase, coll: str, rng) -> None:
    """ids may be a numpy integer array; get returns them as the same integers."""
    ids = np.array([3, 1, 2], np.int64)
    client.upsert(coll, ids=ids, vectors=rng.standard_normal((3, DIM)).astype(np.float32))
    index.settle(client, coll)
    recs = client.get(coll, ids=np.array([1, 2, 3], np.int64))
    assert [int(r.id) for r in recs] == [1, 2, 3]


def test_extreme_int_ids_round_trip(client: vecdb.Client, index: IndexCase, coll: str, rng) -> None:
    """The smallest and largest valid int ids (0 and 2**63-1) are stored and found."""
    client.upsert(coll, ids=[0, 2**63 - 1], vectors=np.eye(2, DIM, dtype=np.float32))
    index.settle(client, coll)
    assert [r.id for r in client.get(coll, ids=[2**63 - 1, 0])] == [2**63 - 1, 0]
    res = index.search(client, coll, np.eye(2, DIM, dtype=np.float32), k=1)
    assert res.ids[:, 0].tolist() == [0, 2**63 - 1]


def test_payloads_round_trip_including_unicode(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """JSON payloads (unicode, nested, numbers, null) come back equal; None stays None."""
    payloads = [
        {"title": "日本語のタイトル", "emoji": "🎉🚀", "combining": "e\u0301"},
        None,
        {"nested": {"list": [1, 2.5, None, True, "é"], "deep": {"x": -0.1}}, "n": 2**62},
        {},
    ]
    client.upsert(coll, ids=[1, 2, 3, 4], vectors=rng.standard_normal((4, DIM)), payloads=payloads)
    index.settle(client, coll)
    recs = client.get(coll, ids=[1, 2, 3, 4])
    assert [r.payload for r in recs] == payloads
    assert all(same_json(r.payload, p) for r, p in zip(recs, payloads, strict=True))


def test_str_ids_round_trip_unnormalised(
    client: vecdb.Client, index: IndexCase, scoll: str, rng
) -> None:
    """Non-ASCII str ids round-trip exactly; NFC and NFD spellings are different ids."""
    ids = ["日本語", "🎉", "é", "e\u0301", "a b", "x" * 256]
    vecs = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    client.upsert(scoll, ids=ids, vectors=vecs, payloads=[{"i": i} for i in range(len(ids))])
    index.settle(client, scoll)
    assert client.count(scoll) == len(ids)
    recs = client.get(scoll, ids=list(reversed(ids)))
    assert [r.id for r in recs] == list(reversed(ids))
    assert [r.payload["i"] for r in recs] == list(reversed(range(len(ids))))
    assert all(r.vector.tobytes() == vecs[ids.index(r.id)].tobytes() for r in recs)


def test_str_id_of_exactly_256_utf8_bytes_is_accepted(
    client: vecdb.Client, index: IndexCase, scoll: str, rng
) -> None:
    """The id length cap counts UTF-8 bytes: 128 two-byte characters (256 bytes) fit."""
    sid = "é" * 128
    client.upsert(scoll, ids=[sid], vectors=rng.standard_normal((1, DIM)))
    index.settle(client, scoll)
    assert [r.id for r in client.get(scoll, ids=[sid])] == [sid]
    assert index.search(client, scoll, np.ones(DIM, np.float32), k=1).ids.tolist() == [[sid]]


def test_upsert_existing_id_replaces_vector_and_payload(
    client: vecdb.Client, index: IndexCase, coll: str
) -> None:
    """Re-upserting an id replaces vector and payload; count is unchanged; search sees only new
    (while the replacement is buffered in front of a built index, and after it is settled)."""
    old = np.full((1, DIM), 10.0, np.float32)
    new = np.full((1, DIM), -10.0, np.float32)
    client.upsert(
        coll,
        ids=[1, 2],
        vectors=np.vstack([old, np.zeros((1, DIM), np.float32)]),
        payloads=[{"v": "old"}, {"v": "other"}],
    )
    index.settle(client, coll)
    assert client.upsert(coll, ids=[1], vectors=new, payloads=[{"v": "new"}]) == 1
    for _ in range(2):
        assert client.count(coll) == 2
        (rec,) = client.get(coll, ids=[1])
        assert rec.vector.tobytes() == new[0].tobytes()
        assert rec.payload == {"v": "new"}
        res = index.search(client, coll, new, k=2)
        assert res.ids[0, 0] == 1 and res.distances[0, 0] == pytest.approx(0.0, abs=1e-6)
        res = index.search(client, coll, old, k=2)
        assert res.ids[0].tolist() == [2, 1]  # the old vector is gone: id 1 is now far away
        assert res.distances[0, 1] == pytest.approx(float(((old - new) ** 2).sum()), rel=1e-4)
        full = index.search(client, coll, old, k=10)
        assert full.ids[0].tolist().count(1) == 1
        index.settle(client, coll)


def test_upsert_without_payload_clears_previous_payload(
    client: vecdb.Client, index: IndexCase, coll: str
) -> None:
    """Upsert replaces the whole point: a replacement without payload has payload None."""
    client.upsert(coll, ids=[1], vectors=np.ones((1, DIM)), payloads=[{"a": 1}])
    index.settle(client, coll)
    client.upsert(coll, ids=[1], vectors=np.ones((1, DIM)))
    assert client.get(coll, ids=[1])[0].payload is None
    index.settle(client, coll)
    assert client.get(coll, ids=[1])[0].payload is None


def test_delete_returns_number_deleted_and_is_idempotent(
    client: vecdb.Client, index: IndexCase, coll: str, rng
) -> None:
    """delete returns how many ids existed; deleting again returns 0 and changes nothing."""
    client.upsert(coll, ids=[1, 2, 3], vectors=rng.standard_normal((3, DIM)))
    index.settle(client, coll)
    assert client.delete(coll, ids=[1, 3, 42]) == 2
    assert client.count(coll) == 1
    index.settle(client, coll)
    assert client.delete(coll, ids=[1, 3]) == 0
    assert client.delete(coll, ids=[42]) == 0
    assert client.count(coll) == 1
    assert [r.id for r in client.get(coll, ids=[1, 2, 3])] == [2]
    assert index.search(client, coll, np.ones(DIM, np.float32), k=3).ids.tolist() == [[2, -1, -1]]


def test_deleted_id_can_be_upserted_again(
    client: vecdb.Client, index: IndexCase, coll: str
) -> None:
    """An id deleted and upserted again is a fresh point with the new vector."""
    client.upsert(coll, ids=[5], vectors=np.ones((1, DIM)), payloads=[{"gen": 1}])
    index.settle(client, coll)
    client.delete(coll, ids=[5])
    client.upsert(coll, ids=[5], vectors=np.full((1, DIM), 2.0), payloads=[{"gen": 2}])
    for _ in range(2):
        (rec,) = client.get(coll, ids=[5])
        assert rec.vector.tolist() == [2.0] * DIM
        assert rec.payload == {"gen": 2}
        assert client.count(coll) == 1
        res = index.search(client, coll, np.ones(DIM, np.float32), k=2)
        assert res.ids.tolist() == [[5, -1]]
        assert res.distances[0, 0] == pytest.approx(float(DIM))
        index.settle(client, coll)


def test_str_id_delete_and_get(client: vecdb.Client, index: IndexCase, scoll: str, rng) -> None:
    """delete and get work with str ids, including non-ASCII ones."""
    ids = ["日本語", "🎉", "plain"]
    client.upsert(scoll, ids=ids, vectors=rng.standard_normal((3, DIM)))
    index.settle(client, scoll)
    assert client.delete(scoll, ids=["🎉", "missing"]) == 1
    assert [r.id for r in client.get(scoll, ids=ids)] == ["日本語", "plain"]
    assert client.count(scoll) == 2
    res = index.search(client, scoll, np.ones(DIM, np.float32), k=3)
    assert sorted(res.ids[0, :2].tolist()) == ["plain", "日本語"] and res.ids[0, 2] is None


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_batches_round_trip_like_the_model(
    client: vecdb.Client, index: IndexCase, data: st.DataObject
) -> None:
    """Random batches (non-ASCII str ids, any JSON payloads, replacements across batches,
    deletes): get answers exactly the model's points, with payloads of the same JSON types,
    and search equals the oracle."""
    if "h" in [c.name for c in client.list_collections()]:
        client.drop_collection("h")
    index.create(client, "h", DIM, "l2", id_type="str")
    model = Model("l2")
    pool = data.draw(gen.id_lists(gen.str_ids(), 1, 12), label="id pool")
    for _ in range(data.draw(st.integers(1, 3), label="batches")):
        batch = data.draw(gen.batches(DIM, ids=st.sampled_from(pool)), label="batch")
        assert client.upsert("h", batch.ids, batch.vectors, batch.payloads) == len(batch.ids)
        model.upsert(batch.ids, batch.vectors, batch.payloads)
        gone = data.draw(st.lists(st.sampled_from(pool), max_size=3, unique=True), label="gone")
        if gone:
            assert client.delete("h", gone) == model.delete(gone)
        index.settle(client, "h")
    model.assert_stored(client, "h", absent=pool)
    q = gen.query_vectors(2, DIM, 0)
    k = len(pool)
    model.assert_search(index.search(client, "h", q, k=k), q, k, None, INTEGER)
