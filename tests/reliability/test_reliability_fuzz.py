"""Fuzzing every request type of `vecdb.v1.VectorDB` over a real gRPC server.

Hypothesis builds requests from the proto descriptors themselves (every field of every
request message, nested messages, repeated and map fields, with values biased towards the
interesting: the existing collection names, empty and over-long strings, NUL, NaN and inf,
vectors of right and wrong byte lengths, negative and huge numbers), and for a tenth of the
cases sends random bytes instead of a message. Per call: no INTERNAL or UNKNOWN status (an
uncaught exception), the server answers every call, and a rejected call changes nothing
(RocksDB's sequence number and the collection list are the same after it). CI runs CASES
cases; VECDB_RELIABILITY_SCALE=40 gives >= 10,000.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_data import SCALE

from vecdb.engine import Database
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

CASES = 300 * SCALE
DIM = 4
SERVICE = pb.DESCRIPTOR.services_by_name["VectorDB"]
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

NAMES = ["c", "s", "d", "e", "nope", "", "a/b", "../x", "\x00", "x" * 300, "日本語", "c "]
JSONISH = ["{}", '{"a": 1}', '{"year": {"$gte": 2000}}', '{"$bad": 1}', "[1]", "nan", "{"]


def f32(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


BYTES = [b"", f32(1, 2, 3, 4), f32(1, 2, 3, 4, 5, 6, 7, 8), f32(math.nan, 0, 0, 0),
         f32(math.inf, 1, 1, 1), f32(0, 0, 0, 0), b"\x00\x01\x02", f32(1e30, 1e30, 1, 1)]  # fmt: skip
INT_EDGES = [0, 1, 2, 3, 4, 8, 10, 100, 2**31 - 1, 2**32 - 1, 2**63 - 1, -1, -(2**31), -(2**63)]
RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return st.sampled_from(NAMES + JSONISH) | st.text(max_size=12)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.sampled_from(BYTES) | st.binary(max_size=40)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf, 1e39]) | st.floats(
            width=32 if t == FieldDescriptor.TYPE_FLOAT else 64
        )
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in f.enum_type.values] + [99])
    lo, hi = RANGES[t]
    return st.sampled_from([x for x in INT_EDGES if lo <= x <= hi]) | st.integers(lo, hi)


# Fields whose plausible values reach past validation into the engine, by field name.
BIAS: dict[str, st.SearchStrategy[Any]] = {
    "collection": st.sampled_from(["c", "c", "s"]),
    "name": st.sampled_from(["c", "s", "new"]),
    "dim": st.sampled_from([4, 4, 0, 3]),
    "count": st.sampled_from([1, 1, 2, 0, 3]),
    "k": st.sampled_from([1, 3, 10, 0]),
    "limit": st.sampled_from([1, 5, 0]),
    "data": st.sampled_from([f32(1, 2, 3, 4), f32(1, 2, 3, 4, 5, 6, 7, 8), f32(0, 1, 0, 1)]),
    "payloads": st.sampled_from(['{"year": 2001}', "{}", "", '{"a": [1, 2]}']),
    "filter": st.sampled_from(['{"year": 2001}', '{"year": {"$gte": 2010}}', ""]),
}


def message(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for messages of `desc`: each field unset or drawn as above."""
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if f.message_type.GetOptions().map_entry:
                key = scalar(f.message_type.fields_by_name["key"])
                vf = f.message_type.fields_by_name["value"]
                val = message(vf.message_type, depth + 1) if vf.message_type else scalar(vf)
                parts[f.name] = st.none() | st.dictionaries(key, val, max_size=3)
                continue
            one = message(f.message_type, depth + 1)
        else:
            one = scalar(f)
            if f.name in BIAS:
                one = BIAS[f.name] | one
        if f.is_repeated:
            parts[f.name] = st.none() | st.lists(one, max_size=4)
        else:
            parts[f.name] = st.none() | one
    cls = message_factory.GetMessageClass(desc)
    return st.fixed_dictionaries(parts).map(lambda d: build(cls, d))


def build(cls: Any, values: dict[str, Any]) -> Any:
    msg = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = getattr(msg, name)
        if isinstance(value, dict):
            for k, v in value.items():
                if hasattr(field[k], "CopyFrom"):
                    field[k].CopyFrom(v)
                else:
                    field[k] = v
        elif isinstance(value, list):
            if value and hasattr(value[0], "SerializeToString"):
                for v in value:
                    field.add().CopyFrom(v)
            else:
                field.extend(value)
        elif hasattr(value, "SerializeToString"):
            field.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, int]]:
    path = tmp_path_factory.mktemp("fuzz") / "db"
    db = Database(path, settings={"idle_seconds": 3600, "drain_vectors": 10**9})
    seed(db)
    overrides = {"server": {"data": str(path), "port": 0, "workers": 4},
                 "metrics": {"enabled": False, "port": 0}}  # fmt: skip
    srv = VecdbServer(load_config(env={}, overrides=overrides), db=db).start()
    yield db, srv.port
    srv.stop(grace=0)
    db.close()


def seed(db: Database) -> None:
    """The collections the fuzzer's names hit, (re)created if a case dropped them: dense
    (SPANN, flat with string ids) and multi-vector (with documents, and empty)."""
    names = {c.name for c in db.list_collections()}
    x = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
    if "c" not in names:
        db.create_collection("c", DIM, "l2")
        db.upsert("c", list(range(20)), x, [{"year": 2000 + i} for i in range(20)])
    if "s" not in names:
        db.create_collection("s", DIM, "cosine", id_type="str", index="flat")
        db.upsert("s", [f"p{i}" for i in range(20)], x)
    if "d" not in names:  # documents, and a document collection that never held one
        db.create_collection("d", DIM, "ip", kind="multivector")
        db.upsert_documents("d", [1, 2, 3], [x[:3], x[3:4], x[4:9]],
                            payloads=[{"year": 2000}, None, {"year": 2010}])  # fmt: skip
    if "e" not in names:
        db.create_collection("e", DIM, "cosine", kind="multivector")


def quiet(db: Database) -> None:
    """Wait until no index job runs or is due (background commits would move the digest)."""
    for _ in range(400):
        busy = False
        for c in db.list_collections():
            st_ = db.stats(c.name)["index_status"]
            busy |= st_["state"] in ("building", "indexing", "maintaining")
            busy |= bool(st_["optimize_pending"]) or bool(st_["maintenance_pending"])
        if not busy:
            return
        time.sleep(0.02)


def digest(db: Database) -> tuple[int, tuple[str, ...]]:
    return db.kv.sequence(), tuple(sorted(c.name for c in db.list_collections()))


def call(ch: grpc.Channel, method: Any, body: bytes) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method.name}"
    ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    try:
        if method.client_streaming:
            rpc = ch.stream_stream(path, request_serializer=ident, response_deserializer=ident)
            for _ in rpc(iter([body]), timeout=30):
                pass
        else:
            ch.unary_unary(path, request_serializer=ident, response_deserializer=ident)(
                body, timeout=30
            )
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


METHODS = list(SERVICE.methods)
REQUEST = st.sampled_from(METHODS).flatmap(
    lambda m: st.tuples(
        st.just(m),
        st.integers(0, 9).flatmap(
            lambda i: (
                st.binary(max_size=64)
                if i == 0
                else message(m.input_type).map(lambda msg: msg.SerializeToString())
            )
        ),
    )
)


def test_every_request_type_fuzzed_over_grpc(served: tuple[Database, int]) -> None:
    """CASES fuzzed requests: 0 INTERNAL/UNKNOWN, 0 state changes after a rejected call."""
    db, port = served
    codes: dict[str, int] = {}
    bad: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:

        @settings(
            max_examples=CASES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(REQUEST)
        def one(case: tuple[Any, bytes]) -> None:
            method, body = case
            before = digest(db)
            code = call(ch, method, body)
            codes[code.name] = codes.get(code.name, 0) + 1
            if code in BAD:
                bad.append(f"{method.name} -> {code.name}: {body!r}"[:300])
            elif code != grpc.StatusCode.OK and digest(db) != before:
                bad.append(f"{method.name} rejected ({code.name}) but changed state: {body!r}")
            if code == grpc.StatusCode.OK:
                quiet(db)
                seed(db)
                quiet(db)

        one()
    print(f"fuzz: {sum(codes.values())} calls, codes {dict(sorted(codes.items()))}")
    assert not bad, "\n".join(bad[:20])
    assert sum(codes.values()) >= CASES
