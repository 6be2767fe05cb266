"""Client-side routing of tenant reads (issue 14): 2 real `vecdb serve --role shard`
processes, a real etcd catalog and an in-process router. A tenant on one shard is answered by
that shard without the router (the router's own request counter does not move) with the
routed call's exact answers and errors; a grant that puts the tenant on two shards makes the
shard refuse the cached route (STALE_ROUTE) and the client go through the router, with the
granted points in its answer; a shard the client cannot reach directly, and a plain node as
the target, leave every answer to the target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
from cluster_procs import Cluster

import vecdb
from vecdb.client.routes import ROUTE_KEY, STALE_ROUTE
from vecdb.errors import VecdbError
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

DIM = 8
WATCH_LAG_S = 0.5  # far above a loopback etcd watch's delivery (milliseconds)


@pytest.fixture(scope="module")
def cluster(etcd_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("direct"), etcd_server.endpoint, n=2)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def loaded(cluster: Cluster) -> Iterator[tuple[str, np.ndarray]]:
    """A multi-tenant flat collection: tenant a (home shard 0) owns ids 0-99, b (home shard
    1) owns ids 100-199; payloads {"g": id % 3}."""
    name = f"mt{time.monotonic_ns() % 10**9}"
    x = np.random.default_rng(3).standard_normal((200, DIM)).astype(np.float32)
    with vecdb.connect(cluster.address) as c:
        c.create_collection(name, DIM, "l2", index="flat", multi_tenant=True)
        for tenant, lo in (("a", 0), ("b", 100)):
            c.create_tenant(name, tenant)
            ids = list(range(lo, lo + 100))
            c.upsert(name, ids, x[lo : lo + 100], [{"g": i % 3} for i in ids], tenant=tenant)
        yield name, x
        c.drop_collection(name)


def router_calls(cluster: Cluster, method: str) -> float:
    """Calls of `method` the router answered (its request counter, every status code)."""
    reg = cluster.router._metrics.registry
    return sum(
        s.value for m in reg.collect() if m.name == "vecdb_requests" for s in m.samples
        if s.name == "vecdb_requests_total" and s.labels.get("method") == method
    )  # fmt: skip


def _plain(value: Any) -> Any:
    """Arrays (also nested in lists) as lists, so answers compare with ==."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _reads(c: Any, name: str, x: np.ndarray, tenant: str) -> list[Any]:
    """Every routed read of one tenant, as comparable values."""
    res = c.search(name, x[:3], 5, tenant=tenant, filter={"g": {"$in": [0, 1]}},
                   with_payload=True, with_vectors=True, with_stats=True)  # fmt: skip
    recs = c.get(name, [1, 2, 150], tenant=tenant)
    page, nxt = c.scroll(name, tenant=tenant, limit=7, with_vectors=True)
    return [
        res.ids.tolist(), res.distances.tolist(), res.payloads,
        _plain(res.vectors),
        res.stats["shards"],
        [(r.id, r.payload, r.vector.tolist()) for r in recs],
        [(r.id, r.payload, r.vector.tolist()) for r in page], nxt,
        c.count(name, tenant=tenant), c.count(name, {"g": 1}, tenant=tenant),
    ]  # fmt: skip


def test_tenant_on_one_shard_is_answered_by_it_without_the_router(
    cluster: Cluster, loaded: tuple[str, np.ndarray]
) -> None:
    name, x = loaded
    with vecdb.connect(cluster.address) as routed, \
            vecdb.connect(cluster.address, direct_routing=True) as direct:  # fmt: skip
        want = {t: _reads(routed, name, x, t) for t in ("a", "b")}
        direct.count(name, tenant="a")  # learns a's route (one GetRoute)
        direct.count(name, tenant="b")
        before = {m: router_calls(cluster, m) for m in ("Search", "Get", "Scroll", "Count")}
        got = {t: _reads(direct, name, x, t) for t in ("a", "b")}
        after = {m: router_calls(cluster, m) for m in ("Search", "Get", "Scroll", "Count")}
        table = direct._direct.table  # type: ignore[attr-defined]
        assert got == want
        assert after == before  # not one of them reached the router
        assert table.counters["lookups"] == 2 and table.counters["stale"] == 0
        assert table.counters["direct"] == 2 + 2 * 5
        # A shard's own error is the routed call's error, unchanged.
        errors = []
        for c in (routed, direct):
            with pytest.raises(VecdbError) as info:
                c.search(name, x[0], 5, tenant="a", filter={"g": {"$bad": 1}})
            errors.append((type(info.value), info.value.message, info.value.field,
                           info.value.reason))  # fmt: skip
        assert errors[0] == errors[1]
        assert router_calls(cluster, "Search") == after["Search"] + 1  # the routed one only
        # Calls that are not one tenant's read still go to the router.
        assert direct.count(name) == routed.count(name) == 200
        both = direct.search(name, x[:2], 4, tenants=["a", "b"])
        assert both.ids.tolist() == routed.search(name, x[:2], 4, tenants=["a", "b"]).ids.tolist()


def test_async_client_routes_directly_too(cluster: Cluster, loaded: tuple[str, np.ndarray]) -> None:
    name, x = loaded

    async def run() -> tuple[list[Any], list[Any], dict[str, int]]:
        async with vecdb.AsyncClient(cluster.address) as routed, \
                vecdb.AsyncClient(cluster.address, direct_routing=True) as direct:  # fmt: skip
            out = []
            for c in (routed, direct):
                res = await c.search(name, x[:2], 5, tenant="b", with_payload=True)
                recs = await c.get(name, [100, 101, 3], tenant="b")
                out.append([res.ids.tolist(), res.payloads, [r.id for r in recs],
                            await c.count(name, tenant="b")])  # fmt: skip
            return out[0], out[1], dict(direct._direct.table.counters)  # type: ignore[union-attr]

    want, got, counters = asyncio.run(run())
    assert got == want
    assert counters["lookups"] == 1 and counters["direct"] == 3


def test_a_grant_onto_a_second_shard_ends_the_direct_route(
    cluster: Cluster, loaded: tuple[str, np.ndarray]
) -> None:
    """a's cached route says shard 0; b (shard 1) grants its points to a: shard 0 refuses the
    stale route and the client answers through the router, granted points included."""
    name, x = loaded
    with vecdb.connect(cluster.address) as routed, \
            vecdb.connect(cluster.address, direct_routing=True) as direct:  # fmt: skip
        assert direct.count(name, tenant="a") == 100  # route cached: shard 0
        table = direct._direct.table  # type: ignore[attr-defined]
        assert table.counters["direct"] == 1
        routed.grant(name, list(range(100, 120)), tenant="a", owner="b")
        time.sleep(WATCH_LAG_S)  # the shards' catalog watches deliver the new placement
        before = router_calls(cluster, "Count")
        assert direct.count(name, tenant="a") == routed.count(name, tenant="a") == 120
        assert table.counters["stale"] == 1
        assert router_calls(cluster, "Count") == before + 2  # the refused one went routed
        res = direct.search(name, x[110], 3, tenant="a")
        assert res.ids[0][0] == 110  # a granted point, found through the router
        assert table.counters["direct"] == 1 and table.counters["lookups"] == 2
        route = pb_grpc.VectorDBStub(direct._channel).GetRoute(  # type: ignore[attr-defined]
            pb.GetRouteRequest(collection=name, tenant="a"))  # fmt: skip
        assert list(route.shards) == [0, 1]


@pytest.mark.parametrize(
    ("route", "tenant", "why"),
    [("1@0", "a", "the route names shard 1"), ("0@999999", "a", "is older than the route's"),
     ("0@x", "a", "malformed route"), ("0@0", "b", "not on this shard alone")],
)  # fmt: skip
def test_a_shard_refuses_a_route_its_catalog_does_not_hold(
    cluster: Cluster, loaded: tuple[str, np.ndarray], route: str, tenant: str, why: str
) -> None:
    name, x = loaded
    with grpc.insecure_channel(cluster.shards[0].address) as ch:
        stub = pb_grpc.VectorDBStub(ch)
        req = pb.CountRequest(collection=name, tenant=tenant)
        with pytest.raises(grpc.RpcError) as info:
            stub.Count(req, metadata=((ROUTE_KEY, route),), timeout=10)
        err = status.error_of(info.value)
        assert (err.code, err.reason) == ("FAILED_PRECONDITION", STALE_ROUTE)
        assert why in err.message
        good = pb.CountRequest(collection=name, tenant="a")  # a lives on shard 0 alone
        assert stub.Count(good, metadata=((ROUTE_KEY, "0@0"),), timeout=10).count == 100


def test_a_shard_not_reached_directly_leaves_the_call_to_the_router(
    cluster: Cluster, loaded: tuple[str, np.ndarray]
) -> None:
    """Shard addresses the client cannot reach (here: a closed port) cost one connection
    attempt, then the calls go through the router for UNREACHABLE_S."""
    name, x = loaded
    with vecdb.connect(cluster.address) as routed, \
            vecdb.connect(cluster.address, direct_routing=True) as direct:  # fmt: skip
        routes = direct._direct  # type: ignore[attr-defined]
        routes._make_channel = lambda address: grpc.insecure_channel("127.0.0.1:1")
        want = routed.search(name, x[:2], 5, tenant="a", with_payload=True)
        before = router_calls(cluster, "Search")
        t0 = time.monotonic()
        for _ in range(3):
            got = direct.search(name, x[:2], 5, tenant="a", with_payload=True)
            assert got.ids.tolist() == want.ids.tolist() and got.payloads == want.payloads
        assert time.monotonic() - t0 < 3.0  # one connect timeout, not one per call
        assert router_calls(cluster, "Search") == before + 3
        assert routes.table.counters["unreachable"] == 1 and routes.table.counters["direct"] == 0


def test_async_client_falls_back_to_the_router_for_an_unreachable_shard(
    cluster: Cluster, loaded: tuple[str, np.ndarray]
) -> None:
    name, x = loaded

    async def run() -> tuple[list[Any], dict[str, int], float]:
        async with vecdb.AsyncClient(cluster.address, direct_routing=True) as direct:
            routes = direct._direct  # type: ignore[attr-defined]
            routes._make_channel = lambda address: grpc.aio.insecure_channel("127.0.0.1:1")
            t0 = time.monotonic()
            got = [(await direct.search(name, x[:2], 5, tenant="b")).ids.tolist()
                   for _ in range(3)]  # fmt: skip
            return got, dict(routes.table.counters), time.monotonic() - t0

    got, counters, seconds = asyncio.run(run())
    with vecdb.connect(cluster.address) as routed:
        want = routed.search(name, x[:2], 5, tenant="b").ids.tolist()
    assert got == [want] * 3 and seconds < 3.0
    assert counters["unreachable"] == 1 and counters["direct"] == 0


def test_a_plain_node_target_is_unaffected(tmp_path: Any) -> None:
    from vecdb.server.app import VecdbServer
    from vecdb.server.config import load_config

    cfg = load_config(env={}, overrides={
        "server": {"data": str(tmp_path / "db"), "host": "127.0.0.1", "port": 0},
        "metrics": {"enabled": False},
    })  # fmt: skip
    server = VecdbServer(cfg).start()
    try:
        with vecdb.connect(f"127.0.0.1:{server.port}", direct_routing=True) as c:
            c.create_collection("mt", DIM, "l2", index="flat", multi_tenant=True)
            c.create_tenant("mt", "a")
            x = np.eye(DIM, dtype=np.float32)
            c.upsert("mt", list(range(DIM)), x, tenant="a")
            for _ in range(3):
                assert c.search("mt", x[2], 1, tenant="a").ids.tolist() == [[2]]
                assert c.count("mt", tenant="a") == DIM
            table = c._direct.table  # type: ignore[attr-defined]
            assert not table.enabled  # GetRoute: UNIMPLEMENTED, asked once
            assert table.counters["lookups"] == 1 and table.counters["direct"] == 0
    finally:
        server.stop(grace=0)


def test_a_direct_client_never_closed_lets_python_exit(
    cluster: Cluster, loaded: tuple[str, np.ndarray]
) -> None:
    """A program that opens a direct_routing client, reads a tenant directly and ends
    without closing it exits at once; before, the shard channel left open could hold the
    exit in grpc's channel finalizer (1 run of 6 here hung until killed at the timeout)."""
    import subprocess
    import sys

    name, _ = loaded
    script = (
        "import numpy as np, vecdb\n"
        f"c = vecdb.connect({cluster.address!r}, direct_routing=True)\n"
        f"c.search({name!r}, np.ones({DIM}, 'float32'), k=3, tenant='a')\n"
        "assert c._direct.table.counters['direct'] == 1\n"
        "print('searched')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and "searched" in done.stdout, done.stderr[-2000:]
