"""Faults under the router: a shard SIGKILLed or SIGSTOPped (strict calls fail within the
client's deadline naming it, partial calls answer from the others), restarted on its data
directory (exact answers again, and collections created while it was down are caught up);
etcd stopped (data calls go on, catalog changes fail clearly and work once etcd is back);
`vecdb serve --role router` as a process.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cluster_procs import Cluster, router

import vecdb
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

DIM = 8
N = 600
DEADLINE = 2.0  # the client's per-call timeout in these tests


@pytest.fixture(scope="module")
def cluster(etcd_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A margin of 300 ms (default 50) keeps the router's answer ahead of the client's
    # deadline on a loaded CI machine, so a late shard is named rather than timed out.
    c = Cluster(tmp_path_factory.mktemp("faults"), etcd_server.endpoint, margin_ms=300)
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    with vecdb.connect(c.address) as client:
        client.create_collection("f", DIM, "l2", index="flat")
        client.upsert("f", list(range(N)), x, payloads=[{"i": i} for i in range(N)])
        client.create_collection("fd", DIM, kind="multivector")  # documents of 3 tokens
        client.upsert_documents("fd", list(range(60)), [x[3 * i : 3 * i + 3] for i in range(60)])
    c.x = x  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def node(cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    """An embedded node holding what the cluster holds."""
    with vecdb.connect(str(tmp_path / "node")) as n:
        n.create_collection("f", DIM, "l2", index="flat")
        n.upsert("f", list(range(N)), cluster.x, payloads=[{"i": i} for i in range(N)])  # type: ignore[attr-defined]
        yield n


def _partial_count(address: str) -> pb.CountResponse:
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.VectorDBStub(ch)  # type: ignore[no-untyped-call]
        return stub.Count(pb.CountRequest(collection="f", allow_partial=True), timeout=DEADLINE)  # type: ignore[no-any-return]


def _shard_ids(cluster: Cluster, shard: int) -> set[int]:
    from vecdb.cluster.routing import shard_of

    return {i for i in range(N) if shard_of(i, len(cluster.shards)) == shard}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_lost_shard_strict_fails_in_deadline_partial_answers(
    cluster: Cluster, node: Any, sig: signal.Signals
) -> None:
    """With shard 1 killed or stopped: a strict search fails Unavailable within the client's
    deadline naming shard 1; allow_partial answers from shards 0 and 2 (exactly their part
    of the top-k) and names shard 1 in missing_shards; Count likewise. Back (restarted on its
    directory, or continued), every answer is exact again."""
    lost = cluster.shards[1]
    q = cluster.x[:6]  # type: ignore[attr-defined]
    absent = _shard_ids(cluster, 1)
    lost.signal(sig)
    try:
        with vecdb.connect(cluster.address, timeout=DEADLINE) as c:
            t0 = time.monotonic()
            with pytest.raises(vecdb.Unavailable) as info:
                c.search("f", q, k=10)
            assert time.monotonic() - t0 < DEADLINE + 0.5
            assert lost.address in info.value.message
            t0 = time.monotonic()
            part = c.search("f", q, k=10, allow_partial=True)
            assert time.monotonic() - t0 < DEADLINE + 0.5
            assert part.missing_shards == [lost.address]
            want = node.search("f", q, k=10, filter={"i": {"$nin": sorted(absent)}})
            assert part.ids.tolist() == want.ids.tolist()
            with pytest.raises(vecdb.Unavailable):
                c.count("f")
            counted = c.count("f", allow_partial=True)
            assert counted == N - len(absent) and counted.missing_shards == [lost.address]
            wire = _partial_count(cluster.address)  # what the SDK read
            assert (wire.count, list(wire.missing_shards)) == (counted, [lost.address])
            # documents too (the SDK's search_documents had no allow_partial: TypeError)
            with pytest.raises(vecdb.Unavailable):
                c.search_documents("fd", q[:3], k=5)
            docs = c.search_documents("fd", q[:3], k=5, allow_partial=True)
            assert docs.missing_shards == [lost.address]
            assert not set(docs.ids[0].tolist()) & absent and len(docs.ids[0]) == 5
    finally:
        if sig == signal.SIGSTOP:
            lost.signal(signal.SIGCONT)
        else:
            lost.restart()
    with vecdb.connect(cluster.address, timeout=10) as c:
        got = c.search("f", q, k=10)
        assert got.ids.tolist() == node.search("f", q, k=10).ids.tolist()
        assert got.missing_shards == []
        whole = c.count("f", allow_partial=True)
        assert whole == N and whole.missing_shards == []


def test_shard_down_at_create_catches_up_on_return(cluster: Cluster) -> None:
    """A collection created while shard 2 is down is created there when it comes back (its
    ShardSync reads the catalog), and a dropped one is dropped there too."""
    lost = cluster.shards[2]
    with vecdb.connect(cluster.address, timeout=10) as c:
        c.create_collection("gone", DIM, "l2", index="flat")
        lost.signal(signal.SIGKILL)
        try:
            c.create_collection("late", DIM, "l2", index="flat")
            c.drop_collection("gone")
        finally:
            lost.restart()
        x = cluster.x[:90]  # type: ignore[attr-defined]
        end = time.monotonic() + 15
        while True:  # the shard applies the catalog right after start
            try:
                c.upsert("late", list(range(90)), x)
                break
            except vecdb.NotFound:
                assert time.monotonic() < end
                time.sleep(0.1)
        assert c.count("late") == 90
        assert "gone" not in {i.name for i in c.list_collections()}
        with vecdb.connect(lost.address) as direct:
            names = {i.name for i in direct.list_collections()}
        assert "late" in names and "gone" not in names
        c.drop_collection("late")


def test_etcd_down_data_calls_go_on_catalog_changes_fail(
    cluster: Cluster, etcd_server: Any
) -> None:
    """With etcd stopped the router serves searches, upserts and counts from its cached
    catalog; CreateCollection fails Unavailable saying the catalog is unreachable; once etcd
    is back it works again."""
    etcd_server.stop()
    try:
        with vecdb.connect(cluster.address, timeout=10) as c:
            assert c.count("f") == N
            c.upsert("f", [N + 1], cluster.x[:1])  # type: ignore[attr-defined]
            assert c.search("f", cluster.x[:1], k=1).ids[0, 0] in (0, N + 1)  # type: ignore[attr-defined]
            with pytest.raises(vecdb.Unavailable) as info:
                c.create_collection("while_down", DIM, "l2")
            assert "catalog" in info.value.message
            assert c.delete("f", [N + 1]) == 1
    finally:
        etcd_server.start()
    with vecdb.connect(cluster.address, timeout=20) as c:
        end = time.monotonic() + 20
        while True:
            try:
                c.create_collection("after", DIM, "l2", index="flat")
                break
            except vecdb.Unavailable:
                assert time.monotonic() < end, "catalog changes did not recover"
                time.sleep(0.2)
        assert c.get_collection("after").count == 0
        c.drop_collection("after")


def test_router_process_serves_the_cluster(cluster: Cluster, node: Any) -> None:
    """`vecdb serve --role router` as a process: health SERVING, answers as one node."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc = router(cluster.root, cluster.etcd, cluster.prefix, [s.address for s in cluster.shards])
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with vecdb.connect(proc.address, timeout=10) as c:
            q = cluster.x[10:14]  # type: ignore[attr-defined]
            assert c.search("f", q, k=7).ids.tolist() == node.search("f", q, k=7).ids.tolist()
            assert c.count("f") == N
    finally:
        proc.stop()
