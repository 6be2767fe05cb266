"""A Search counts its reads only when they are wanted (issue 12): the caller asked
(`with_stats`) or the call names a tenant (the per-tenant bytes-read metric reads them).
Otherwise the answer carries no stats, and is otherwise the same."""

from __future__ import annotations

import grpc
import numpy as np

import vecdb
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

DIM = 8


def _request(with_stats: bool, tenant: str = "") -> pb.SearchRequest:
    q = np.ones((2, DIM), np.float32)
    return pb.SearchRequest(collection="c", queries=convert.matrix_to_proto(q), tenant=tenant,
                            options=pb.SearchOptions(k=3, with_stats=with_stats))  # fmt: skip


def test_stats_only_when_asked_or_for_a_tenant(server: VecdbServer) -> None:
    target = f"127.0.0.1:{server.port}"
    with vecdb.connect(target, timeout=20) as c:
        c.create_collection("c", DIM, "l2", index="flat", multi_tenant=True)
        c.create_tenant("c", "t")
        c.upsert("c", [1, 2, 3, 4], np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM),
                 tenant="t")  # fmt: skip
        asked = c.search("c", np.ones((2, DIM), np.float32), k=3, tenant="t", with_stats=True)
        assert asked.stats is not None and asked.stats["queries"] == 2
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.VectorDBStub(ch)
        plain = stub.Search(_request(False, "t"))  # a tenant: counted (the tenant metric)
        assert plain.HasField("stats") and plain.stats.queries == 2
        with_stats = stub.Search(_request(True, "t"))
        assert with_stats.stats.queries == 2
        for resp in (plain, with_stats):
            assert list(resp.ids.ints.values) == list(with_stats.ids.ints.values)
            assert resp.distances == with_stats.distances


def test_no_stats_for_a_plain_search(server: VecdbServer) -> None:
    target = f"127.0.0.1:{server.port}"
    with vecdb.connect(target, timeout=20) as c:
        c.create_collection("c", DIM, "l2", index="flat")
        c.upsert("c", [1, 2, 3, 4], np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM))
        assert c.search("c", np.ones((2, DIM), np.float32), k=3).stats is None
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.VectorDBStub(ch)
        plain, asked = stub.Search(_request(False)), stub.Search(_request(True))
    assert not plain.HasField("stats")
    assert asked.HasField("stats") and asked.stats.queries == 2
    asked.ClearField("stats")
    assert plain == asked  # the rest of the answer is the same
    assert list(plain.found) == [3, 3] and plain.ids.WhichOneof("kind") == "ints"
