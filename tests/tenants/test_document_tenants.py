"""Multi-tenant document collections (kind="multivector", multi_tenant=True), embedded: a
document's owner and grants, tenant-scoped search / get / count / scroll / delete, the union of
several tenants, filters inside a tenant, quotas, a drop, and the access rows across a reopen
and an unclean stop. Searches are checked against exact MaxSim over the tenant's own
documents, before and after the codebook is trained."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracles import clustered_documents, clustered_queries, maxsim_recall

import vecdb
from vecdb.engine import Database

DIM = 16
DOCS = clustered_documents(400, DIM, seed=21, tokens=(4, 16))
QUERIES = clustered_queries(DOCS, 8, m=5, seed=22)
TENANTS = ("a", "b", "c")
# owner of document i, and the tenants it is also granted to
OWNER = [TENANTS[i % 3] for i in range(len(DOCS))]
GRANTS = {i: ["c"] for i in range(0, len(DOCS), 7) if OWNER[i] != "c"}
EXACT = {"rerank": "exact", "ndocs": 4096}


def _sees(tenants: set[str]) -> list[int]:
    return [i for i in range(len(DOCS)) if OWNER[i] in tenants or set(GRANTS.get(i, ())) & tenants]


def _load(db: Database, name: str = "p", **kw: Any) -> None:
    db.create_collection(name, DIM, "cosine", kind="multivector", multi_tenant=True, **kw)
    for t in TENANTS:
        db.create_tenant(name, t)
    for t in TENANTS:  # each tenant's documents, those granted to "c" apart
        own = [i for i in range(len(DOCS)) if OWNER[i] == t]
        plain = [i for i in own if i not in GRANTS]
        shared = [i for i in own if i in GRANTS]
        db.upsert_documents(name, plain, [DOCS[i] for i in plain], tenant=t,
                            payloads=[{"n": i} for i in plain])  # fmt: skip
        if shared:
            db.upsert_documents(name, shared, [DOCS[i] for i in shared], tenant=t,
                                payloads=[{"n": i} for i in shared], grant_to=["c"])  # fmt: skip


def _recall(ids: np.ndarray, allowed: list[int], k: int = 10) -> float:
    """Mean recall@k of each row of `ids` against exact MaxSim over the `allowed` documents."""
    pos = {d: j for j, d in enumerate(allowed)}
    sub = [DOCS[d] for d in allowed]
    out = []
    for row, q in zip(ids, QUERIES, strict=True):
        out.append(maxsim_recall([pos[int(d)] for d in row if d >= 0], q, sub, k))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("doc-tenants") / "db"
    with Database(path, settings={"idle_seconds": 3600}) as db:
        _load(db, index_params={"min_train_tokens": 1_000_000})  # exact: never trained
        _load(db, "trained", index_params={"K": 64})
        db.optimize("trained")
        yield db


@pytest.mark.parametrize("scope", [("a",), ("b",), ("c",), ("a", "b"), ("a", "b", "c")])
@pytest.mark.parametrize("name", ["p", "trained"])
@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_a_tenants_search_returns_only_what_it_sees_ranked_by_maxsim(
    db: Database, name: str, scope: tuple[str, ...]
) -> None:
    """Every answer is one of the scope's documents; untrained it is the exact top-10 of
    the scope, trained at least 0.9 of it (rerank exact)."""
    kw: dict[str, Any] = {"tenant": scope[0]} if len(scope) == 1 else {"tenants": list(scope)}
    res = db.search_documents(name, QUERIES, k=10, params=EXACT, **kw)
    allowed = _sees(set(scope))
    assert set(res.ids[res.ids >= 0].tolist()) <= set(allowed)
    assert (res.ids >= 0).all()  # every scope holds more than 10 documents
    rec = _recall(res.ids, allowed)
    if name == "p":
        assert res.stats["exact"] == 1.0 and rec == 1.0
    else:
        assert res.stats["exact"] == 0.0 and rec >= 0.9


def test_reads_and_deletes_within_a_tenant(tmp_path: Path) -> None:
    """get_documents, count, scroll and delete see only the tenant's documents (owned or
    granted); a tenant may delete only documents it owns; grant and revoke move a
    document in and out of a tenant's searches."""
    with Database(tmp_path / "db") as db:
        _load(db)
        b_sees = _sees({"b"})
        assert db.count("p", tenant="b") == len(b_sees)
        assert db.count("p", tenant="c") == len(_sees({"c"}))
        assert db.count("p", filter={"n": {"$lt": 30}}, tenant="a") == len(
            [i for i in _sees({"a"}) if i < 30]
        )
        got = db.get_documents("p", [0, 1, 2, 7], tenant="b")  # b owns 1 and 7
        assert [d.id for d in got] == [1, 7]
        np.testing.assert_array_equal(got[0].tokens, DOCS[got[0].id])
        records, _ = db.scroll("p", limit=1000, tenant="b")
        assert sorted(r.id for r in records) == b_sees
        shared = min(i for i in GRANTS if OWNER[i] == "a")
        with pytest.raises(vecdb.PermissionDenied):  # granted to c, owned by a
            db.delete("p", [shared], tenant="c")
        assert db.count("p") == len(DOCS)
        q = DOCS[shared][:4]
        assert db.search_documents("p", q, k=1, tenant="c").ids[0, 0] == shared
        assert db.revoke("p", [shared], tenant="c") == 1
        assert shared not in db.search_documents("p", q, k=10, tenant="c").ids[0]
        assert db.grant("p", [shared], tenant="b") == 1
        assert db.search_documents("p", q, k=1, tenant="b").ids[0, 0] == shared
        assert db.delete("p", [shared], tenant="a") == 1
        assert db.get_documents("p", [shared]) == []
        assert db.count("p", tenant="b") == len(b_sees)  # its grant went with the document


def test_filters_apply_inside_the_tenant(db: Database) -> None:
    flt = {"n": {"$gte": 200}}
    res = db.search_documents("p", QUERIES, k=10, filter=flt, tenant="b", params=EXACT)
    allowed = [i for i in _sees({"b"}) if i >= 200]
    assert set(res.ids[res.ids >= 0].tolist()) <= set(allowed)
    assert _recall(res.ids, allowed) == 1.0


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda db: db.upsert_documents("p", [1000], DOCS[:1]), vecdb.InvalidArgument, "tenant"),
        (lambda db: db.upsert_documents("p", [1000], DOCS[:1], tenant="zz"), vecdb.NotFound,
         "tenant"),
        (lambda db: db.upsert_documents("p", [0, 1], DOCS[:2], tenant="b"),
         vecdb.PermissionDenied, "ids[0]"),  # document 0 is a's
        (lambda db: db.upsert_documents("p", [1000], DOCS[:1], tenant="a", grant_to=["a"]),
         vecdb.InvalidArgument, "grant_to[0]"),
        (lambda db: db.upsert_documents("p", [1000], DOCS[:1], tenant="a", grant_to=["zz"]),
         vecdb.NotFound, "grant_to[0]"),
        (lambda db: db.search_documents("p", DOCS[0], tenant="zz"), vecdb.NotFound, "tenant"),
        (lambda db: db.search_documents("p", DOCS[0], tenant="a", tenants=["b"]),
         vecdb.InvalidArgument, "tenants"),
        (lambda db: db.get_documents("p", [0], tenant="zz"), vecdb.NotFound, "tenant"),
        (lambda db: db.create_tenant("p", "d", max_bytes=1 << 20), vecdb.InvalidArgument,
         "max_bytes"),
        (lambda db: db.update_tenant("p", "a", max_bytes=1 << 20), vecdb.InvalidArgument,
         "max_bytes"),
        (lambda db: db.search_documents("plain", DOCS[0], tenant="a"), vecdb.InvalidArgument,
         "tenant"),
        (lambda db: db.upsert_documents("plain", [0], DOCS[:1], tenant="a"),
         vecdb.InvalidArgument, "tenant"),
    ],
)  # fmt: skip
def test_bad_tenant_arguments_are_refused_and_change_nothing(
    db: Database, call: Any, error: type[vecdb.VecdbError], field: str
) -> None:
    if "plain" not in db.collections:
        db.create_collection("plain", DIM, "cosine", kind="multivector")
    before = (db.count("p"), db.count("p", tenant="a"), db.count("p", tenant="b"))
    with pytest.raises(error) as e:
        call(db)
    assert e.value.field == field
    assert (db.count("p"), db.count("p", tenant="a"), db.count("p", tenant="b")) == before
    np.testing.assert_array_equal(db.get_documents("p", [0])[0].tokens, DOCS[0])


def test_max_vectors_counts_documents(tmp_path: Path) -> None:
    """A tenant's max_vectors bounds the documents it owns or was granted; bytes are not
    counted for documents (0)."""
    with Database(tmp_path / "db") as db:
        db.create_collection("p", DIM, kind="multivector", multi_tenant=True)
        db.create_tenant("p", "a", max_vectors=3)
        db.create_tenant("p", "b")
        db.upsert_documents("p", [1, 2], DOCS[:2], tenant="a")
        with pytest.raises(vecdb.ResourceExhausted) as e:
            db.upsert_documents("p", [3, 4], DOCS[2:4], tenant="a")
        assert e.value.reason == "TENANT_VECTOR_QUOTA"
        db.upsert_documents("p", [5], DOCS[4:5], tenant="b", grant_to=["a"])  # a: 3 of 3
        db.upsert_documents("p", [6], DOCS[5:6], tenant="b")
        with pytest.raises(vecdb.ResourceExhausted):
            db.grant("p", [6], tenant="a")
        with pytest.raises(vecdb.ResourceExhausted):
            db.upsert_documents("p", [7], DOCS[6:7], tenant="b", grant_to=["a"])
        assert db.count("p") == 4
        info = db.get_tenant("p", "a")
        assert (info.vectors, info.owned, info.bytes) == (3, 2, 0)


def test_a_dropped_tenants_documents_vanish_at_once_and_are_deleted(tmp_path: Path) -> None:
    with Database(tmp_path / "db", settings={"idle_seconds": 0.05}) as db:
        _load(db)
        db.drop_tenant("p", "b")
        res = db.search_documents("p", QUERIES, k=400, params=EXACT)
        assert not {i for i in res.ids[res.ids >= 0].tolist() if OWNER[i] == "b"}
        end = time.monotonic() + 60
        while [t.name for t in db.list_tenants("p")[0]] != ["a", "c"]:
            assert time.monotonic() < end, "the drop's cleanup did not finish"
            time.sleep(0.05)
        assert db.count("p") == len(DOCS) - OWNER.count("b")
        assert db.get_documents("p", [i for i in range(len(DOCS)) if OWNER[i] == "b"]) == []


def test_owners_and_grants_survive_a_reopen_and_an_unclean_stop(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path, settings={"idle_seconds": 3600})
    _load(db, index_params={"K": 64})
    db.optimize("p")  # trained + checkpointed; the writes below are only in RocksDB
    db.upsert_documents("p", [1000], DOCS[:1], tenant="b", grant_to=["a"])
    assert db.revoke("p", [0], tenant="c") == 1  # document 0 is a's, granted to c
    want = {t: db.search_documents("p", QUERIES, k=10, tenant=t, params=EXACT).ids
            for t in TENANTS}  # fmt: skip
    db.worker.stop()
    db.kv.close()
    db._lock.release()
    with Database(path) as db2:
        for t in TENANTS:
            got = db2.search_documents("p", QUERIES, k=10, tenant=t, params=EXACT).ids
            np.testing.assert_array_equal(got, want[t])
        assert [d.id for d in db2.get_documents("p", [1000, 0], tenant="a")] == [1000, 0]
        assert db2.get_documents("p", [0], tenant="c") == []
        assert db2.get_tenant("p", "b").owned == OWNER.count("b") + 1


def test_a_snapshot_restores_owners_and_grants(tmp_path: Path) -> None:
    """Writes after a snapshot (a revoke, a new shared document, a dropped tenant) are gone
    once it is restored: each tenant sees exactly what it saw when it was taken."""
    with Database(tmp_path / "db", settings={"idle_seconds": 0.05}) as db:
        _load(db, index_params={"K": 64})
        db.optimize("p")
        before = {t: db.search_documents("p", QUERIES, k=10, tenant=t, params=EXACT).ids
                  for t in TENANTS}  # fmt: skip
        snap = db.create_snapshot("p")
        assert db.revoke("p", [0], tenant="c") == 1
        db.upsert_documents("p", [1000], DOCS[:1], tenant="a", grant_to=["b"])
        db.drop_tenant("p", "b")
        db.restore_snapshot("p", snap.name)
        assert [t.name for t in db.list_tenants("p")[0]] == list(TENANTS)
        for t in TENANTS:
            got = db.search_documents("p", QUERIES, k=10, tenant=t, params=EXACT).ids
            np.testing.assert_array_equal(got, before[t])
            assert db.count("p", tenant=t) == len(_sees({t}))
        assert db.get_documents("p", [1000]) == []
        assert [d.id for d in db.get_documents("p", [0], tenant="c")] == [0]
