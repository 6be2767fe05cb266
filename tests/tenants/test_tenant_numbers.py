"""The numbers tenants report: get_tenant's sub-tree nodes (the shared tree's directory),
CollectionInfo.count while a dropped tenant's cleanup waits, and per-call search statistics
(`with_stats`) in every SDK mode and on the wire, where the per-tenant bytes-read metric reads
them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import vecdb
from vecdb.engine import Database
from vecdb.index.tenancy import node_counts
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.metrics import bytes_read_of

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))  # the API tests' three modes
from api_modes import Trio, serve  # noqa: E402

D = 8
COUNTERS = {"queries", "heads_searched", "postings_read", "blocks_read", "pages_read",
            "bytes_read"}  # fmt: skip


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, D)).astype(np.float32) * 4
    return (centers[rng.integers(16, size=n)] + rng.standard_normal((n, D))).astype(np.float32)


def _spann_world(c: Any, n: int = 3000) -> np.ndarray:
    """A built SPANN collection: "big" owns 2/3 of the points, "small" 30 (and sees 5 of
    "mid"'s), "mid" the rest."""
    x = _clustered(n)
    c.create_collection("m", D, "l2", index="spann", multi_tenant=True)
    for t in ("big", "small", "mid"):
        c.create_tenant("m", t)
    cut = 2 * n // 3
    c.upsert("m", list(range(cut)), x[:cut], tenant="big")
    c.upsert("m", list(range(cut, cut + 30)), x[cut : cut + 30], tenant="small")
    lo = cut + 30
    c.upsert("m", list(range(lo, lo + 5)), x[lo : lo + 5], tenant="mid", grant_to=["small"])
    c.upsert("m", list(range(lo + 5, n)), x[lo + 5 :], tenant="mid")
    c.optimize("m")
    return x


def test_get_tenant_nodes_is_the_size_of_its_subtree(tmp_path: Path) -> None:
    """nodes = the tenant's leaves and their ancestors in the shared tree (node_counts over
    exactly its visible slots); 0 on a flat index."""
    db = Database(tmp_path / "db", sync=False)
    try:
        _spann_world(db)
        core = db.collections["m"].core
        st = core.index.state  # type: ignore[attr-defined]
        for t in ("big", "small", "mid"):
            info = db.get_tenant("m", t)
            slots = core.tenants.slots_of([core.tenants.by_name[t].no])
            with st.lock.read():
                want = len(node_counts(st.tree, slots)[0])
            assert info.nodes == want > 0, (t, info.nodes, want)
        big, small = db.get_tenant("m", "big").nodes, db.get_tenant("m", "small").nodes
        assert big > small  # a tenant spread over the tree has the larger sub-tree
        assert [i.nodes for i in db.list_tenants("m")[0]] == [
            db.get_tenant("m", t).nodes for t in ("big", "mid", "small")
        ]
        db.create_collection("f", D, "l2", index="flat", multi_tenant=True)
        db.create_tenant("f", "a")
        db.upsert("f", [1, 2], _clustered(2), tenant="a")
        assert db.get_tenant("f", "a").nodes == 0
    finally:
        db.close()


def test_collection_count_hides_a_dropped_tenants_points_until_cleanup(tmp_path: Path) -> None:
    """get_collection().count equals count() while the cleanup waits, and after it."""
    db = Database(tmp_path / "db", sync=False)
    try:
        db.create_collection("m", D, "l2", index="flat", multi_tenant=True)
        for t in ("a", "b"):
            db.create_tenant("m", t)
        x = _clustered(30)
        db.upsert("m", list(range(20)), x[:20], tenant="a", grant_to=["b"])
        db.upsert("m", list(range(20, 30)), x[20:], tenant="b")
        db.worker.job_lock.acquire()  # the cleanup waits for the worker
        try:
            db.drop_tenant("m", "a")
            assert db.get_tenant("m", "a").state == "dropping"
            assert db.count("m") == 10
            assert db.get_collection("m").count == 10
            assert [c.count for c in db.list_collections() if c.name == "m"] == [10]
        finally:
            db.worker.job_lock.release()
        db.optimize("m")
        assert db.get_collection("m").count == db.count("m") == 10
    finally:
        db.close()


def test_counts_never_dip_while_a_drop_is_cleaned_up(tmp_path: Path) -> None:
    """While the worker deletes a dropped tenant's points, read from another thread, count(),
    get_collection().count and stats() stay at the others' points: the cleanup took the
    live count down before the hidden set (get_collection().count read 0-94 of 100), and
    stats() could fail iterating the registry as the drop ended (RuntimeError)."""
    rng = np.random.default_rng(0)
    seen: set[int] = set()
    for kind in ("flat", "multivector"):
        db = Database(tmp_path / f"db-{kind}", sync=False)
        try:
            if kind == "flat":
                db.create_collection("d", 8, "l2", index="flat", multi_tenant=True)
            else:
                db.create_collection("d", 8, "cosine", kind="multivector", multi_tenant=True)
            for t in ("a", "b"):
                db.create_tenant("d", t)
            x = rng.standard_normal((2100, 8)).astype(np.float32)
            if kind == "flat":
                db.upsert("d", list(range(100)), x[:100], tenant="a")
                db.upsert("d", list(range(100, 2100)), x[100:], tenant="b")
            else:
                docs = [x[i : i + 1] for i in range(2100)]
                db.upsert_documents("d", list(range(100)), docs[:100], tenant="a")
                db.upsert_documents("d", list(range(100, 2100)), docs[100:], tenant="b")
            db.drop_tenant("d", "b")  # 2,000 points: deleted by the worker in slices
            while db.stats("d")["tenants"]["dropping"]:
                seen |= {db.count("d"), db.get_collection("d").count}
            seen |= {db.count("d"), db.get_collection("d").count}
        finally:
            db.close()
    assert seen == {100}


def _two_tenants(db: Database, kind: str) -> None:
    """Tenant a owns ids 0..29, b ids 100..109 (dense flat, or documents of 3 tokens)."""
    rng = np.random.default_rng(0)
    if kind == "dense":
        db.create_collection("c", 8, "l2", index="flat", multi_tenant=True)
    else:
        db.create_collection("c", 8, "cosine", kind="multivector", multi_tenant=True)
    for t, ids in (("a", list(range(30))), ("b", list(range(100, 110)))):
        db.create_tenant("c", t)
        if kind == "dense":
            db.upsert("c", ids, rng.standard_normal((len(ids), 8)).astype(np.float32), tenant=t)
        else:
            docs = [rng.standard_normal((3, 8)).astype(np.float32) for _ in ids]
            db.upsert_documents("c", ids, docs, tenant=t)


@pytest.mark.parametrize("kind", ["dense", "documents"])
def test_global_reads_at_each_step_of_a_drop_cleanup(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Global reads forced into each step of a dropped tenant's cleanup see exactly the
    other tenant's points: a count between the points' table and the tenant sets (it read
    20 of 30), a search between those and the index's removal (it returned fewer than k: the
    deleted points, no longer hidden, won and were dropped), a scroll whose RocksDB view was
    taken before a cleanup slice that applied before the scroll tested it (the dropped
    owner's points came back)."""
    from vecdb.engine import reader, tenant_access, tenant_jobs

    a_ids = list(range(30))
    q = np.ones((1, 8), np.float32)

    def search(db: Database) -> list[int]:
        got = db.search("c", q[0], k=10) if kind == "dense" else db.search_documents("c", q, k=10)
        return [int(i) for i in got.ids[0]]

    with Database(tmp_path / "a", sync=False) as db:  # counts and searches, in the cleanup
        _two_tenants(db, kind)
        counts: list[int] = []
        rows: list[list[int]] = []
        removed, index = tenant_access.apply_removed, db.collections["c"].core.index
        remove = index.remove

        def spy_removed(coll: Any, acls: Any) -> None:
            counts.extend([db.get_collection("c").count, db.count("c")])
            removed(coll, acls)

        def spy_remove(slots: Any) -> None:
            rows.append(search(db))
            remove(slots)

        monkeypatch.setattr(tenant_access, "apply_removed", spy_removed)
        monkeypatch.setattr(index, "remove", spy_remove)
        db.drop_tenant("c", "b")
        db.optimize("c")  # waits for the cleanup
        monkeypatch.undo()
        assert counts and set(counts) == {30}
        assert rows and all(len(r) == 10 and set(r) <= set(a_ids) for r in rows), rows
    with Database(tmp_path / "b", sync=False) as db:  # a scroll straddling a slice
        _two_tenants(db, kind)
        core = db.collections["c"].core
        test = reader._scroll_test

        def late_test(*args: Any) -> Any:
            monkeypatch.setattr(reader, "_scroll_test", test)
            tenant_jobs.drop_slice(core)  # commits and applies after the page's view was taken
            return test(*args)

        db.worker.job_lock.acquire()  # the worker waits: the slice runs where the hook says
        try:
            db.drop_tenant("c", "b")
            monkeypatch.setattr(reader, "_scroll_test", late_test)
            assert [r.id for r in db.scroll("c", limit=1000)[0]] == a_ids
        finally:
            db.worker.job_lock.release()
        assert [r.id for r in db.scroll("c", limit=1000)[0]] == a_ids


def stats_scenario(c: Any) -> list[Any]:
    """Searches with and without stats over a flat multi-tenant collection (deterministic)."""
    x = _clustered(40, seed=3)
    c.create_collection("s", D, "l2", index="flat", multi_tenant=True)
    for t in ("a", "b"):
        c.create_tenant("s", t)
    c.upsert("s", list(range(30)), x[:30], tenant="a")
    c.upsert("s", list(range(30, 40)), x[30:], tenant="b", grant_to=["a"])
    out: list[Any] = []
    for kwargs in ({"tenant": "a"}, {"tenants": ["a", "b"]}, {}):
        res = c.search("s", x[:3], k=4, with_stats=True, **kwargs)
        out.append((res.ids.tolist(), res.stats))
    out.append(c.search("s", x[:3], k=4, tenant="b").stats)
    return out


def test_search_stats_are_the_same_in_every_mode(tmp_path: Path) -> None:
    """with_stats fills SearchResult.stats identically embedded, remote and async (None
    without it), with the index's counters as integers."""
    trio = Trio(tmp_path)
    try:
        got = trio.run(stats_scenario)
    finally:
        trio.close()
    assert got["remote"] == got["local"]
    assert got["aio"] == got["local"]
    local = got["local"]
    assert local[-1] is None
    for _, stats in local[:-1]:
        assert COUNTERS <= set(stats) and stats["queries"] == 3
        assert all(isinstance(stats[k], int) for k in COUNTERS)


def test_tenant_walk_stats_reach_the_sdk_and_the_wire(tmp_path: Path) -> None:
    """On SPANN a tenant's search reports its path (tenant_copy for a small set, the sub-tree
        walk's tenant_nodes / tenant_leaves, the clustered copy's tenant_clusters or the global walk
    for a large one) and what it read;
        the server sends the stats in every response (asked or not), so the per-tenant bytes-read
        metric sees them, while the SDK shows them only when asked."""
    srv = serve(tmp_path / "srv")
    try:
        target = f"127.0.0.1:{srv.port}"
        with vecdb.connect(target, timeout=120) as c:
            x = _spann_world(c)
            small = c.search("m", x[:4], k=5, tenant="small", with_stats=True).stats
            assert small is not None and small["tenant_copy"] == 4
            mid = c.search("m", x[:4], k=5, tenant="mid", with_stats=True,
                           params={"tenant_copy": 0}).stats  # fmt: skip
            assert mid is not None and mid["queries"] == 4 and mid["postings_read"] > 0
            assert mid["bytes_read"] > 0
            # the sub-tree walk, the global walk, or the set's clustered copy (its blocks
            # are the postings read)
            assert (mid.get("tenant_nodes", 0) > 0 or mid["heads_searched"] > 0
                    or mid.get("tenant_clusters", 0) == 4)  # fmt: skip
            assert c.search("m", x[:4], k=5, tenant="mid").stats is None
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.VectorDBStub(ch)
            req = pb.SearchRequest(
                collection="m", queries=convert.matrix_to_proto(x[:2]), tenant="big",
                options=pb.SearchOptions(k=5),
            )  # fmt: skip
            for params in ("", '{"tenant_copy": 0}'):  # the copy made, then the index walk
                req.options.params = params
                resp = stub.Search(req, timeout=60)
                assert resp.stats.queries == 2
                assert bytes_read_of(resp) == resp.stats.bytes_read > 0
    finally:
        srv.stop(0)
