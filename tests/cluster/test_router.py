"""The router answers like one node: 3 real `vecdb serve --role shard` processes, a real etcd
catalog and a router, checked against an embedded node holding the same data (exact index:
the same answers; SPANN: the same recall), through the remote and the async SDK; tenant
routing (one shard for a tenant without foreign grants; grants across shards seen by the
grantee only); bad input gets a node's error and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster_procs import Cluster
from oracles import assert_search_matches, distances, recall_at_k

import vecdb
from vecdb.errors import VecdbError

DIM = 12
N = 900


@pytest.fixture(scope="module")
def cluster(etcd_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("router"), etcd_server.endpoint)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pair(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(client of the router, embedded node) with the same empty database."""
    with vecdb.connect(cluster.address) as r, vecdb.connect(str(tmp_path / "node")) as n:
        yield r, n
        for info in r.list_collections():
            r.drop_collection(info.name)


def _data(seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads = [{"g": i % 7, "even": i % 2 == 0, "name": f"p{i}"} for i in range(N)]
    return x, payloads


def _load(clients: tuple[Any, ...], name: str, ids: list[Any], **kw: Any) -> np.ndarray:
    x, payloads = _data()
    for c in clients:
        c.create_collection(name, DIM, "l2", **kw)
        for lo in range(0, N, 300):
            c.upsert(name, ids[lo : lo + 300], x[lo : lo + 300], payloads=payloads[lo : lo + 300])
    return x


def _same_records(a: list[Any], b: list[Any]) -> None:
    assert [r.id for r in a] == [r.id for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.payload == rb.payload
        if rb.vector is None:
            assert ra.vector is None
        else:
            np.testing.assert_array_equal(ra.vector, rb.vector)


@pytest.mark.parametrize("id_kind", ["int", "str"])
def test_flat_collection_through_router_equals_one_node(
    pair: tuple[Any, Any], id_kind: str
) -> None:
    """Search (with filter, payloads, vectors), get, count, scroll pages, delete by ids and by
    filter and set_payload through the router give exactly a single node's answers."""
    r, n = pair
    ids: list[Any] = list(range(N)) if id_kind == "int" else [f"id-{i}" for i in range(N)]
    x = _load((r, n), "flat", ids, index="flat", id_type=id_kind)
    assert r.count("flat") == n.count("flat") == N
    info = r.get_collection("flat")
    assert (info.count, info.dim, info.index.value) == (N, DIM, "flat")
    q = np.random.default_rng(1).standard_normal((16, DIM)).astype(np.float32)
    for kw in (
        {},
        {"filter": {"g": {"$in": [1, 3]}}},
        {"with_payload": True, "with_vectors": True},
    ):
        got, want = r.search("flat", q, k=10, **kw), n.search("flat", q, k=10, **kw)
        assert got.ids.tolist() == want.ids.tolist()
        np.testing.assert_array_equal(got.distances, want.distances)
        assert got.payloads == want.payloads
        if want.vectors is not None:
            assert got.vectors is not None
            for row_a, row_b in zip(got.vectors, want.vectors, strict=True):
                for va, vb in zip(row_a, row_b, strict=True):
                    np.testing.assert_array_equal(va, vb)
    assert_search_matches(r.search("flat", q, k=10), ids, distances(x, q, "l2"), 10)
    wanted = [ids[5], ids[700], "nope" if id_kind == "str" else 10**6, ids[3], ids[450]]
    _same_records(r.get("flat", wanted), n.get("flat", wanted))
    _same_records(
        r.get("flat", wanted, with_vectors=False), n.get("flat", wanted, with_vectors=False)
    )
    for flt in (None, {"even": True}, {"g": {"$gte": 5}}):
        assert r.count("flat", flt) == n.count("flat", flt)
        pages_r, pages_n = [], []
        for client, pages in ((r, pages_r), (n, pages_n)):
            offset = None
            while True:
                page, offset = client.scroll("flat", filter=flt, limit=97, offset=offset)
                pages.append(([p.id for p in page], offset))
                if offset is None:
                    break
        assert pages_r == pages_n
    assert r.delete("flat", ids[:40]) == n.delete("flat", ids[:40]) == 40
    assert r.delete("flat", filter={"g": 6}) == n.delete("flat", filter={"g": 6})
    assert r.set_payload("flat", ids[100:120], {"tag": 1}) == n.set_payload(
        "flat", ids[100:120], {"tag": 1}
    )
    assert r.overwrite_payload("flat", ids[130:131], {"o": 2}) == 1
    n.overwrite_payload("flat", ids[130:131], {"o": 2})
    _same_records(r.scroll("flat", limit=1000)[0], n.scroll("flat", limit=1000)[0])
    got, want = (
        r.search("flat", q, k=25, filter={"tag": 1}),
        n.search("flat", q, k=25, filter={"tag": 1}),
    )
    assert got.ids.tolist() == want.ids.tolist()


def test_spann_collection_recall_matches_one_node(pair: tuple[Any, Any]) -> None:
    """A SPANN collection through the router has the recall of one node (within 0.01)."""
    r, n = pair
    ids = list(range(N))
    x = _load((r, n), "sp", ids, index="spann")
    for c in (r, n):
        c.optimize("sp", wait=True)
    q = np.random.default_rng(2).standard_normal((40, DIM)).astype(np.float32)
    truth = distances(x, q, "l2")
    rec_r = recall_at_k(r.search("sp", q, k=10).ids, ids, truth, 10)
    rec_n = recall_at_k(n.search("sp", q, k=10).ids, ids, truth, 10)
    assert rec_r >= rec_n - 0.01, (rec_r, rec_n)


def test_async_sdk_through_router(cluster: Cluster, pair: tuple[Any, Any]) -> None:
    """The async SDK through the router: create, upsert, search, count as one node."""
    r, n = pair
    x, _ = _data(3)

    async def run() -> tuple[Any, int]:
        async with vecdb.AsyncClient(cluster.address, timeout=20) as a:
            await a.create_collection("aio", DIM, "l2", index="flat")
            await a.upsert("aio", list(range(200)), x[:200])
            res = await a.search("aio", x[:5], k=5, allow_partial=True)
            counted = await a.count("aio", allow_partial=True)
            assert counted.missing_shards == []
            return res, counted

    res, count = asyncio.run(run())
    n.create_collection("aio", DIM, "l2", index="flat")
    n.upsert("aio", list(range(200)), x[:200])
    assert count == 200
    assert res.ids.tolist() == n.search("aio", x[:5], k=5).ids.tolist()
    assert res.missing_shards == []


def _error(call: Any, *args: Any) -> tuple[str, str, str | None, str] | None:
    try:
        call(*args)
    except VecdbError as exc:
        return type(exc).__name__, exc.message, exc.field, exc.reason
    return None


def test_bad_input_gets_a_nodes_error_and_changes_nothing(pair: tuple[Any, Any]) -> None:
    """Bad upserts, searches, filters, ids and names get the same error class, message,
    field and reason through the router as from one node, and write nothing."""
    r, n = pair
    _load((r, n), "bad", list(range(N)), index="flat")
    x = np.ones((3, DIM), np.float32)
    nan = x.copy()
    nan[2, 4] = np.nan
    cases = [
        lambda c: c.upsert("bad", [1, 2, 3], x[:, :5]),
        lambda c: c.upsert("bad", [5000, 5001, 5000], x),
        lambda c: c.upsert("bad", [5000, 5001, 5002], nan),
        lambda c: c.upsert("bad", [5000, -1, 5002], x),
        lambda c: c.upsert("bad", [5000, 5001, 5002], x, payloads=[{}, {}, "x"]),
        lambda c: c.upsert("bad", [5000, 5001], x),
        lambda c: c.upsert("bad", [5000], x[:1], tenant="t"),
        lambda c: c.search("bad", x, k=0),
        lambda c: c.search("bad", x[:, :3], k=3),
        lambda c: c.search("nope", x, k=3),
        lambda c: c.count("bad", {"g": {"$near": 1}}),
        lambda c: c.get("bad", ["a"]),
        lambda c: c.scroll("bad", limit=0),
        lambda c: c.delete("bad", [1], filter={"g": 1}),
        lambda c: c.create_collection("bad", DIM + 1, "l2"),
        lambda c: c.create_collection("b a d", DIM, "l2"),
        lambda c: c.create_collection("ok", 0, "l2"),
        lambda c: c.create_tenant("bad", "t"),
    ]
    for i, case in enumerate(cases):
        got, want = _error(case, r), _error(case, n)
        assert want is not None, i
        assert got == want, (i, got, want)
    assert r.count("bad") == n.count("bad") == N
    assert [c.name for c in r.list_collections()] == ["bad"]


def test_tenant_without_foreign_grants_touches_one_shard(
    cluster: Cluster, pair: tuple[Any, Any]
) -> None:
    """Tenants are spread over the shards; a tenant's search, count, get and scroll touch its
    home shard only (stats["shards"] == 1) and answer what one node answers."""
    r, n = pair
    x, _ = _data(4)
    for c in (r, n):
        c.create_collection("mt", DIM, "l2", index="flat", multi_tenant=True)
        for t in range(6):
            c.create_tenant("mt", f"t{t}")
            c.upsert(
                "mt",
                list(range(t * 100, t * 100 + 100)),
                x[t * 100 : t * 100 + 100],
                tenant=f"t{t}",
            )
    homes = {r_.home for (coll, _), r_ in cluster.catalog.state().tenants.items() if coll == "mt"}
    assert homes == {0, 1, 2}
    q = x[:4]
    for t in ("t0", "t4"):
        got = r.search("mt", q, k=8, tenant=t, with_stats=True)
        assert got.stats is not None and got.stats["shards"] == 1
        assert got.ids.tolist() == n.search("mt", q, k=8, tenant=t).ids.tolist()
        assert r.count("mt", tenant=t) == n.count("mt", tenant=t) == 100
        assert [p.id for p in r.scroll("mt", tenant=t)[0]] == [
            p.id for p in n.scroll("mt", tenant=t)[0]
        ]
    everyone = r.search("mt", q, k=8, with_stats=True)
    assert everyone.stats is not None and everyone.stats["shards"] == 3
    assert everyone.ids.tolist() == n.search("mt", q, k=8).ids.tolist()
    assert r.get_tenant("mt", "t2").owned == 100


def test_grants_across_shards_are_seen_by_the_grantee_only(
    cluster: Cluster, pair: tuple[Any, Any]
) -> None:
    """Points granted to a tenant homed on another shard: the grantee sees them (search,
    count, get), others do not, revoke takes them away; an id has one owner cluster-wide."""
    r, n = pair
    x, _ = _data(5)
    for c in (r, n):
        c.create_collection("g", DIM, "l2", index="flat", multi_tenant=True)
        for t in ("a", "b", "c"):
            c.create_tenant("g", t)
        c.upsert("g", list(range(0, 50)), x[:50], tenant="a")
        c.upsert("g", list(range(50, 100)), x[50:100], tenant="b", grant_to=["a"])
        c.upsert("g", list(range(100, 150)), x[100:150], tenant="c")
        c.grant("g", list(range(100, 110)), tenant="a")
    placement = cluster.catalog.state().tenants[("g", "a")]
    assert len(placement.shards) == 3  # a's own, b's and c's shards
    q = x[[3, 60, 105]]
    for t in ("a", "b", "c"):
        assert r.count("g", tenant=t) == n.count("g", tenant=t)
        got = r.search("g", q, k=20, tenant=t)
        assert got.ids.tolist() == n.search("g", q, k=20, tenant=t).ids.tolist()
    assert r.count("g", tenant="a") == 110
    assert [p.id for p in r.get("g", [60, 105, 149], tenant="a")] == [60, 105]
    assert r.get("g", [60], tenant="c") == []
    assert r.search("g", q, k=5, tenants=["b", "c"]).ids.tolist() == \
        n.search("g", q, k=5, tenants=["b", "c"]).ids.tolist()  # fmt: skip
    assert r.revoke("g", list(range(100, 105)), tenant="a") == 5
    assert r.count("g", tenant="a") == 105
    assert _error(lambda: r.upsert("g", [7], x[:1], tenant="c")) == \
        _error(lambda: n.upsert("g", [7], x[:1], tenant="c"))  # fmt: skip
