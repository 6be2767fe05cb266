"""Router behaviour that needs no separate processes: three in-process nodes on 127.0.0.1:0
as shards, a `MemoryCatalog`, and a `RouterServer`, all real gRPC. API keys forwarded to the
shards (which enforce them) and checked by the router too; a tenant-scoped key; streaming
upserts; snapshots taken, listed, restored and deleted on every shard under one name; an
upsert some shards applied names the shards; payload indexes, optimize, stats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster_procs import router_server

import vecdb
from vecdb.cluster.catalog import MemoryCatalog
from vecdb.cluster.routing import shard_of
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

DIM = 6
ADMIN = "router-admin-key-0001"
ACME = "acme-only-writer-0001"
AUTH = {"admin_key": ADMIN, "keys": [{"key": ACME, "role": "write", "tenants": ["acme"]}]}


class Nodes:
    def __init__(self, root: Path, auth: dict[str, Any] | None, deadline_s: float = 10.0) -> None:
        overrides = {"metrics": {"enabled": False}, "auth": auth or {}}
        self.nodes = [
            VecdbServer(load_config(env={}, overrides={
                **overrides, "server": {"data": str(root / f"s{i}"), "port": 0}})).start()
            for i in range(3)
        ]  # fmt: skip
        self.addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        self.catalog = MemoryCatalog(self.addresses)
        self.router = router_server(self.catalog, self.addresses, auth=auth, deadline_s=deadline_s)
        self.address = f"127.0.0.1:{self.router.port}"

    def stop(self) -> None:
        self.router.stop(grace=0.2)
        for n in self.nodes:
            n.stop(grace=0.2)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path, None)
    try:
        yield n
    finally:
        n.stop()


def test_api_keys_are_checked_by_the_router_and_forwarded(tmp_path: Path) -> None:
    """With keys on the router and the shards: no key is UNAUTHENTICATED, the admin key
    works end to end, a key bound to tenant acme gets acme injected and may not name
    another tenant (PERMISSION_DENIED), and sees only acme's points."""
    cl = Nodes(tmp_path, AUTH)
    try:
        with vecdb.connect(cl.address) as anon:
            with pytest.raises(vecdb.Unauthenticated):
                anon.count("t")
        x = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32)
        with vecdb.connect(cl.address, api_key=ADMIN) as admin:
            admin.create_collection("t", DIM, "l2", index="flat", multi_tenant=True)
            for t in ("acme", "globex"):
                admin.create_tenant("t", t)
            admin.upsert("t", list(range(20)), x[:20], tenant="globex")
            assert admin.count("t") == 20
        with vecdb.connect(cl.address, api_key=ACME) as acme:
            acme.upsert("t", list(range(20, 40)), x[20:])  # tenant injected: acme
            assert acme.count("t") == 20
            res = acme.search("t", x[:3], k=40)
            assert set(res.ids[res.ids >= 0].tolist()) <= set(range(20, 40))
            with pytest.raises(vecdb.PermissionDenied):
                acme.search("t", x[:1], k=1, tenant="globex")
    finally:
        cl.stop()


def test_upsert_stream_through_the_router(nodes: Nodes) -> None:
    """Streamed batches are split per shard, acknowledged in order, and all stored."""
    x = np.random.default_rng(1).standard_normal((500, DIM)).astype(np.float32)
    with vecdb.connect(nodes.address) as c:
        c.create_collection("s", DIM, "l2", index="flat")
        batches = [(list(range(i, i + 100)), x[i : i + 100], None) for i in range(0, 500, 100)]
        acks = list(c.upsert_stream("s", batches))
        assert [a.upserted for a in acks] == [100] * 5
        assert c.count("s") == 500
        per_shard = [n._db.count("s") for n in nodes.nodes]
        assert sum(per_shard) == 500 and min(per_shard) > 100


def test_snapshots_through_the_router_cover_every_shard(nodes: Nodes) -> None:
    """A snapshot through the router is one name covering every shard: listed, restored
    (every shard back to it) and deleted."""
    x = np.random.default_rng(2).standard_normal((90, DIM)).astype(np.float32)
    with vecdb.connect(nodes.address) as c:
        c.create_collection("snap", DIM, "l2", index="flat")
        c.upsert("snap", list(range(90)), x)
        snap = c.create_snapshot("snap")
        assert snap.name.count("+") == 2
        assert [s.name for s in c.list_snapshots("snap")] == [snap.name]
        c.delete("snap", list(range(50)))
        assert c.count("snap") == 40
        c.restore_snapshot("snap", snap.name)
        assert c.count("snap") == 90
        with pytest.raises(vecdb.NotFound) as one:  # a node's class for an unknown name
            c.restore_snapshot("snap", "s1-only-one")
        assert "snapshot 's1-only-one' of collection 'snap' does not exist" in one.value.message
        messages = []
        with vecdb.connect(":memory:") as node:  # an unknown collection: a node's words
            for client in (c, node):
                with pytest.raises(vecdb.NotFound) as other:
                    client.delete_snapshot("nowhere", "s1-only-one")
                messages.append(other.value.message)
        assert messages[0] == messages[1]
        c.delete_snapshot("snap", snap.name)
        assert c.list_snapshots("snap") == []


def test_write_on_a_lost_shard_names_applied_and_failed_shards(nodes: Nodes) -> None:
    """An upsert spanning the shards while shard 1 is gone: Unavailable naming shard 1 as
    failed and 0 and 2 as applied; their parts are stored, and the retry after the shard is
    back stores everything (upserts by id are idempotent)."""
    x = np.random.default_rng(3).standard_normal((60, DIM)).astype(np.float32)
    with vecdb.connect(nodes.address, timeout=1.5) as c:
        c.create_collection("w", DIM, "l2", index="flat")
        data = nodes.nodes[1].config.server.data
        nodes.nodes[1].stop(grace=0.1)
        with pytest.raises(vecdb.Unavailable) as info:
            c.upsert("w", list(range(60)), x)
        msg = info.value.message
        assert f"failed on shards 1 ({nodes.addresses[1]})" in msg
        assert "applied on shards 0" in msg and "idempotent" in msg
        stored = sum(1 for i in range(60) if shard_of(i, 3) != 1)
        port = int(nodes.addresses[1].rsplit(":", 1)[1])
        nodes.nodes[1] = VecdbServer(load_config(env={}, overrides={
            "metrics": {"enabled": False}, "server": {"data": data, "port": port}})).start()  # fmt: skip
        assert sum(n._db.count("w") for n in nodes.nodes) == stored
    # the retry: the router's channel to the restarted shard reconnects after gRPC's backoff
    # (about 1 s), which overran the 1.5 s budget above once on a loaded 2-core CI machine
    with vecdb.connect(nodes.address, timeout=30.0) as c:
        c.upsert("w", list(range(60)), x)
        assert c.count("w") == 60


def test_payload_indexes_optimize_and_stats_reach_every_shard(nodes: Nodes) -> None:
    """A payload index is created on every shard; filtered search through the router equals
    a node; optimize and stats answer for the whole cluster."""
    x = np.random.default_rng(4).standard_normal((120, DIM)).astype(np.float32)
    pays = [{"y": i % 10} for i in range(120)]
    with vecdb.connect(nodes.address) as c, vecdb.connect(":memory:") as n:
        for cl in (c, n):
            cl.create_collection("p", DIM, "l2", index="flat")
            cl.upsert("p", list(range(120)), x, payloads=pays)
            cl.create_payload_index("p", "y", "int")
        assert all(node._db.get_collection("p").payload_indexes == {"y": "int"}
                   for node in nodes.nodes)  # fmt: skip
        f = {"y": {"$lt": 3}}
        assert c.search("p", x[:4], k=9, filter=f).ids.tolist() == \
            n.search("p", x[:4], k=9, filter=f).ids.tolist()  # fmt: skip
        c.optimize("p")
        stats = c.stats("p")
        assert set(stats["shards"]) == set(nodes.addresses)
        c.drop_payload_index("p", "y")
        assert all(node._db.get_collection("p").payload_indexes == {} for node in nodes.nodes)


def test_collection_info_reports_the_least_finished_shard(nodes: Nodes) -> None:
    """A collection whose points all sit unindexed on shard 1 is 'idle' through the router
    (shard 0's 'ready' was reported, and `vecdb optimize` stopped at once with nothing
    indexed); once every shard has built, 'ready' with the build time the shards took."""
    ids = [i for i in range(2_000) if shard_of(i, 3) == 1][:300]
    x = np.random.default_rng(9).standard_normal((len(ids), DIM)).astype(np.float32)
    with vecdb.connect(nodes.address) as c:
        c.create_collection("ix", DIM, "l2", index="spann")
        c.upsert("ix", ids, x)
        for info in (c.get_collection("ix"), *c.list_collections()):
            assert (info.index_state, info.buffered, info.indexed) == ("idle", 300, 0)
        c.optimize("ix")
        info = c.get_collection("ix")
        assert (info.index_state, info.index_progress, info.indexed) == ("ready", 1.0, 300)
        built = nodes.nodes[1]._db.get_collection("ix").last_build_seconds
        assert built is not None and info.last_build_seconds == built


def test_a_tenants_vector_quota_counts_every_shard_it_sees_points_on(nodes: Nodes) -> None:
    """max_vectors bounds what a tenant sees over all shards, as on one node: grants of
    points held on two shards, and upserts naming it in grant_to, are refused past it with
    a node's error and write nothing (each shard counted only its own points: a tenant
    capped at 30 reached 40); the shard a grant put it on got its quota; update_tenant
    answers the counts of every shard."""
    x = np.random.default_rng(8).standard_normal((300, DIM)).astype(np.float32)
    errors = []
    with vecdb.connect(nodes.address) as c, vecdb.connect(":memory:") as n:
        for cl in (c, n):
            cl.create_collection("q", DIM, "l2", index="flat", multi_tenant=True)
            for t in ("own0", "own1", "capped"):  # through the router: homes 0, 1 and 2
                cl.create_tenant("q", t, max_vectors=30 if t == "capped" else None)
            cl.upsert("q", list(range(20)), x[:20], tenant="own0", grant_to=["capped"])
            cl.upsert("q", list(range(100, 120)), x[100:120], tenant="own1")
            assert cl.grant("q", list(range(100, 105)), tenant="capped") == 5
            with pytest.raises(vecdb.ResourceExhausted) as grant:
                cl.grant("q", list(range(100, 120)), tenant="capped")
            with pytest.raises(vecdb.ResourceExhausted) as upsert:
                cl.upsert("q", [200, 201, 202, 203, 204, 205], x[200:206], tenant="own1",
                          grant_to=["capped"])  # fmt: skip
            errors.append([(e.value.message, e.value.field, e.value.reason)
                           for e in (grant, upsert)])  # fmt: skip
            assert cl.grant("q", list(range(100, 105)), tenant="capped") == 0  # nothing new
            assert cl.count("q", tenant="capped") == 25
            assert cl.count("q", tenant="own1") == 20
        assert errors[0] == errors[1]
        assert errors[0][0][0] == "tenant 'capped' would hold 40 vectors, over its 30-vector quota"
        assert errors[0][1][1:] == ("grant_to", "TENANT_VECTOR_QUOTA")
        for address in nodes.addresses[:2]:  # the homes of own0 and own1: capped placed there
            with vecdb.connect(address) as shard:
                assert shard.get_tenant("q", "capped").max_vectors == 30
        assert c.update_tenant("q", "capped", max_vectors=40).vectors == 25


def test_documents_through_the_router_equal_one_node(nodes: Nodes) -> None:
    """Multi-vector documents: upsert split by id (a bad batch gets a node's error and
    writes nothing), get in request order, search_documents merged as one node answers
    (exact MaxSim before any training)."""
    from oracles import clustered_documents, clustered_queries

    docs = clustered_documents(120, DIM, seed=5, tokens=(3, 9))
    queries = clustered_queries(docs, 4, m=5, seed=6)
    pays = [{"g": i % 3} for i in range(120)]
    params = {"K": 256, "min_train_tokens": 1_000_000}
    with vecdb.connect(nodes.address) as c, vecdb.connect(":memory:") as n:
        for cl in (c, n):
            cl.create_collection("pages", DIM, "ip", kind="multivector", index_params=params)
            assert cl.upsert_documents("pages", list(range(120)), docs, payloads=pays) == 120
        bad = [*docs[:3]]
        bad[2] = np.full((2, DIM), np.nan)
        errs = []
        for cl in (c, n):
            with pytest.raises(vecdb.InvalidArgument) as info:
                cl.upsert_documents("pages", [500, 501, 502], bad)
            errs.append((info.value.message, info.value.field, info.value.reason))
        assert errs[0] == errs[1]
        assert c.get_documents("pages", [500]) == []
        got = c.get_documents("pages", [77, 3, 999, 41])
        want = n.get_documents("pages", [77, 3, 999, 41])
        assert [d.id for d in got] == [d.id for d in want] == [77, 3, 41]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.tokens, b.tokens)
            assert a.payload == b.payload
        for q in (queries[0], queries):
            r = c.search_documents("pages", q, k=7, with_payload=True)
            e = n.search_documents("pages", q, k=7, with_payload=True)
            assert r.ids.tolist() == e.ids.tolist()
            np.testing.assert_allclose(r.distances, e.distances, rtol=1e-5, atol=1e-5)
            assert r.payloads == e.payloads


class LaggingCatalog(MemoryCatalog):
    """A second router's catalog whose watch has not caught up: its cache is `truth`'s
    state when made, and `refresh` reads `truth` (the store)."""

    def __init__(self, truth: MemoryCatalog) -> None:
        super().__init__()
        self._truth = truth
        self._state = truth.state()
        self.refreshes = 0

    def refresh(self) -> Any:
        self.refreshes += 1
        self._state = self._truth.state()
        return self._state


def test_a_router_behind_the_catalog_places_points_after_a_fresh_read(nodes: Nodes) -> None:
    """A collection created through one router and written through a second whose cached
    catalog does not know it yet: the second reads the store once and splits the upsert by
    id (a stale cache would have sent it all to shard 0), so every point sits on its own
    shard and gets, deletes and counts through either router see all of them. A name no
    store knows stays NotFound, and unknown names do not read the store more than once
    per MISS_REFRESH_S."""
    from vecdb.cluster.router_base import MISS_REFRESH_S

    lag = LaggingCatalog(nodes.catalog)
    late = router_server(lag, nodes.addresses)
    x = np.random.default_rng(4).standard_normal((60, DIM)).astype(np.float32)
    try:
        with vecdb.connect(nodes.address) as c, vecdb.connect(f"127.0.0.1:{late.port}") as b:
            c.create_collection("q", DIM, "l2", index="flat")
            assert "q" not in lag.state().collections
            assert b.upsert("q", list(range(60)), x) == 60
            for s, address in enumerate(nodes.addresses):
                with vecdb.connect(address) as node:
                    assert node.count("q") == sum(shard_of(i, 3) == s for i in range(60))
            assert lag.refreshes == 1
            assert [r.id for r in c.get("q", [5, 17, 42])] == [5, 17, 42]
            assert b.delete("q", [5, 17, 42]) == 3
            assert c.count("q") == 57
            with pytest.raises(vecdb.NotFound):
                b.upsert("nowhere", [1], x[:1])
            time.sleep(MISS_REFRESH_S)
            before, start = lag.refreshes, time.monotonic()
            for _ in range(5):
                with pytest.raises(vecdb.NotFound):
                    b.count("nowhere")
            # at most one read per MISS_REFRESH_S begun: the five calls usually fit in one
            # such window, but not always on a loaded machine (three reads in one run)
            elapsed = time.monotonic() - start
            assert lag.refreshes - before <= 1 + int(elapsed / MISS_REFRESH_S)
    finally:
        late.stop(grace=0.2)


def test_a_router_that_read_the_store_a_moment_ago_waits_to_see_a_newer_collection(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is read at most once per MISS_REFRESH_S: a write about a name the cache
    lacks, made within that time of the last read (here: a read for an unknown name, then a
    collection created through the other router), waits for the next read instead of
    trusting the cache, so its points are still placed by id. Unknown names keep the store
    to one read per MISS_REFRESH_S even when every call waits."""
    from vecdb.cluster import router_base

    monkeypatch.setattr(router_base, "MISS_REFRESH_S", 1.0)
    lag = LaggingCatalog(nodes.catalog)
    late = router_server(lag, nodes.addresses)
    x = np.random.default_rng(5).standard_normal((60, DIM)).astype(np.float32)
    try:
        with vecdb.connect(nodes.address) as c, vecdb.connect(f"127.0.0.1:{late.port}") as b:
            with pytest.raises(vecdb.NotFound):
                b.upsert("nowhere", [1], x[:1])
            assert lag.refreshes == 1
            c.create_collection("r", DIM, "l2", index="flat")
            assert b.upsert("r", list(range(60)), x) == 60
            assert lag.refreshes == 2
            for s, address in enumerate(nodes.addresses):
                with vecdb.connect(address) as node:
                    assert node.count("r") == sum(shard_of(i, 3) == s for i in range(60))
            t0, before = time.monotonic(), lag.refreshes
            for _ in range(3):
                with pytest.raises(vecdb.NotFound):
                    b.upsert("nowhere", [1], x[:1])
            elapsed = time.monotonic() - t0
            assert lag.refreshes - before <= elapsed / router_base.MISS_REFRESH_S + 1
    finally:
        late.stop(grace=0.2)


def test_a_router_behind_the_catalog_finds_a_new_tenant_after_a_fresh_read(
    nodes: Nodes,
) -> None:
    """Tenants created through one router, written and searched through a second whose
    cache does not place them yet: the second reads the store and sends each tenant's
    calls to its home shard."""
    x = np.random.default_rng(5).standard_normal((40, DIM)).astype(np.float32)
    with vecdb.connect(nodes.address) as c:
        c.create_collection("m", DIM, "l2", index="flat", multi_tenant=True)
        lag = LaggingCatalog(nodes.catalog)
        late = router_server(lag, nodes.addresses)
        try:
            for t in ("acme", "globex", "initech"):
                c.create_tenant("m", t)
            homes = {t: p.home for (col, t), p in nodes.catalog.state().tenants.items()
                     if col == "m"}  # fmt: skip
            assert len(set(homes.values())) == 3  # one tenant per shard
            with vecdb.connect(f"127.0.0.1:{late.port}") as b:
                assert b.upsert("m", list(range(40)), x, tenant="initech") == 40
                got = b.search("m", x[:2], k=5, tenant="initech")
                assert got.ids[:, 0].tolist() == [0, 1]
            with vecdb.connect(nodes.addresses[homes["initech"]]) as home:
                assert home.count("m", tenant="initech") == 40
        finally:
            late.stop(grace=0.2)


def test_a_router_whose_catalog_lags_asks_every_shard(nodes: Nodes) -> None:
    """A second router whose catalog does not know the collections (created through the
    first) and cannot learn them (its store is another) answers searches and counts from
    every shard, not from shard 0's part; a collection no shard holds is still NotFound."""
    from oracles import clustered_documents, clustered_queries

    x = np.random.default_rng(3).standard_normal((90, DIM)).astype(np.float32)
    docs = clustered_documents(60, DIM, seed=7, tokens=(3, 6))
    queries = clustered_queries(docs, 3, m=4, seed=8)
    with vecdb.connect(nodes.address) as c:
        c.create_collection("p", DIM, "l2", index="flat")
        c.upsert("p", list(range(90)), x)
        c.create_collection("d", DIM, "ip", kind="multivector",
                            index_params={"min_train_tokens": 1_000_000})  # fmt: skip
        c.upsert_documents("d", list(range(60)), docs)
        want = c.search("p", x[:4], k=90)
        want_docs = c.search_documents("d", queries, k=60)
    assert {shard_of(i, 3) for i in want.ids[0].tolist()} == {0, 1, 2}
    lagging = router_server(MemoryCatalog(nodes.addresses), nodes.addresses)
    try:
        with vecdb.connect(f"127.0.0.1:{lagging.port}") as late:
            got = late.search("p", x[:4], k=90)
            assert got.ids.tolist() == want.ids.tolist()
            assert late.count("p") == 90
            got_docs = late.search_documents("d", queries, k=60)
            assert got_docs.ids.tolist() == want_docs.ids.tolist()
            with pytest.raises(vecdb.NotFound):
                late.search("nowhere", x[:1], k=3)
            with pytest.raises(vecdb.NotFound):
                late.search_documents("nowhere", queries[0], k=3)
    finally:
        lagging.stop(grace=0.2)


def test_a_component_float16_cannot_hold_is_refused_whole_by_the_router(nodes: Nodes) -> None:
    """An l2 SPANN collection (float16 postings by default): a batch spanning the shards
    with one 1e6 component is refused as a node refuses it, naming the caller's row, and no
    shard stores any of it."""
    x = np.random.default_rng(7).standard_normal((60, DIM)).astype(np.float32)
    x[41, 2] = 1e6
    with vecdb.connect(nodes.address) as c:
        c.create_collection("h", DIM, "l2", index="spann")
        with pytest.raises(vecdb.InvalidArgument) as info:
            c.upsert("h", list(range(60)), x)
        assert info.value.field == "vectors[41][2]" and info.value.reason == "TOO_LARGE"
        assert "vector_dtype" in info.value.message
        assert [n._db.count("h") for n in nodes.nodes] == [0, 0, 0]
        with pytest.raises(vecdb.InvalidArgument) as info:
            c.upsert("h", list(range(60)), x[:59])
        assert info.value.field == "vectors"


def test_the_router_checks_component_range_as_the_nodes_index_will() -> None:
    """The router refuses components beyond float16's range exactly when the nodes' index
    stores float16 rows: float16 postings (the default below 256 dimensions) or a float16
    rerank store (bits, the default from 256), not float32 postings or a float32 store."""
    from vecdb.cluster.router_points import max_abs_component
    from vecdb.index.params import MAX_FLOAT16

    assert max_abs_component({"dim": 50, "index": "spann"}) == MAX_FLOAT16
    assert max_abs_component({"dim": 384, "index": "spann"}) == MAX_FLOAT16
    bits = {"vector_dtype": "bits"}  # its store's rows: float16 unless asked otherwise
    assert max_abs_component({"dim": 128, "index": "spann", "index_params": bits}) == MAX_FLOAT16
    bits32 = {"vector_dtype": "bits", "rerank": "float32"}
    assert max_abs_component({"dim": 384, "index": "spann", "index_params": bits32}) is None
    f32 = {"vector_dtype": "float32"}
    assert max_abs_component({"dim": 384, "index": "spann", "index_params": f32}) is None
    assert max_abs_component({"dim": 384, "index": "flat"}) is None


def test_long_admin_calls_get_no_default_deadline(tmp_path: Path) -> None:
    """A client that sets no deadline: Optimize (waiting) and CreateSnapshot through a router
    whose default_deadline_s is tiny still succeed (the shards get no deadline either)."""
    import grpc

    from vecdb.rpc.v1 import vecdb_pb2 as pb
    from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

    cl = Nodes(tmp_path, None, deadline_s=0.01)
    try:
        x = np.random.default_rng(8).standard_normal((3000, DIM)).astype(np.float32)
        with vecdb.connect(cl.address, timeout=60) as c:
            c.create_collection("o", DIM, "l2", index="spann")
            c.upsert("o", list(range(3000)), x)
        with grpc.insecure_channel(cl.address) as ch:
            stub = pb_grpc.VectorDBStub(ch)  # type: ignore[no-untyped-call]
            stub.Optimize(pb.OptimizeRequest(collection="o"))
            snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(collection="o")).snapshot
        assert snap.name.count("+") == 2
        assert all(n._db.get_collection("o").buffered == 0 for n in cl.nodes)
    finally:
        cl.stop()


def refuse_on(monkeypatch: pytest.MonkeyPatch, method: str, shard: int) -> Any:
    """Make the router's `method` calls fail on `shard` with an error of the shard's own
    (FailedPrecondition, reason INJECTED) while the other shards answer; returns the real
    `ShardSet.fan_out` to put back."""
    from vecdb.cluster.shards import ShardSet
    from vecdb.errors import FailedPrecondition

    real = ShardSet.fan_out

    def refusing(self: ShardSet, called: str, reqs: Any, *args: Any, **kw: Any) -> Any:
        if called != method or shard not in reqs:
            return real(self, called, reqs, *args, **kw)
        out = real(self, called, {s: r for s, r in reqs.items() if s != shard}, *args, **kw)
        out.errors[shard] = FailedPrecondition("injected", reason="INJECTED")
        return out

    monkeypatch.setattr(ShardSet, "fan_out", refusing)
    return real


def test_drop_tenant_with_a_shard_failing_keeps_it_in_the_catalog(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acme is present on globex's home too (points granted to it there). When that shard
    refuses the drop (an error of its own) or is stopped, DropTenant fails naming it and the
    catalog keeps acme (its grants are not left behind on a shard the catalog forgot); once
    the shard is back, the retry drops it everywhere."""
    from vecdb.cluster.shards import ShardSet

    x = np.random.default_rng(9).standard_normal((4, DIM)).astype(np.float32)
    with vecdb.connect(nodes.address, timeout=1.5) as c:
        c.create_collection("m", DIM, "l2", index="flat", multi_tenant=True)
        c.create_tenant("m", "acme")
        c.create_tenant("m", "globex")
        c.upsert("m", [1, 2, 3, 4], x, tenant="globex", grant_to=["acme"])
        placement = nodes.catalog.state().tenants[("m", "acme")]
        other = nodes.catalog.state().tenants[("m", "globex")].home
        assert other != placement.home and other in placement.shards
        real = refuse_on(monkeypatch, "DropTenant", other)
        with pytest.raises(vecdb.FailedPrecondition) as refused:
            c.drop_tenant("m", "acme")
        assert f"failed on shards {other} ({nodes.addresses[other]})" in refused.value.message
        assert ("m", "acme") in nodes.catalog.state().tenants
        monkeypatch.setattr(ShardSet, "fan_out", real)
        data = nodes.nodes[other].config.server.data
        nodes.nodes[other].stop(grace=0.1)
        with pytest.raises(vecdb.Unavailable) as info:
            c.drop_tenant("m", "acme")
        assert f"shard {other} ({nodes.addresses[other]})" in info.value.message
        assert ("m", "acme") in nodes.catalog.state().tenants
        port = int(nodes.addresses[other].rsplit(":", 1)[1])
        nodes.nodes[other] = VecdbServer(load_config(env={}, overrides={
            "metrics": {"enabled": False}, "server": {"data": data, "port": port}})).start()  # fmt: skip
        # retried (idempotent) until the router reaches the shard again: its channel to the
        # restarted shard reconnects after gRPC's backoff (1 s, then 1.6x), which can outlast
        # the 1.5 s deadline above on a loaded machine (a CI run missed it once)
        with vecdb.connect(nodes.address, timeout=30) as patient:
            assert patient.count("m") == 4
        c.drop_tenant("m", "acme")
        assert ("m", "acme") not in nodes.catalog.state().tenants
        # on no shard as an active tenant: a shard that held acme's grants lists it as
        # "dropping" until its background cleanup ends, then not at all
        states = {t.name: t.state for t in c.list_tenants("m")[0]}
        assert states.pop("acme", "dropping") == "dropping" and states == {"globex": "active"}
        deadline = time.monotonic() + 60
        while "acme" in [t.name for t in c.list_tenants("m")[0]]:
            assert time.monotonic() < deadline, "acme's cleanup did not end in 60 s"
            time.sleep(0.05)


def test_a_failed_id_probe_fails_a_multi_tenant_upsert(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a multi-tenant upsert the router asks the other shards whether they hold its
    ids; a probe that fails (other than NOT_FOUND) fails the upsert, naming the shard, and
    nothing is written."""
    from vecdb.cluster.shards import ShardSet

    x = np.random.default_rng(10).standard_normal((3, DIM)).astype(np.float32)
    with vecdb.connect(nodes.address, timeout=5) as c:
        c.create_collection("q", DIM, "l2", index="flat", multi_tenant=True)
        c.create_tenant("q", "acme")
        home = nodes.catalog.state().tenants[("q", "acme")].home
        other = (home + 1) % 3
        real = refuse_on(monkeypatch, "Get", other)
        with pytest.raises(vecdb.FailedPrecondition) as info:
            c.upsert("q", [1, 2, 3], x, tenant="acme")
        assert f"shard {other} ({nodes.addresses[other]})" in info.value.message
        assert info.value.reason == "INJECTED"
        monkeypatch.setattr(ShardSet, "fan_out", real)
        assert c.count("q") == 0
        assert c.upsert("q", [1, 2, 3], x, tenant="acme") == 3


def test_a_routers_answer_over_its_message_limit_is_refused_clearly_or_asked_in_parts(
    nodes: Nodes,
) -> None:
    """A router with a 1 MiB message limit measures its own answers as a node does: a `get`
    of 60 points of 30 KB payloads comes back (the SDK asks again in halves of the ids), and
    one search whose k x payload cannot fit is RESOURCE_EXHAUSTED ANSWER_TOO_LARGE naming k
    (before: gRPC's bare "Sent message larger than max")."""
    router = router_server(nodes.catalog, nodes.addresses, max_message_bytes=1 << 20)
    try:
        with vecdb.connect(f"127.0.0.1:{router.port}", max_message_bytes=1 << 20) as c:
            c.create_collection("big", DIM, "l2", index="flat")
            x = np.random.default_rng(5).standard_normal((60, DIM)).astype(np.float32)
            c.upsert(
                "big", list(range(60)), x, [{"t": chr(65 + i % 26) * 30_000} for i in range(60)]
            )
            got = c.get("big", list(range(60)))
            assert sorted(r.id for r in got) == list(range(60))
            assert all(r.payload == {"t": chr(65 + r.id % 26) * 30_000} for r in got)
            with pytest.raises(vecdb.ResourceExhausted) as err:
                c.search("big", x[0], k=60, with_payload=True)
            assert err.value.reason == "ANSWER_TOO_LARGE" and err.value.field == "k"
            assert c.count("big") == 60  # the router serves on
    finally:
        router.stop(grace=0.2)
