"""The bad-input table (research/reliability.md §8), sent embedded and remote.

Every case runs against an embedded client and a remote client (a real gRPC server on
127.0.0.1) over identically seeded data, and must raise the same `vecdb.errors` class with the
same message, `field` and `reason` in both modes, and change nothing (collections, counts, and
`get` of every id a case touches, before and after). Rows that only a hand-built message can
send (malformed blobs, JSON null, invalid UTF-8) are in tests/server/test_wire_bad_inputs.py;
rows about limits of the server itself (message size, queue, keys) in
tests/server/test_server_overload.py and test_server_limits.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from api_modes import AioAdapter, outcome, serve

import vecdb
from vecdb import config

DIM = 4
Case = Callable[[vecdb.Client], object]
ONE = np.full((1, DIM), 0.5, np.float32)
FOUR = (np.arange(1, 17, dtype=np.float32).reshape(4, DIM) / 10).astype(np.float32)
INT_IDS = [0, 1, 2, 3, 10, 11, 12, 99]
STR_IDS = ["a", "b", "日本語", "new", "x"]


def seed(c: vecdb.Client) -> None:
    """ "c": int ids, cosine; "l": int ids, l2; "s": str ids, l2 (all flat, with payloads);
    "t" multi-tenant (flat); "sp" an empty SPANN collection."""
    c.create_collection("c", DIM, "cosine", index="flat")
    c.upsert("c", [0, 1, 2, 3], FOUR, [{"seed": i} for i in range(4)])
    c.create_payload_index("c", "seed", "int")
    c.create_collection("l", DIM, "l2", index="flat")
    c.upsert("l", [0, 1, 2, 3], FOUR)
    c.create_collection("s", DIM, "l2", id_type="str", index="flat")
    c.upsert("s", ["a", "b", "日本語"], FOUR[:3], [{"k": "a"}, None, {"k": "日"}])
    c.create_collection("t", DIM, "l2", index="flat", multi_tenant=True)
    c.create_collection("sp", DIM, "l2", index="spann")  # SPANN's search params
    for tenant in ("a", "b", "c"):
        c.create_tenant("t", tenant)
    c.upsert("t", [0, 1], FOUR[:2], tenant="a", grant_to=["b"])
    c.upsert("t", [2], FOUR[2:3], tenant="b")
    # documents (issue 11): "mv" holds two documents
    c.create_collection("mv", DIM, "cosine", kind="multivector")
    c.upsert_documents("mv", [0, 1], [FOUR[:2], FOUR[1:]], payloads=[{"seed": 0}, None])
    c.create_collection("mt", DIM, "cosine", kind="multivector", multi_tenant=True)  # tenants
    c.create_tenant("mt", "a")
    c.create_tenant("mt", "b", max_vectors=2)
    c.upsert_documents("mt", [0, 1], [FOUR[:2], FOUR[1:]], tenant="a", grant_to=["b"])
    c.create_tenant("t", "q", max_vectors=3, max_bytes=2 * DIM * 4)  # stored quotas
    c.upsert("t", [5], FOUR[3:4], tenant="q")


def state(c: vecdb.Client) -> Any:
    """Everything a rejected request must not change."""
    out: list[Any] = [sorted(i.name for i in c.list_collections())]
    for name, ids in (("c", INT_IDS), ("l", INT_IDS), ("s", STR_IDS)):
        recs = c.get(name, ids)
        out.append((name, c.count(name), [(r.id, r.vector.tobytes(), r.payload) for r in recs]))
        out.append((c.get_collection(name).payload_indexes, c.list_snapshots(name)))
    recs = c.get("t", INT_IDS)
    out.append((c.count("t"), [(r.id, r.vector.tobytes()) for r in recs], c.list_tenants("t")))
    out.append([c.count("t", tenant=t) for t in ("a", "b", "c")])
    docs = c.get_documents("mv", INT_IDS)  # documents (issue 11)
    out.append((c.count("mv"), [(d.id, d.tokens.tobytes(), d.payload) for d in docs]))
    docs = c.get_documents("mt", INT_IDS)
    out.append((c.count("mt"), [(d.id, d.tokens.tobytes()) for d in docs], c.list_tenants("mt")))
    out.append([[d.id for d in c.get_documents("mt", INT_IDS, tenant=t)] for t in ("a", "b")])
    return out


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An embedded, a remote and an async remote client over identically seeded databases
    (the two remote clients share one server and one database)."""
    root = tmp_path_factory.mktemp("table")
    server = serve(root / "remote")
    local = vecdb.connect(str(root / "local"))
    remote = vecdb.connect(f"127.0.0.1:{server.port}", timeout=60)
    for c in (local, remote):
        seed(c)
    aio = AioAdapter(f"127.0.0.1:{server.port}")
    yield {"local": local, "remote": remote, "aio": aio}
    aio.close()
    remote.close()
    local.close()
    server.stop(grace=0)


def nested(depth: int, leaf: Any = 0, as_list: bool = False) -> Any:
    out = leaf
    for _ in range(depth):
        out = [out] if as_list else {"x": out}
    return out


def not_nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        out = {"$not": out}
    return out


def vec(*values: float) -> np.ndarray:
    return np.array([values], dtype=np.float64)


BIG = config.MAX_BATCH + 1
CASES: dict[str, Case] = {
    # collections and names
    "unknown collection count": lambda c: c.count("nope"),
    "unknown collection search": lambda c: c.search("nope", ONE[0]),
    "unknown collection upsert": lambda c: c.upsert("nope", [1], ONE),
    "unknown collection get_collection": lambda c: c.get_collection("nope"),
    "create existing": lambda c: c.create_collection("c", DIM, "cosine"),
    "name traversal": lambda c: c.create_collection("../x", DIM),
    "name slash": lambda c: c.count("a/b"),
    "name empty": lambda c: c.create_collection("", DIM),
    "name NUL": lambda c: c.get_collection("a\x00b"),
    "name 65 chars": lambda c: c.create_collection("a" * 65, DIM),
    "name 10000 chars": lambda c: c.create_collection("n" * 10_000, DIM),
    "name 10000 emoji": lambda c: c.count("😀" * 10_000),
    "name None": lambda c: c.count(None),  # type: ignore[arg-type]
    "name lone surrogate": lambda c: c.search("\ud800", ONE[0]),
    "dim 0": lambda c: c.create_collection("d", 0),
    "dim negative": lambda c: c.create_collection("d", -1),
    "dim above cap": lambda c: c.create_collection("d", config.MAX_DIM + 1),
    "dim float": lambda c: c.create_collection("d", 2.5),  # type: ignore[arg-type]
    "dim str": lambda c: c.create_collection("d", "4"),  # type: ignore[arg-type]
    "dim 2**70": lambda c: c.create_collection("d", 2**70),
    "bad name before bad dim": lambda c: c.create_collection("a/b", "4"),  # type: ignore[arg-type]
    "unknown metric": lambda c: c.create_collection("m", DIM, "hamming"),
    "metric None": lambda c: c.create_collection("m", DIM, None),  # type: ignore[arg-type]
    "unknown id_type": lambda c: c.create_collection("m", DIM, id_type="uuid"),
    "unknown index": lambda c: c.create_collection("m", DIM, index="hnsw"),
    "unknown kind": lambda c: c.create_collection("m", DIM, kind="sparse"),
    "multivector kind l2": lambda c: c.create_collection("m", DIM, "l2", kind="multivector"),
    "multivector kind flat index": lambda c: c.create_collection("m", DIM, index="flat", kind="multivector"),
    "multi_tenant not a bool": lambda c: c.create_collection("m", DIM, multi_tenant="yes"),  # type: ignore[arg-type]
    "index_params not an object": lambda c: c.create_collection("m", DIM, index_params=[1]),  # type: ignore[arg-type]
    # vectors
    "row too short": lambda c: c.upsert("l", [10, 11], [[1, 2, 3, 4], [1, 2, 3]]),
    "row too long": lambda c: c.upsert("l", [10, 11], [[1, 2, 3, 4], [1, 2, 3, 4, 5]]),
    "matrix too narrow": lambda c: c.upsert("l", [10], np.ones((1, DIM - 1))),
    "matrix too wide": lambda c: c.upsert("l", [10], np.ones((1, DIM + 1))),
    "matrix empty rows": lambda c: c.upsert("l", [10], np.ones((1, 0))),
    "vectors empty list": lambda c: c.upsert("l", [10], []),
    "vectors of strings": lambda c: c.upsert("l", [10], [["a", "b", "c", "d"]]),
    "vectors a string": lambda c: c.upsert("l", [10], "abcd"),
    "vectors None": lambda c: c.upsert("l", [10], None),
    "vectors 3-D": lambda c: c.upsert("l", [10], np.ones((1, 1, DIM))),
    "row not a list": lambda c: c.upsert("l", [10, 11], [[1, 2, 3, 4], 5]),
    "NaN stored": lambda c: c.upsert("l", [10], vec(0, np.nan, 0, 0)),
    "+inf stored": lambda c: c.upsert("l", [10], vec(np.inf, 0, 0, 0)),
    "-inf stored": lambda c: c.upsert("l", [10], vec(0, 0, 0, -np.inf)),
    "absurd magnitude": lambda c: c.upsert("l", [10], vec(1e30, 0, 0, 0)),
    "beyond float32": lambda c: c.upsert("l", [10], vec(0, 1e39, 0, 0)),
    "beyond float32 in a list": lambda c: c.upsert("l", [10], [[0.0, 0.0, -1e300, 0.0]]),
    "zero vector cosine": lambda c: c.upsert("c", [10], np.zeros((1, DIM))),
    "ids/vectors count": lambda c: c.upsert("l", [10, 11], ONE),
    "empty upsert": lambda c: c.upsert("l", [], np.zeros((0, DIM))),
    "batch over cap": lambda c: c.upsert("l", list(range(BIG)), np.ones((BIG, DIM))),
    # queries, k, params, filters
    "query wrong dim": lambda c: c.search("l", np.ones(DIM + 2)),
    "queries ragged": lambda c: c.search("l", [[1, 2, 3, 4], [1, 2]]),
    "query NaN": lambda c: c.search("l", vec(np.nan, 0, 0, 0)),
    "query inf": lambda c: c.search("l", vec(0, np.inf, 0, 0)),
    "query zero cosine": lambda c: c.search("c", np.zeros(DIM)),
    "query of strings": lambda c: c.search("l", ["a", "b", "c", "d"]),
    "queries over cap": lambda c: c.search("l", np.ones((config.MAX_QUERIES + 1, DIM))),
    "k 0": lambda c: c.search("l", ONE[0], k=0),
    "k negative": lambda c: c.search("l", ONE[0], k=-1),
    "k above cap": lambda c: c.search("l", ONE[0], k=config.MAX_K + 1),
    "k 2**70": lambda c: c.search("l", ONE[0], k=2**70),
    "k float": lambda c: c.search("l", ONE[0], k=2.5),  # type: ignore[arg-type]
    "k bool": lambda c: c.search("l", ONE[0], k=True),
    "k str": lambda c: c.search("l", ONE[0], k="3"),  # type: ignore[arg-type]
    "k None": lambda c: c.search("l", ONE[0], k=None),  # type: ignore[arg-type]
    "bad k before bad queries": lambda c: c.search("l", "abcd", k=0),
    "params out of range": lambda c: c.search("l", ONE[0], params={"max_postings": -1}),
    "spann params out of range": lambda c: c.search("sp", ONE[0], params={"max_postings": -1}),
    "spann params unknown": lambda c: c.search("sp", ONE[0], params={"max_posting": 8}),
    "spann index_params out of range": lambda c: c.create_collection("sp2", DIM, "l2", index="spann", index_params={"replicas": 0}),
    "tenant params out of range": lambda c: c.search("t", ONE[0], tenant="a", params={"tenant_cluster_size": 5000}),
    "params not an object": lambda c: c.search("l", ONE[0], params=[1]),  # type: ignore[arg-type]
    "filter a list": lambda c: c.search("l", ONE[0], filter=[1]),  # type: ignore[arg-type]
    "filter int key": lambda c: c.search("l", ONE[0], filter={1: "x"}),  # type: ignore[dict-item]
    "filter NaN": lambda c: c.search("l", ONE[0], filter={"x": float("nan")}),
    "filter set value": lambda c: c.search("l", ONE[0], filter={"x": {1, 2}}),
    # ids
    "negative int id": lambda c: c.upsert("l", [-1], ONE),
    "int id 2**63": lambda c: c.upsert("l", [2**63], ONE),
    "int id 2**64": lambda c: c.get("l", [2**64]),
    "numpy uint64 id": lambda c: c.get("l", np.array([2**63], np.uint64)),
    "bool id": lambda c: c.upsert("l", [True], ONE),
    "float id": lambda c: c.get("l", [1.5]),
    "None id": lambda c: c.delete("l", [None]),
    "str id in int collection": lambda c: c.upsert("l", ["x"], ONE),
    "int id in str collection": lambda c: c.upsert("s", [1], ONE),
    "numpy int id in str collection": lambda c: c.get("s", np.array([1, 2])),
    "mixed ids": lambda c: c.upsert("l", [10, "a"], np.ones((2, DIM))),
    "duplicate ids upsert": lambda c: c.upsert("l", [10, 10], np.ones((2, DIM))),
    "duplicate ids delete": lambda c: c.delete("l", [1, 2, 1]),
    "empty delete": lambda c: c.delete("l", []),
    "empty get": lambda c: c.get("l", []),
    "ids not a list": lambda c: c.get("l", 5),
    "ids a string": lambda c: c.delete("s", "abc"),
    "str id empty": lambda c: c.upsert("s", [""], ONE),
    "str id too long": lambda c: c.upsert("s", ["x" * (config.MAX_STR_ID_BYTES + 1)], ONE),
    "str id NUL": lambda c: c.upsert("s", ["a\x00b"], ONE),
    "str id control char": lambda c: c.get("s", ["a\x07"]),
    "str id lone surrogate": lambda c: c.upsert("s", ["new", "\ud800"], np.ones((2, DIM))),
    # payloads
    "payloads not a list": lambda c: c.upsert("l", [10], ONE, "p"),
    "payloads count": lambda c: c.upsert("l", [10], ONE, [{"a": 1}, {"b": 2}]),
    "payload a list": lambda c: c.upsert("l", [10, 11], np.ones((2, DIM)), [{}, [1, 2]]),
    "payload a string": lambda c: c.upsert("l", [10], ONE, ["s"]),
    "payload a number": lambda c: c.upsert("l", [10], ONE, [42]),
    "payload a set": lambda c: c.upsert("l", [10], ONE, [{"s": {1, 2}}]),
    "payload bytes": lambda c: c.upsert("l", [10], ONE, [{"b": b"raw"}]),
    "payload object": lambda c: c.upsert("l", [10], ONE, [{"o": object()}]),
    "payload NaN": lambda c: c.upsert("l", [10], ONE, [{"x": [1, float("nan")]}]),
    "payload inf": lambda c: c.upsert("l", [10], ONE, [{"x": float("inf")}]),
    "payload int key": lambda c: c.upsert("l", [10], ONE, [{1: "x"}]),
    "payload too big": lambda c: c.upsert("l", [10], ONE, [{"x": "y" * config.MAX_PAYLOAD_BYTES}]),
    "payload too deep": lambda c: c.upsert("l", [10], ONE, [nested(config.MAX_PAYLOAD_DEPTH + 1)]),
    "payload 10000 deep": lambda c: c.upsert("l", [10], ONE, [{"a": nested(10_000, as_list=True)}]),
    "payload lone surrogate": lambda c: c.upsert("l", [10, 11], np.ones((2, DIM)),
                                                 [{"ok": 1}, {"t": "a\ud800"}]),
    "payload lone surrogate key": lambda c: c.upsert("l", [10], ONE, [{"\udfff": 1}]),
    "payload int of 4,100 digits": lambda c: c.upsert("l", [10], ONE, [{"n": 10**4100}]),
    # flags
    "get with_vectors str": lambda c: c.get("l", [1], with_vectors="no"),  # type: ignore[arg-type]
    "search with_vectors int": lambda c: c.search("l", ONE[0], with_vectors=1),  # type: ignore[arg-type]
    "search with_payload None": lambda c: c.search("l", ONE[0], with_payload=None),  # type: ignore[arg-type]
    "scroll with_vectors str": lambda c: c.scroll("l", with_vectors="yes"),  # type: ignore[arg-type]
    "scroll with_payload int": lambda c: c.scroll("l", with_payload=0),  # type: ignore[arg-type]
    "optimize wait str": lambda c: c.optimize("l", wait="yes"),  # type: ignore[arg-type]
    # scroll
    "scroll limit 0": lambda c: c.scroll("l", limit=0),
    "scroll limit 10001": lambda c: c.scroll("l", limit=10_001),
    "scroll limit negative": lambda c: c.scroll("l", limit=-5),
    "scroll limit 2**70": lambda c: c.scroll("l", limit=2**70),
    "scroll limit float": lambda c: c.scroll("l", limit=2.5),  # type: ignore[arg-type]
    "scroll limit str": lambda c: c.scroll("l", limit="10"),  # type: ignore[arg-type]
    "scroll limit None": lambda c: c.scroll("l", limit=None),  # type: ignore[arg-type]
    "scroll limit bool": lambda c: c.scroll("l", limit=True),
    "scroll unknown collection": lambda c: c.scroll("nope"),
    "scroll offset str for int ids": lambda c: c.scroll("l", offset="a"),
    "scroll offset int for str ids": lambda c: c.scroll("s", offset=1),
    "scroll offset negative": lambda c: c.scroll("l", offset=-1),
    "scroll offset float": lambda c: c.scroll("l", offset=1.5),  # type: ignore[arg-type]
    "scroll offset bool": lambda c: c.scroll("l", offset=True),
    "scroll offset 2**64": lambda c: c.scroll("l", offset=2**64),
    "scroll offset list": lambda c: c.scroll("l", offset=[1]),  # type: ignore[arg-type]
    "scroll offset empty str": lambda c: c.scroll("s", offset=""),
    "scroll offset lone surrogate": lambda c: c.scroll("s", offset="\ud800"),
    "scroll offset control char": lambda c: c.scroll("s", offset="a\x07"),
    # filters (count / scroll / delete / search)
    "filter unknown operator": lambda c: c.count("l", {"year": {"$foo": 1}}),
    "filter unknown top operator": lambda c: c.scroll("l", filter={"$nor": [{"a": 1}]}),
    "filter nested bad operand": lambda c: c.count("l", {"$and": [{"a": 1}, {"b": {"$gte": [1]}}]}),
    "filter deep bad operator": lambda c: c.search("l", ONE[0], filter={"$or": [{"$not": {"m.x": {"$in": 3}}}]}),
    "filter $in not an array": lambda c: c.delete("l", filter={"tag": {"$in": "abc"}}),
    "filter $exists not bool": lambda c: c.count("l", {"tag": {"$exists": 1}}),
    "filter $gt null": lambda c: c.count("l", {"year": {"$gt": None}}),
    "filter $gt bool": lambda c: c.scroll("l", filter={"year": {"$gt": True}}),
    "filter $and not an array": lambda c: c.count("l", {"$and": {"a": 1}}),
    "filter $or empty": lambda c: c.count("l", {"$or": []}),
    "filter $not a list": lambda c: c.delete("l", filter={"$not": [{"a": 1}]}),
    "filter operator mixed with value": lambda c: c.count("l", {"a": {"$eq": 1, "b": 2}}),
    "filter empty key": lambda c: c.count("l", {"": 1}),
    "filter key with empty part": lambda c: c.count("l", {"a..b": 1}),
    "filter value an object": lambda c: c.count("l", {"a": {"b": 1}}),
    "filter NaN operand": lambda c: c.count("l", {"a": {"$lt": float("nan")}}),
    "filter lone surrogate": lambda c: c.count("l", {"a": "\ud800"}),
    "filter a string": lambda c: c.count("l", "year > 3"),  # type: ignore[arg-type]
    "filter too deep": lambda c: c.count("l", not_nested(40)),
    # delete
    "delete ids and filter": lambda c: c.delete("l", [1], filter={"a": 1}),
    "delete neither": lambda c: c.delete("l"),
    "delete filter unknown collection": lambda c: c.delete("nope", filter={"a": 1}),
    # set / overwrite payload
    "set_payload null": lambda c: c.set_payload("l", [1], None),  # type: ignore[arg-type]
    "set_payload a list": lambda c: c.set_payload("l", [1], [1, 2]),  # type: ignore[arg-type]
    "set_payload a string": lambda c: c.set_payload("l", [1], "x"),  # type: ignore[arg-type]
    "set_payload a number": lambda c: c.set_payload("l", [1], 3),  # type: ignore[arg-type]
    "set_payload lone surrogate": lambda c: c.set_payload("l", [1], {"t": "\ud800"}),
    "set_payload lone surrogate key": lambda c: c.set_payload("l", [1], {"\udfff": 1}),
    "set_payload NaN": lambda c: c.set_payload("l", [1], {"x": float("nan")}),
    "set_payload set value": lambda c: c.set_payload("l", [1], {"x": {1}}),
    "set_payload int key": lambda c: c.set_payload("l", [1], {1: 1}),  # type: ignore[dict-item]
    "set_payload too big": lambda c: c.set_payload("l", [1], {"x": "y" * config.MAX_PAYLOAD_BYTES}),
    "set_payload too deep": lambda c: c.set_payload("l", [1], nested(config.MAX_PAYLOAD_DEPTH + 1)),
    "set_payload merged too big": lambda c: c.set_payload("c", [1], {"x": "y" * (config.MAX_PAYLOAD_BYTES - 12)}),
    "set_payload bad id": lambda c: c.set_payload("l", [-1], {"a": 1}),
    "set_payload ids not a list": lambda c: c.set_payload("l", 1, {"a": 1}),
    "set_payload empty ids": lambda c: c.set_payload("l", [], {"a": 1}),
    "set_payload str id for int ids": lambda c: c.set_payload("l", ["a"], {"a": 1}),
    "set_payload unknown collection": lambda c: c.set_payload("nope", [1], {"a": 1}),
    "overwrite_payload null": lambda c: c.overwrite_payload("l", [1], None),  # type: ignore[arg-type]
    "overwrite_payload a list": lambda c: c.overwrite_payload("s", ["a"], [{}]),  # type: ignore[arg-type]
    "overwrite_payload lone surrogate": lambda c: c.overwrite_payload("s", ["a"], {"k": ["\udc00"]}),
    "overwrite_payload too big": lambda c: c.overwrite_payload("l", [1], {"x": "y" * config.MAX_PAYLOAD_BYTES}),
    # payload indexes
    "payload index bad type": lambda c: c.create_payload_index("l", "year", "date"),
    "payload index type None": lambda c: c.create_payload_index("l", "year", None),  # type: ignore[arg-type]
    "payload index type upper": lambda c: c.create_payload_index("l", "year", "INT"),
    "payload index key empty": lambda c: c.create_payload_index("l", "", "int"),
    "payload index key None": lambda c: c.create_payload_index("l", None, "int"),  # type: ignore[arg-type]
    "payload index key int": lambda c: c.create_payload_index("l", 5, "int"),  # type: ignore[arg-type]
    "payload index key empty part": lambda c: c.create_payload_index("l", "a..b", "int"),
    "payload index key operator": lambda c: c.create_payload_index("l", "$and", "int"),
    "payload index key lone surrogate": lambda c: c.create_payload_index("l", "\ud800", "int"),
    "payload index key too long": lambda c: c.create_payload_index("l", "k" * 300, "int"),
    "payload index unknown collection": lambda c: c.create_payload_index("nope", "year", "int"),
    "payload index other type": lambda c: c.create_payload_index("c", "seed", "str"),
    "drop missing payload index": lambda c: c.drop_payload_index("l", "year"),
    "drop payload index bad key": lambda c: c.drop_payload_index("l", ""),
    "drop payload index key None": lambda c: c.drop_payload_index("l", None),  # type: ignore[arg-type]
    "drop payload index unknown collection": lambda c: c.drop_payload_index("nope", "year"),
    # snapshots
    "snapshot create unknown collection": lambda c: c.create_snapshot("nope"),
    "snapshot create bad name": lambda c: c.create_snapshot("../x"),
    "snapshot list unknown collection": lambda c: c.list_snapshots("nope"),
    "snapshot restore unknown": lambda c: c.restore_snapshot("l", "nope"),
    "snapshot restore traversal": lambda c: c.restore_snapshot("l", "../x"),
    "snapshot restore empty name": lambda c: c.restore_snapshot("l", ""),
    "snapshot restore name None": lambda c: c.restore_snapshot("l", None),  # type: ignore[arg-type]
    "snapshot restore name lone surrogate": lambda c: c.restore_snapshot("l", "\ud800"),
    "snapshot restore name 10000 chars": lambda c: c.restore_snapshot("l", "s" * 10_000),
    "snapshot restore unknown collection": lambda c: c.restore_snapshot("nope", "s1"),
    "snapshot delete unknown": lambda c: c.delete_snapshot("l", "nope"),
    "snapshot delete slash": lambda c: c.delete_snapshot("l", "a/b"),
    "snapshot delete name int": lambda c: c.delete_snapshot("l", 5),  # type: ignore[arg-type]
    # create-if-absent, exists
    "exist_ok other metric": lambda c: c.create_collection("c", DIM, "l2", index="flat", exist_ok=True),
    "exist_ok other dim": lambda c: c.create_collection("c", DIM + 1, "cosine", index="flat", exist_ok=True),
    "exist_ok other id_type": lambda c: c.create_collection("l", DIM, "l2", id_type="str", index="flat", exist_ok=True),
    "exist_ok other index": lambda c: c.create_collection("l", DIM, "l2", exist_ok=True),
    "exist_ok other index_params": lambda c: c.create_collection("l", DIM, "l2", index="flat", index_params={"x": 1}, exist_ok=True),
    "exist_ok not a bool": lambda c: c.create_collection("q", DIM, exist_ok="yes"),  # type: ignore[arg-type]
    "collection_exists bad name": lambda c: c.collection_exists("a/b"),
    "collection_exists None": lambda c: c.collection_exists(None),  # type: ignore[arg-type]
    # tenants (collection "t": tenants a, b, c; points 0, 1 owned by a and shared with b; 2 by b)
    "tenant unknown search": lambda c: c.search("t", ONE[0], tenant="zz"),
    "tenant unknown upsert": lambda c: c.upsert("t", [10], ONE, tenant="zz"),
    "tenant unknown get": lambda c: c.get("t", [0], tenant="zz"),
    "tenant bad name": lambda c: c.count("t", tenant="a/b"),
    "tenant empty name": lambda c: c.get("t", [0], tenant=""),
    "tenant not text": lambda c: c.count("t", tenant=5),  # type: ignore[arg-type]
    "tenant 65 chars": lambda c: c.scroll("t", tenant="t" * 65),
    "tenant on a plain collection": lambda c: c.count("l", tenant="a"),
    "grant_to on a plain collection": lambda c: c.upsert("l", [10], ONE, grant_to=["a"]),
    "upsert without tenant": lambda c: c.upsert("t", [10], ONE),
    "upsert over another tenant's point": lambda c: c.upsert("t", [2], ONE, tenant="a"),
    "grant_to unknown": lambda c: c.upsert("t", [10], ONE, tenant="a", grant_to=["b", "zz"]),
    "grant_to the owner": lambda c: c.upsert("t", [10], ONE, tenant="a", grant_to=["a"]),
    "grant_to not an array": lambda c: c.upsert("t", [10], ONE, tenant="a", grant_to="b"),  # type: ignore[arg-type]
    "grant unknown ids": lambda c: c.grant("t", [0, 77], tenant="c", owner="a"),
    "grant to self": lambda c: c.grant("t", [0], tenant="a", owner="a"),
    "grant by a grantee": lambda c: c.grant("t", [0], tenant="c", owner="b"),
    "grant of an unseen point": lambda c: c.grant("t", [2], tenant="c", owner="a"),
    "grant to unknown tenant": lambda c: c.grant("t", [0], tenant="zz"),
    "revoke the owner": lambda c: c.revoke("t", [0], tenant="a"),
    "delete by a grantee": lambda c: c.delete("t", [0], tenant="b"),
    "set_payload by a grantee": lambda c: c.set_payload("t", [1], {"x": 1}, tenant="b"),
    "create existing tenant": lambda c: c.create_tenant("t", "a"),
    "create tenant bad name": lambda c: c.create_tenant("t", "a b"),
    "create tenant on a plain collection": lambda c: c.create_tenant("l", "a"),
    "get unknown tenant": lambda c: c.get_tenant("t", "zz"),
    "drop unknown tenant": lambda c: c.drop_tenant("t", "zz"),
    "tenant and tenants": lambda c: c.search("t", ONE[0], tenant="a", tenants=["b"]),
    "tenants empty": lambda c: c.search("t", ONE[0], tenants=[]),
    "tenants unknown": lambda c: c.search("t", ONE[0], tenants=["a", "zz"]),
    "list_tenants limit 0": lambda c: c.list_tenants("t", limit=0),
    "list_tenants bad offset": lambda c: c.list_tenants("t", offset="a/b"),
    # documents (issue 11): kind="multivector" collection "mv", dense "l"
    "docs on dense collection": lambda c: c.upsert_documents("l", [5], [ONE]),
    "dense upsert on documents": lambda c: c.upsert("mv", [5], ONE),
    "dense search on documents": lambda c: c.search("mv", ONE[0]),
    "search_documents on dense": lambda c: c.search_documents("l", ONE),
    "docs unknown collection": lambda c: c.upsert_documents("nope", [5], [ONE]),
    "docs not a list": lambda c: c.upsert_documents("mv", [5], 7),
    "docs empty list": lambda c: c.upsert_documents("mv", [5], []),
    "doc a vector": lambda c: c.upsert_documents("mv", [5], [ONE[0]]),
    "doc of strings": lambda c: c.upsert_documents("mv", [5], [[["a"] * DIM]]),
    "doc wrong dim": lambda c: c.upsert_documents("mv", [5, 6], [ONE, np.ones((2, DIM + 1))]),
    "doc no tokens": lambda c: c.upsert_documents("mv", [5], [np.zeros((0, DIM))]),
    "doc too many tokens": lambda c: c.upsert_documents("mv", [5], [np.ones((4097, DIM))]),
    "docs too many tokens in all": lambda c: c.upsert_documents("mv", list(range(17)), [np.ones((4096, DIM))] * 17),
    "doc NaN": lambda c: c.upsert_documents("mv", [5, 6], [ONE, np.array([[1, 2, 3, 4], [1, np.nan, 3, 4]])]),
    "doc inf": lambda c: c.upsert_documents("mv", [5], [np.full((1, DIM), np.inf)]),
    "doc beyond float32": lambda c: c.upsert_documents("mv", [5], [np.full((1, DIM), 1e300)]),
    "doc zero token cosine": lambda c: c.upsert_documents("mv", [5], [np.zeros((2, DIM))]),
    "docs count mismatch": lambda c: c.upsert_documents("mv", [5, 6], [ONE]),
    "docs bad id": lambda c: c.upsert_documents("mv", ["x"], [ONE]),
    "docs payload a list": lambda c: c.upsert_documents("mv", [5], [ONE], payloads=[[1]]),
    "doc weights wrong length": lambda c: c.upsert_documents("mv", [5], [FOUR], weights=[[1.0, 2.0]]),
    "doc weights NaN": lambda c: c.upsert_documents("mv", [5], [ONE], weights=[[float("nan")]]),
    "doc weights count": lambda c: c.upsert_documents("mv", [5], [ONE], weights=[None, None]),
    "search_documents k 0": lambda c: c.search_documents("mv", ONE, k=0),
    "search_documents query a vector": lambda c: c.search_documents("mv", ONE[0]),
    "search_documents query wrong dim": lambda c: c.search_documents("mv", np.ones((2, DIM + 1))),
    "search_documents query NaN": lambda c: c.search_documents("mv", [ONE, np.full((1, DIM), np.nan)]),
    "search_documents query empty": lambda c: c.search_documents("mv", np.zeros((0, DIM))),
    "search_documents too many query tokens": lambda c: c.search_documents("mv", np.ones((1025, DIM))),
    "search_documents bad param": lambda c: c.search_documents("mv", ONE, params={"nprobe": -1}),
    "search_documents unknown param": lambda c: c.search_documents("mv", ONE, params={"max_postings": 3}),
    "search_documents bad rerank": lambda c: c.search_documents("mv", ONE, params={"rerank": "int4"}),
    "search_documents bad filter": lambda c: c.search_documents("mv", ONE, filter={"seed": {"$bad": 1}}),
    "get_documents bad id": lambda c: c.get_documents("mv", [-1]),
    "get_documents with_tokens str": lambda c: c.get_documents("mv", [0], with_tokens="yes"),  # type: ignore[arg-type]
    # documents in tenants: "mt" (tenants a, b (max_vectors 2); a owns 0 and 1, granted to b)
    "documents tenant on a plain collection": lambda c: c.search_documents("mv", ONE, tenant="a"),
    "documents grant_to on a plain collection": lambda c: c.upsert_documents("mv", [5], [ONE], grant_to=["a"]),
    "documents without an owner": lambda c: c.upsert_documents("mt", [5], [ONE]),
    "documents unknown owner": lambda c: c.upsert_documents("mt", [5], [ONE], tenant="z"),
    "documents of another owner": lambda c: c.upsert_documents("mt", [1], [ONE], tenant="b"),
    "documents grant_to the owner": lambda c: c.upsert_documents("mt", [5], [ONE], tenant="a", grant_to=["a"]),
    "documents past a grantee's quota": lambda c: c.upsert_documents("mt", [5], [ONE], tenant="a", grant_to=["b"]),
    "search_documents unknown tenant": lambda c: c.search_documents("mt", ONE, tenant="z"),
    "search_documents tenant and tenants": lambda c: c.search_documents("mt", ONE, tenant="a", tenants=["b"]),
    "get_documents unknown tenant": lambda c: c.get_documents("mt", [0], tenant="z"),
    "documents tenant max_bytes": lambda c: c.create_tenant("mt", "n", max_bytes=1024),
    "delete a granted document": lambda c: c.delete("mt", [0], tenant="b"),
    "multivector bad index_params": lambda c: c.create_collection("m", DIM, kind="multivector", index_params={"residual_bits": 3}),
    # stored quotas (tenant "q": max_vectors 3, max_bytes 2 vectors; owns point 5)
    "quota vectors by grant": lambda c: c.grant("t", [0, 1, 2], tenant="q"),
    "quota vectors by grant_to": lambda c: c.upsert("t", [6, 7, 8], FOUR[:3], tenant="a", grant_to=["q"]),
    "quota bytes by upsert": lambda c: c.upsert("t", [6, 7], FOUR[:2], tenant="q"),
    "create tenant max_vectors -1": lambda c: c.create_tenant("t", "n", max_vectors=-1),
    "create tenant max_bytes 2**60": lambda c: c.create_tenant("t", "n", max_bytes=2**60),
    "create tenant max_vectors 2**70": lambda c: c.create_tenant("t", "n", max_vectors=2**70),
    "create tenant max_vectors str": lambda c: c.create_tenant("t", "n", max_vectors="10"),  # type: ignore[arg-type]
    "create tenant max_vectors bool": lambda c: c.create_tenant("t", "n", max_vectors=True),
    "create tenant max_bytes float": lambda c: c.create_tenant("t", "n", max_bytes=1.5),  # type: ignore[arg-type]
    "create tenant quota bad name first": lambda c: c.create_tenant("t", "a b", max_bytes=1.5),  # type: ignore[arg-type]
    "update unknown tenant": lambda c: c.update_tenant("t", "zz", max_vectors=1),
    "update tenant max_bytes -5": lambda c: c.update_tenant("t", "q", max_bytes=-5),
    "update tenant on a plain collection": lambda c: c.update_tenant("l", "q", max_vectors=1),
    "search with_stats int": lambda c: c.search("t", ONE[0], tenant="a", with_stats=1),  # type: ignore[arg-type]
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_the_same_error_in_both_modes_and_changes_nothing(
    clients: dict[str, Any], name: str
) -> None:
    """Same class, message, field and reason embedded, remote and async remote; nothing
    changes."""
    before = {mode: state(c) for mode, c in clients.items()}
    local = outcome(clients["local"], CASES[name])
    assert outcome(clients["remote"], CASES[name]) == local
    assert outcome(clients["aio"], CASES[name]) == local
    assert len(local[1]) <= 512
    for mode, c in clients.items():
        assert state(c) == before[mode], mode


def test_the_table_names_fields_with_public_names(clients: dict[str, Any]) -> None:
    """Structured fields use the request's public names and positions."""
    expected = {
        "row too short": ("vectors[1]", "WRONG_DIMENSION"),
        "query NaN": ("queries[0][0]", "NOT_FINITE"),
        "k 0": ("k", "BAD_K"),
        "duplicate ids upsert": ("ids[1]", "DUPLICATE_ID"),
        "payload lone surrogate": ("payloads[1]", "BAD_PAYLOAD"),
        "payload a list": ("payloads[1]", "BAD_PAYLOAD"),
        "name 10000 chars": ("collection", "BAD_NAME"),
        "str id lone surrogate": ("ids[1]", "BAD_ID"),
        "unknown collection count": (None, "NOT_FOUND"),
        "unknown id_type": ("id_type", "BAD_ID_TYPE"),
        "unknown kind": ("kind", "BAD_KIND"),
        "index_params not an object": ("index_params", "BAD_JSON"),
        "set_payload null": ("payload", "BAD_PAYLOAD"),
        "set_payload a list": ("payload", "BAD_PAYLOAD"),
        "overwrite_payload lone surrogate": ("payload", "BAD_PAYLOAD"),
        "set_payload set value": ("payload", "BAD_PAYLOAD"),
        "set_payload bad id": ("ids[0]", "BAD_ID"),
        "exist_ok other metric": (None, "ALREADY_EXISTS"),
        "search with_vectors int": ("with_vectors", "INVALID_ARGUMENT"),
        "optimize wait str": ("wait", "INVALID_ARGUMENT"),
        "scroll limit 2**70": ("limit", "INVALID_ARGUMENT"),
        "filter $gt bool": ("filter.year.$gt", "BAD_FILTER"),
        "tenant bad name": ("tenant", "BAD_NAME"),
        "tenant unknown search": ("tenant", "TENANT_NOT_FOUND"),
        "tenant on a plain collection": ("tenant", "NOT_MULTI_TENANT"),
        "upsert without tenant": ("tenant", "MISSING_TENANT"),
        "upsert over another tenant's point": ("ids[0]", "NOT_OWNER"),
        "grant_to unknown": ("grant_to[1]", "TENANT_NOT_FOUND"),
        "grant_to the owner": ("grant_to[0]", "GRANT_TO_OWNER"),
        "grant unknown ids": ("ids[1]", "NOT_FOUND"),
        "grant to self": ("tenant", "GRANT_TO_OWNER"),
        "grant by a grantee": ("ids[0]", "NOT_OWNER"),
        "grant of an unseen point": ("ids[0]", "NOT_FOUND"),
        "revoke the owner": ("ids[0]", "REVOKE_OWNER"),
        "delete by a grantee": ("ids[0]", "NOT_OWNER"),
        "create existing tenant": ("tenant", "ALREADY_EXISTS"),
        "tenants empty": ("tenants", "EMPTY"),
        "tenants unknown": ("tenants[1]", "TENANT_NOT_FOUND"),
        "quota vectors by grant": ("tenant", "TENANT_VECTOR_QUOTA"),
        "quota vectors by grant_to": ("grant_to", "TENANT_VECTOR_QUOTA"),
        "quota bytes by upsert": ("tenant", "TENANT_BYTES_QUOTA"),
        "create tenant max_vectors -1": ("max_vectors", "OUT_OF_RANGE"),
        "create tenant max_vectors 2**70": ("max_vectors", "OUT_OF_RANGE"),
        "create tenant max_bytes float": ("max_bytes", "BAD_TYPE"),
        "unknown index": ("index", "BAD_INDEX"),
        "create tenant quota bad name first": ("tenant", "BAD_NAME"),
        "update tenant max_bytes -5": ("max_bytes", "OUT_OF_RANGE"),
        "search with_stats int": ("with_stats", "INVALID_ARGUMENT"),
        "list_tenants limit 0": ("limit", "OUT_OF_RANGE"),
        "doc wrong dim": ("documents[1]", "WRONG_DIMENSION"),
        "doc NaN": ("documents[1][1][1]", "NOT_FINITE"),
        "doc too many tokens": ("documents[0]", "TOO_MANY_TOKENS"),
        "doc weights wrong length": ("weights[0]", "BAD_WEIGHTS"),
        "search_documents query NaN": ("query[1][0][0]", "NOT_FINITE"),
        "search_documents bad param": ("params.nprobe", "INVALID_ARGUMENT"),
        "spann params out of range": ("params.max_postings", "INVALID_ARGUMENT"),
        "spann params unknown": ("params.max_posting", "INVALID_ARGUMENT"),
        "spann index_params out of range": ("index_params.replicas", "INVALID_ARGUMENT"),
        "tenant params out of range": ("params.tenant_cluster_size", "INVALID_ARGUMENT"),
        "docs on dense collection": ("collection", "WRONG_KIND"),
    }
    for name, (field, reason) in expected.items():
        _, message, got_field, got_reason = outcome(clients["remote"], CASES[name])
        assert (got_field, got_reason) == (field, reason), name
        assert "dict" not in message and "list" not in message, message


PYTHON_WORDS = re.compile(r"\b(dict|list|tuple|NoneType|JsonNull)\b|got bool\b")


@pytest.mark.parametrize("name", list(CASES))
def test_messages_use_json_words(clients: dict[str, Any], name: str) -> None:
    """No message speaks Python (dict, list, NoneType, ...): JSON and proto words only."""
    message = outcome(clients["local"], CASES[name])[1]
    assert not PYTHON_WORDS.search(message), message
