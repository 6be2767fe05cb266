"""Every applicable row of reliability.md section 8, sent over the wire to a real server.

Each case asserts the status code (as the `vecdb.errors` class the SDK raises, or the raw
gRPC code for requests the SDK cannot build), that health still answers SERVING afterwards,
and that the seeded data is unchanged. Rows about auth, limits, deadlines and shutdown need
differently configured servers and live in test_server_auth_tls.py / test_server_limits.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, health_status, seed, snapshot

import vecdb
from vecdb import config
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

Case = Callable[[vecdb.Client], Any]
ONE = np.ones((1, DIM), np.float32)


def vec(*values: float) -> np.ndarray:
    return np.array([values], dtype=np.float32)


SDK_CASES: list[tuple[str, Case, str]] = [
    ("unknown collection", lambda c: c.count("nope"), "NOT_FOUND"),
    ("search unknown collection", lambda c: c.search("nope", ONE[0]), "NOT_FOUND"),
    ("create existing", lambda c: c.create_collection("base", DIM, "l2"), "ALREADY_EXISTS"),
    ("vector too short", lambda c: c.upsert("base", [99], np.ones((1, DIM - 1))), "INVALID_ARGUMENT"),
    ("vector too long", lambda c: c.upsert("base", [99], np.ones((1, DIM + 1))), "INVALID_ARGUMENT"),
    ("vector empty", lambda c: c.upsert("base", [99], np.ones((1, 0))), "INVALID_ARGUMENT"),
    ("query wrong dim", lambda c: c.search("base", np.ones(DIM + 2)), "INVALID_ARGUMENT"),
    ("NaN stored", lambda c: c.upsert("base", [99], vec(0, np.nan, 0, 0)), "INVALID_ARGUMENT"),
    ("+inf stored", lambda c: c.upsert("base", [99], vec(np.inf, 0, 0, 0)), "INVALID_ARGUMENT"),
    ("-inf stored", lambda c: c.upsert("base", [99], vec(0, 0, 0, -np.inf)), "INVALID_ARGUMENT"),
    ("NaN query", lambda c: c.search("base", vec(np.nan, 0, 0, 0)), "INVALID_ARGUMENT"),
    ("inf query", lambda c: c.search("base", vec(0, np.inf, 0, 0)), "INVALID_ARGUMENT"),
    ("absurd magnitude", lambda c: c.upsert("base", [99], vec(1e30, 0, 0, 0)), "INVALID_ARGUMENT"),
    ("zero vector cosine", lambda c: c.upsert("cos", [99], np.zeros((1, DIM))), "INVALID_ARGUMENT"),
    ("zero query cosine", lambda c: c.search("cos", np.zeros(DIM)), "INVALID_ARGUMENT"),
    ("empty upsert", lambda c: c.upsert("base", [], np.zeros((0, DIM))), "INVALID_ARGUMENT"),
    ("empty delete", lambda c: c.delete("base", []), "INVALID_ARGUMENT"),
    ("batch over cap", lambda c: c.upsert("base", list(range(config.MAX_BATCH + 1)),
                                          np.ones((config.MAX_BATCH + 1, DIM))), "INVALID_ARGUMENT"),
    ("duplicate ids", lambda c: c.upsert("base", [5, 5], np.ones((2, DIM))), "INVALID_ARGUMENT"),
    ("ids/vectors count", lambda c: c.upsert("base", [98, 99], ONE), "INVALID_ARGUMENT"),
    ("k = 0", lambda c: c.search("base", ONE[0], k=0), "INVALID_ARGUMENT"),
    ("k negative", lambda c: c.search("base", ONE[0], k=-1), "INVALID_ARGUMENT"),
    ("k above cap", lambda c: c.search("base", ONE[0], k=config.MAX_K + 1), "INVALID_ARGUMENT"),
    ("search params", lambda c: c.search("base", ONE[0], params={"max_postings": -1}),
     "INVALID_ARGUMENT"),
    ("negative int id", lambda c: c.upsert("base", [-1], ONE), "INVALID_ARGUMENT"),
    ("empty str id", lambda c: c.upsert("sid", [""], ONE), "INVALID_ARGUMENT"),
    ("str id too long", lambda c: c.upsert("sid", ["x" * (config.MAX_STR_ID_BYTES + 1)], ONE),
     "INVALID_ARGUMENT"),
    ("str id with NUL", lambda c: c.upsert("sid", ["a\x00b"], ONE), "INVALID_ARGUMENT"),
    ("str id control char", lambda c: c.upsert("sid", ["a\x07"], ONE), "INVALID_ARGUMENT"),
    ("int id in str coll", lambda c: c.upsert("sid", [1], ONE), "INVALID_ARGUMENT"),
    ("str id in int coll", lambda c: c.upsert("base", ["x"], ONE), "INVALID_ARGUMENT"),
    ("name traversal", lambda c: c.create_collection("../x", DIM), "INVALID_ARGUMENT"),
    ("name slash", lambda c: c.count("a/b"), "INVALID_ARGUMENT"),
    ("name empty", lambda c: c.create_collection("", DIM), "INVALID_ARGUMENT"),
    ("name NUL", lambda c: c.create_collection("a\x00", DIM), "INVALID_ARGUMENT"),
    ("name too long", lambda c: c.create_collection("a" * 65, DIM), "INVALID_ARGUMENT"),
    ("dim 0", lambda c: c.create_collection("d0", 0), "INVALID_ARGUMENT"),
    ("unknown metric", lambda c: c.create_collection("m", DIM, "hamming"), "INVALID_ARGUMENT"),
    ("payload too deep", lambda c: c.upsert("base", [99], ONE, [_nested(config.MAX_PAYLOAD_DEPTH + 5)]),
     "INVALID_ARGUMENT"),
    ("payload too big", lambda c: c.upsert("base", [99], ONE, [{"x": "y" * config.MAX_PAYLOAD_BYTES}]),
     "INVALID_ARGUMENT"),
    ("payload not a dict", lambda c: c.upsert("base", [99], ONE, [[1, 2]]), "INVALID_ARGUMENT"),
    ("payload NaN", lambda c: c.upsert("base", [99], ONE, [{"x": float("nan")}]), "INVALID_ARGUMENT"),
    ("payload count", lambda c: c.upsert("base", [99], ONE, [{"a": 1}, {"b": 2}]), "INVALID_ARGUMENT"),
    ("filter not a dict", lambda c: c.search("base", ONE[0], filter=[1]), "INVALID_ARGUMENT"),  # type: ignore[arg-type]
]  # fmt: skip


def _nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(depth):
        out = {"x": out}
    return out


def _raw_upsert(collection: str, ids: pb.Ids, data: bytes, count: int, payloads: list[str]) -> Any:
    vectors = pb.Vectors(dim=DIM, count=count, data=data)
    return pb.UpsertRequest(collection=collection, ids=ids, vectors=vectors, payloads=payloads)


_GOOD = np.ones(DIM, "<f4").tobytes()
RAW_CASES: list[tuple[str, str, Any, grpc.StatusCode]] = [
    ("bytes not multiple of 4", "Upsert",
     _raw_upsert("base", pb.Ids(ints=pb.IntIds(values=[99])), _GOOD[:-1], 1, []),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("count x dim mismatch", "Upsert",
     _raw_upsert("base", pb.Ids(ints=pb.IntIds(values=[99])), _GOOD * 2, 1, []),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("query bytes not multiple of 4", "Search",
     pb.SearchRequest(collection="base", queries=pb.Vectors(dim=2, count=1, data=b"\x00" * 7),
                      options=pb.SearchOptions(k=1)),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("ragged lengths not matching data", "Upsert",
     pb.UpsertRequest(collection="base", ids=pb.Ids(ints=pb.IntIds(values=[99])),
                      vectors=pb.Vectors(count=1, row_lengths=[3], data=_GOOD)),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("unknown metric number", "CreateCollection",
     pb.CreateCollectionRequest(name="m9", dim=DIM, metric=99),  # type: ignore[arg-type]
     grpc.StatusCode.INVALID_ARGUMENT),
    ("invalid UTF-8 str id", "Upsert",
     _raw_upsert("sid", pb.Ids(strs=pb.StrIds(values=[b"\xff\xfe"])), _GOOD, 1, []),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("payload not JSON", "Upsert",
     _raw_upsert("base", pb.Ids(ints=pb.IntIds(values=[99])), _GOOD, 1, ["{not json"]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("payload JSON null", "Upsert",
     _raw_upsert("base", pb.Ids(ints=pb.IntIds(values=[99])), _GOOD, 1, ["null"]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("payload lone surrogate escape", "Upsert",
     _raw_upsert("base", pb.Ids(ints=pb.IntIds(values=[99])), _GOOD, 1, ['{"a":"\\ud800"}']),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("filter not JSON", "SearchBatch",
     pb.SearchRequest(collection="base", queries=pb.Vectors(dim=DIM, count=1, data=_GOOD),
                      options=pb.SearchOptions(k=1, filter="{")),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("stream seq not increasing", "UpsertStream", None, grpc.StatusCode.INVALID_ARGUMENT),
]  # fmt: skip


@pytest.fixture
def seeded(server: VecdbServer, remote: vecdb.Client) -> Any:
    """The server's database seeded, and its snapshot before the bad request."""
    seed(remote)
    return snapshot(remote)


@pytest.mark.parametrize("name,call,code", SDK_CASES, ids=[c[0] for c in SDK_CASES])
def test_bad_request_is_rejected_and_changes_nothing(
    server: VecdbServer, remote: vecdb.Client, seeded: Any, name: str, call: Case, code: str
) -> None:
    """The SDK raises the error class of the expected status; the server keeps serving."""
    with pytest.raises(vecdb.VecdbError) as info:
        call(remote)
    assert info.value.code == code, f"{name}: {info.value!r}"
    # Never empty; that messages name the field is asserted per case, in both modes, by
    # tests/client/test_client_bad_input.py.
    assert info.value.message
    assert health_status(server.port) == "SERVING"
    assert snapshot(remote) == seeded


@pytest.mark.parametrize("name,rpc,request_,code", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_malformed_message_is_rejected_and_changes_nothing(
    server: VecdbServer, remote: vecdb.Client, stub: pb_grpc.VectorDBStub, seeded: Any,
    name: str, rpc: str, request_: Any, code: grpc.StatusCode,
) -> None:  # fmt: skip
    """Requests only a hand-built message can carry get a status code, not a crash."""
    with pytest.raises(grpc.RpcError) as info:
        if rpc == "UpsertStream":
            batch = _raw_upsert("base", pb.Ids(ints=pb.IntIds(values=[99])), _GOOD, 1, [])
            reqs = [
                pb.UpsertStreamRequest(seq=5, batch=batch),
                pb.UpsertStreamRequest(seq=5, batch=batch),
            ]
            list(stub.UpsertStream(iter(reqs), timeout=10))
        else:
            getattr(stub, rpc)(request_, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert info.value.details()
    trailers = dict(info.value.trailing_metadata() or ())
    assert len(trailers.get("x-request-id", "")) == 16
    assert health_status(server.port) == "SERVING"
    if rpc == "UpsertStream":  # the first batch (seq 5) was acknowledged, so it is stored
        remote.delete("base", [99])
    assert snapshot(remote) == seeded


def test_non_ascii_ids_round_trip_byte_identical(remote: vecdb.Client) -> None:
    """Non-ASCII string ids come back exactly as sent (no normalisation)."""
    ids = ["日本語", "😀", "e\u0301", "\u00e9"]  # combining and precomposed forms both kept
    remote.create_collection("u", dim=2, metric="l2", id_type="str", index="flat")
    remote.upsert("u", ids, np.arange(8, dtype=np.float32).reshape(4, 2))
    assert [r.id for r in remote.get("u", ids)] == ids
    res = remote.search("u", np.zeros(2), k=4)
    assert sorted(res.ids[0].tolist()) == sorted(ids)


def test_k_above_count_answers_fewer_results(remote: vecdb.Client, seeded: Any) -> None:
    """top_k larger than the collection is fine: the rest is padding."""
    res = remote.search("base", ONE[0], k=50)
    assert (res.ids[0] >= 0).sum() == 20 and np.isinf(res.distances[0, 20:]).all()


def test_delete_of_missing_id_is_ok_and_reports_zero(remote: vecdb.Client, seeded: Any) -> None:
    """Deleting ids that do not exist succeeds and deletes nothing."""
    assert remote.delete("base", [1000, 1001]) == 0
    assert snapshot(remote) == seeded


def test_dropped_collection_answers_not_found(remote: vecdb.Client, seeded: Any) -> None:
    """Operations on a dropped collection are NOT_FOUND."""
    remote.drop_collection("cos")
    with pytest.raises(vecdb.NotFound):
        remote.search("cos", ONE[0])


def test_unknown_method_is_unimplemented(server: VecdbServer) -> None:
    """A method the service does not have answers UNIMPLEMENTED."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        call = ch.unary_unary("/vecdb.v1.VectorDB/Nope")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert health_status(server.port) == "SERVING"


def test_unparseable_body_is_invalid_argument_malformed_request(
    server: VecdbServer, remote: vecdb.Client, seeded: Any
) -> None:
    """Invalid UTF-8 in a proto `string` (a collection name) fails to parse: the answer is
    INVALID_ARGUMENT with reason MALFORMED_REQUEST, not grpcio's INTERNAL."""
    bad = b"\x0a\x02\xff\xfe"  # field 1 (collection), length 2, invalid UTF-8
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        call = ch.unary_unary("/vecdb.v1.VectorDB/Count")
        with pytest.raises(grpc.RpcError) as info:
            call(bad, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid vecdb.v1.CountRequest" in info.value.details()
    err = status.error_from_rpc(info.value.code(), info.value.details(),
                                info.value.trailing_metadata())  # fmt: skip
    assert err.reason == "MALFORMED_REQUEST"
    assert health_status(server.port) == "SERVING"
    assert snapshot(remote) == seeded
