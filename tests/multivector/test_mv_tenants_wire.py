"""Multi-tenant document collections on the wire: the SDK's request builders fill the tenant
fields, the servicer hands them to the engine as the dense RPCs do, a tenant-scoped API key
governs the document RPCs. End to end (engine included): a tenant's document calls see only
its own and granted documents, the same embedded, remote, async and through a router over two
shards (documents on their owner's home shard).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecdb
from vecdb.client import requests as rq
from vecdb.client.documents import (
    get_documents_request,
    search_documents_request,
    upsert_documents_request,
)
from vecdb.cluster.catalog import MemoryCatalog
from vecdb.cluster.router import collection_spec
from vecdb.engine import Database
from vecdb.server.app import VecdbServer
from vecdb.types import CollectionInfo, CollectionKind, Metric, SearchResult

TESTS = Path(__file__).resolve().parents[1]
for _helpers in ("api", "server", "cluster"):
    sys.path.insert(0, str(TESTS / _helpers))
from api_modes import Trio, outcome  # noqa: E402
from cluster_procs import router_server  # noqa: E402
from wire_helpers import server_config  # noqa: E402

DIM = 8
_RNG = np.random.default_rng(11)
DOCS = [_RNG.standard_normal((int(n), DIM)).astype(np.float32) for n in (3, 5, 4, 6, 2)]
QUERY = _RNG.standard_normal((3, DIM)).astype(np.float32)
ADMIN = "mv-admin-key-00000001"
A_KEY = "mv-tenant-a-writer-01"  # write, bound to tenant a
AUTH = {"admin_key": ADMIN, "keys": [{"key": A_KEY, "role": "write", "tenants": ["a"]}]}
TENANT_KWARGS = ("tenant", "tenants", "grant_to")


def _no_info() -> CollectionInfo:
    raise AssertionError("these inputs travel as given: no collection lookup")


def _hits(res: SearchResult) -> list[list[int]]:
    return [sorted(int(i) for i in row if i >= 0) for row in res.ids]


# -- request builders ----------------------------------------------------------------------


def test_upsert_documents_request_carries_owner_and_grantees() -> None:
    """tenant and grant_to land in UpsertDocumentsRequest.tenant / grant_to; absent, empty."""
    req = upsert_documents_request("c", [1], DOCS[:1], None, None, _no_info, "a", ["b", "c"])
    assert req.tenant == "a" and list(req.grant_to) == ["b", "c"]
    plain = upsert_documents_request("c", [1], DOCS[:1], None, None, _no_info)
    assert plain.tenant == "" and list(plain.grant_to) == []
    assert list(upsert_documents_request("c", [1], DOCS[:1], None, None, _no_info, "a",
                                         []).grant_to) == []  # fmt: skip


def test_search_documents_request_carries_tenant_or_tenants() -> None:
    """tenant lands in SearchDocumentsRequest.tenant, tenants in .tenants; absent, empty."""
    one = search_documents_request("c", QUERY, 5, None, None, False, _no_info, "a", None)
    assert one.tenant == "a" and list(one.tenants) == []
    union = search_documents_request("c", QUERY, 5, None, None, False, _no_info, None,
                                     ["a", "b"])  # fmt: skip
    assert union.tenant == "" and list(union.tenants) == ["a", "b"]
    plain = search_documents_request("c", QUERY, 5, None, None, False, _no_info)
    assert plain.tenant == "" and list(plain.tenants) == []


def test_get_documents_request_carries_tenant() -> None:
    """tenant lands in GetDocumentsRequest.tenant; absent, empty."""
    assert get_documents_request("c", [1, 3], True, True, "b").tenant == "b"
    assert get_documents_request("c", [1, 3], True, True).tenant == ""


def _mt_docs() -> CollectionInfo:
    return CollectionInfo("c", DOCS[0].shape[1], Metric.COSINE, CollectionKind.MULTIVECTOR,
                          multi_tenant=True)  # fmt: skip


def test_tenant_values_the_wire_cannot_carry_are_refused_before_sending() -> None:
    """An empty tenant name (empty on the wire means none) and an empty tenants list are
    InvalidArgument naming the field, by the engine's tenant rules (an upsert's owner after
    the collection's mode, which the engine judges first: the client asks for it)."""
    cases: dict[str, Callable[[], object]] = {
        "tenant": lambda: upsert_documents_request("c", [1], DOCS[:1], None, None, _mt_docs, ""),
        "tenants": lambda: search_documents_request(
            "c", QUERY, 5, None, None, False, _no_info, None, []
        ),
    }
    for field, case in cases.items():
        with pytest.raises(vecdb.InvalidArgument) as info:
            case()
        assert info.value.field == field
    with pytest.raises(vecdb.InvalidArgument) as got:
        get_documents_request("c", [1], True, True, "")
    assert got.value.field == "tenant"


# -- servicer and API keys, over a recording engine ----------------------------------------


class RecordingDb:
    """A real `Database` whose document calls record the tenant keywords they get and answer
    empty: what the servicer (after the auth layer) hands the engine, without its rules."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, call: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((call, {k: v for k, v in kwargs.items() if k in TENANT_KWARGS}))

    def upsert_documents(self, name: str, ids: Any, *args: Any, **kwargs: Any) -> int:
        self._record("upsert_documents", kwargs)
        return len(ids)

    def search_documents(self, name: str, query: Any, k: int = 10, **kwargs: Any) -> Any:
        self._record("search_documents", kwargs)
        return SearchResult(ids=np.full((1, 1), -1, np.int64),
                            distances=np.full((1, 1), np.inf, np.float32), stats={})  # fmt: skip

    def get_documents(self, name: str, ids: Any, **kwargs: Any) -> list[Any]:
        self._record("get_documents", kwargs)
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


class Recorded:
    """A server over a `RecordingDb`, with API keys (`AUTH`)."""

    def __init__(self, root: Path) -> None:
        self.rec = RecordingDb(Database(root / "db"))
        cfg = server_config(root / "db", auth=AUTH)
        self.server = VecdbServer(cfg, db=self.rec).start()  # type: ignore[arg-type]
        self.target = f"127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.stop(grace=0)
        self.rec.db.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    r = Recorded(tmp_path_factory.mktemp("recorded"))
    yield r
    r.close()


def _with_client(target: str, key: str, mode: str, calls: Callable[[Any], Any]) -> Any:
    """`calls(client)` with a remote (mode "remote") or async client (mode "aio": each
    method awaited) of `target` holding `key`."""
    if mode == "remote":
        with vecdb.connect(target, api_key=key, timeout=20) as c:
            return calls(c)

    class Awaited:
        def __init__(self, client: vecdb.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
            self._client, self._loop = client, loop

        def __getattr__(self, name: str) -> Any:
            method = getattr(self._client, name)
            return lambda *a, **kw: self._loop.run_until_complete(method(*a, **kw))

    loop = asyncio.new_event_loop()
    try:
        client = loop.run_until_complete(_aio_client(target, key))
        try:
            return calls(Awaited(client, loop))
        finally:
            loop.run_until_complete(client.close())
    finally:
        loop.close()


async def _aio_client(target: str, key: str) -> vecdb.AsyncClient:
    return vecdb.AsyncClient(target, api_key=key, timeout=20)


@pytest.mark.parametrize("mode", ["remote", "aio"])
def test_document_rpcs_hand_the_tenant_block_to_the_engine(recorded: Recorded, mode: str) -> None:
    """tenant, grant_to and tenants reach the engine's document calls as given; a request
    naming none passes no tenant keyword (an empty field is "none", as for dense calls)."""

    def calls(c: Any) -> None:
        c.upsert_documents("docs", [1], DOCS[:1], tenant="a", grant_to=["b", "c"])
        c.upsert_documents("docs", [1], DOCS[:1], tenant="a")
        c.upsert_documents("docs", [1], DOCS[:1])
        c.search_documents("docs", QUERY, k=3, tenant="a")
        c.search_documents("docs", QUERY, k=3, tenants=["a", "b"])
        c.search_documents("docs", QUERY, k=3)
        c.get_documents("docs", [1, 3], tenant="b")
        c.get_documents("docs", [1, 3])

    recorded.rec.calls.clear()
    _with_client(recorded.target, ADMIN, mode, calls)
    assert recorded.rec.calls == [
        ("upsert_documents", {"tenant": "a", "grant_to": ["b", "c"]}),
        ("upsert_documents", {"tenant": "a"}),
        ("upsert_documents", {}),
        ("search_documents", {"tenant": "a"}),
        ("search_documents", {"tenants": ["a", "b"]}),
        ("search_documents", {}),
        ("get_documents", {"tenant": "b"}),
        ("get_documents", {}),
    ]


@pytest.mark.parametrize("mode", ["remote", "aio"])
def test_tenant_scoped_key_governs_the_document_rpcs(recorded: Recorded, mode: str) -> None:
    """A key bound to tenant a: naming tenant b anywhere (tenant, tenants[], grant_to[]) in
    UpsertDocuments, SearchDocuments or GetDocuments is PERMISSION_DENIED before the engine
    sees it; naming none acts as a."""
    denied: dict[str, Callable[[Any], object]] = {
        "search tenant": lambda c: c.search_documents("docs", QUERY, k=3, tenant="b"),
        "search tenants": lambda c: c.search_documents("docs", QUERY, k=3, tenants=["a", "b"]),
        "upsert tenant": lambda c: c.upsert_documents("docs", [1], DOCS[:1], tenant="b"),
        "upsert grant_to": lambda c: c.upsert_documents(
            "docs", [1], DOCS[:1], tenant="a", grant_to=["b"]
        ),
        "get tenant": lambda c: c.get_documents("docs", [1], tenant="b"),
    }
    fields = {"search tenant": "tenant", "search tenants": "tenants[1]",
              "upsert tenant": "tenant", "upsert grant_to": "grant_to[0]",
              "get tenant": "tenant"}  # fmt: skip

    def calls(c: Any) -> dict[str, tuple[Any, ...]]:
        out = {name: outcome(c, case) for name, case in denied.items()}
        c.search_documents("docs", QUERY, k=3)
        c.upsert_documents("docs", [1], DOCS[:1])
        c.get_documents("docs", [1])
        return out

    recorded.rec.calls.clear()
    got = _with_client(recorded.target, A_KEY, mode, calls)
    for name, (kind, _message, field, reason) in got.items():
        assert (kind, field, reason) == (vecdb.PermissionDenied, fields[name],
                                         "TENANT_NOT_ALLOWED"), name  # fmt: skip
    assert recorded.rec.calls == [("search_documents", {"tenant": "a"}),
                                  ("upsert_documents", {"tenant": "a"}),
                                  ("get_documents", {"tenant": "a"})]  # fmt: skip


# -- the router ------------------------------------------------------------------------------


def test_router_accepts_a_multi_tenant_document_collection() -> None:
    """The router's CreateCollection check passes multi_tenant with kind="multivector" (and
    the other kinds) with the settings a node records."""
    for kind, multi_tenant in (("multivector", True), ("multivector", False), ("dense", True)):
        spec = collection_spec(rq.create_request("c", DIM, "cosine", "int", None, None, kind,
                                                 multi_tenant, False))  # fmt: skip
        assert (spec["kind"], spec["multi_tenant"]) == (kind, multi_tenant)


class Cluster:
    """Two in-process nodes as shards, a `MemoryCatalog` and a router, all on 127.0.0.1:0."""

    def __init__(self, root: Path) -> None:
        self.nodes = [VecdbServer(server_config(root / f"s{i}")).start() for i in range(2)]
        self.addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        self.catalog = MemoryCatalog(self.addresses)
        self.router = router_server(self.catalog, self.addresses)
        self.address = f"127.0.0.1:{self.router.port}"

    def close(self) -> None:
        self.router.stop(grace=0)
        for n in self.nodes:
            n.stop(grace=0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cl = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cl
    cl.close()


def test_router_document_calls_naming_tenants_get_a_nodes_answer(cluster: Cluster) -> None:
    """On a document collection through the router, a tenant, a tenants list or a grantee is refused as a node refuses it (the
    collection is not multi-tenant): never split by id with the tenant fields dropped."""
    with vecdb.connect(cluster.address, timeout=20) as c:
        c.create_collection("book", DIM, "cosine", kind="multivector", exist_ok=True)
        c.upsert_documents("book", [1, 2, 3, 4], DOCS[:4])
        cases: list[tuple[str, Callable[[], object]]] = [
            ("tenant", lambda: c.upsert_documents("book", [5, 6], DOCS[:2], tenant="a")),
            ("grant_to", lambda: c.upsert_documents("book", [5, 6], DOCS[:2], grant_to=["a"])),
            ("tenants", lambda: c.search_documents("book", QUERY, k=3, tenants=["a"])),
            ("tenant", lambda: c.search_documents("book", QUERY, k=3, tenant="a")),
            ("tenant", lambda: c.get_documents("book", [1, 2, 3, 4], tenant="a")),
        ]
        for field, case in cases:
            with pytest.raises(vecdb.InvalidArgument) as info:
                case()
            assert (info.value.field, info.value.reason) == (field, "NOT_MULTI_TENANT"), field
        assert c.count("book") == 4  # nothing written by the refused upserts


# -- end to end: the engine's tenant-scoped documents ----------------------------------------


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    t = Trio(tmp_path_factory.mktemp("mvt"))
    yield t
    t.close()


def _two_tenants(c: Any) -> None:
    """Collection "mt": a owns documents 1 and 2, b owns 3 (granted to a) and 4."""
    c.create_collection("mt", DIM, "cosine", kind="multivector", multi_tenant=True)
    for t in ("a", "b"):
        c.create_tenant("mt", t)
    c.upsert_documents("mt", [1, 2], DOCS[:2], tenant="a")
    c.upsert_documents("mt", [3], DOCS[2:3], tenant="b", grant_to=["a"])
    c.upsert_documents("mt", [4], DOCS[3:4], tenant="b")


def _tenant_scenario(c: Any) -> dict[str, Any]:
    """Tenants a and b; a owns 1, 2; b owns 3 (granted to a) and 4. Searches, gets and
    counts per tenant, then the refusals."""
    out: dict[str, Any] = {}
    c.create_collection("mt", DIM, "cosine", kind="multivector", multi_tenant=True)
    c.create_collection("plain", DIM, "cosine", kind="multivector")
    for t in ("a", "b"):
        c.create_tenant("mt", t)
    out["upserted"] = [
        c.upsert_documents("mt", [1, 2], DOCS[:2], tenant="a", payloads=[{"n": 1}, {"n": 2}]),
        c.upsert_documents("mt", [3], DOCS[2:3], tenant="b", grant_to=["a"]),
        c.upsert_documents("mt", [4], DOCS[3:4], tenant="b"),
    ]
    c.upsert_documents("plain", [1], DOCS[:1])
    out["a"] = _hits(c.search_documents("mt", QUERY, k=10, tenant="a"))
    out["b"] = _hits(c.search_documents("mt", QUERY, k=10, tenant="b"))
    out["ab"] = _hits(c.search_documents("mt", QUERY, k=10, tenants=["a", "b"]))
    out["admin"] = _hits(c.search_documents("mt", QUERY, k=10))
    out["b batch"] = _hits(c.search_documents("mt", [QUERY, DOCS[0]], k=10, tenant="b"))
    out["a filtered"] = _hits(c.search_documents("mt", QUERY, k=10, tenant="a",
                                                 filter={"n": 2}))  # fmt: skip
    out["get b"] = [d.id for d in c.get_documents("mt", [1, 3], tenant="b")]
    out["get a"] = [(d.id, d.payload) for d in c.get_documents("mt", [4, 3, 1], tenant="a")]
    out["count"] = [c.count("mt", tenant=t) for t in ("a", "b")]
    cases: dict[str, Callable[[Any], object]] = {
        "no owner": lambda c: c.upsert_documents("mt", [5], DOCS[4:5]),
        "unknown owner": lambda c: c.upsert_documents("mt", [5], DOCS[4:5], tenant="zz"),
        "unknown grantee": lambda c: c.upsert_documents(
            "mt", [5], DOCS[4:5], tenant="a", grant_to=["zz"]
        ),
        "unknown search": lambda c: c.search_documents("mt", QUERY, k=3, tenant="zz"),
        "unknown in tenants": lambda c: c.search_documents("mt", QUERY, k=3, tenants=["a", "zz"]),
        "unknown get": lambda c: c.get_documents("mt", [1], tenant="zz"),
        "tenant and tenants": lambda c: c.search_documents(
            "mt", QUERY, k=3, tenant="a", tenants=["b"]
        ),
        "other owner": lambda c: c.upsert_documents("mt", [3], DOCS[:1], tenant="a"),
        "plain upsert": lambda c: c.upsert_documents("plain", [2], DOCS[:1], tenant="a"),
        "plain search": lambda c: c.search_documents("plain", QUERY, k=3, tenant="a"),
        "plain get": lambda c: c.get_documents("plain", [1], tenant="a"),
    }
    out["errors"] = {name: outcome(c, case) for name, case in cases.items()}
    out["after"] = _hits(c.search_documents("mt", QUERY, k=10))  # refusals wrote nothing
    c.drop_collection("mt")
    c.drop_collection("plain")
    return out


def test_tenants_see_their_documents_the_same_in_every_mode(trio: Trio) -> None:
    """search_documents / get_documents with a tenant see its own documents and those
    granted to it, `tenants` their union; a missing owner is InvalidArgument, an unknown
    tenant NotFound, a tenant on a collection that is not multi-tenant InvalidArgument;
    embedded, remote and async answer identically."""
    res = trio.run(_tenant_scenario)
    local = res["local"]
    for mode in ("remote", "aio"):
        for key, value in local.items():
            assert res[mode][key] == value, (mode, key)
    assert local["upserted"] == [2, 1, 1]
    assert local["a"] == [[1, 2, 3]]
    assert local["b"] == [[3, 4]]
    assert local["ab"] == local["admin"] == [[1, 2, 3, 4]]
    assert local["b batch"] == [[3, 4], [3, 4]]
    assert local["a filtered"] == [[2]]
    assert local["get b"] == [3]
    assert local["get a"] == [(3, None), (1, {"n": 1})]
    assert local["count"] == [3, 2]
    assert local["after"] == [[1, 2, 3, 4]]
    want = {
        "no owner": (vecdb.InvalidArgument, "tenant"),
        "unknown owner": (vecdb.NotFound, "tenant"),
        "unknown grantee": (vecdb.NotFound, "grant_to[0]"),
        "unknown search": (vecdb.NotFound, "tenant"),
        "unknown in tenants": (vecdb.NotFound, "tenants[1]"),
        "unknown get": (vecdb.NotFound, "tenant"),
        "tenant and tenants": (vecdb.InvalidArgument, "tenants"),
        "other owner": (vecdb.PermissionDenied, None),
        "plain upsert": (vecdb.InvalidArgument, "tenant"),
        "plain search": (vecdb.InvalidArgument, "tenant"),
        "plain get": (vecdb.InvalidArgument, "tenant"),
    }
    got = {name: (kind, field) for name, (kind, _m, field, _r) in local["errors"].items()}
    assert {n: g for n, g in got.items() if n != "other owner"} == {
        n: w for n, w in want.items() if n != "other owner"
    }
    assert got["other owner"][0] is vecdb.PermissionDenied
    for name in ("plain upsert", "plain search", "plain get"):
        assert local["errors"][name][3] == "NOT_MULTI_TENANT", name


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with API keys over a multi-tenant document collection "mt": a owns 1, 2; b
    owns 3 (granted to a) and 4."""
    root = tmp_path_factory.mktemp("keyed")
    srv = VecdbServer(server_config(root / "db", auth=AUTH)).start()
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target, api_key=ADMIN, timeout=20) as c:
        _two_tenants(c)
    yield target
    srv.stop(grace=0)


@pytest.mark.parametrize("mode", ["remote", "aio"])
def test_tenant_key_sees_only_its_documents_without_naming_a_tenant(keyed: str, mode: str) -> None:
    """With a key bound to tenant a and no tenant argument: search_documents and
    get_documents see a's documents and the one b granted it; an upsert is owned by a (b
    does not see it); naming b is PermissionDenied."""
    new_id = {"remote": 10, "aio": 11}[mode]

    def calls(c: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"search": _hits(c.search_documents("mt", QUERY, k=10))}
        out["get"] = [d.id for d in c.get_documents("mt", [1, 3, 4])]
        out["upserted"] = c.upsert_documents("mt", [new_id], DOCS[4:5])
        out["denied"] = outcome(c, lambda c: c.search_documents("mt", QUERY, k=3, tenant="b"))
        return out

    got = _with_client(keyed, A_KEY, mode, calls)
    assert got["search"] == [[1, 2, 3]]
    assert got["get"] == [1, 3]
    assert got["upserted"] == 1
    assert got["denied"][0] is vecdb.PermissionDenied
    with vecdb.connect(keyed, api_key=ADMIN, timeout=20) as admin:
        assert new_id in _hits(admin.search_documents("mt", QUERY, k=20, tenant="a"))[0]
        assert new_id not in _hits(admin.search_documents("mt", QUERY, k=20, tenant="b"))[0]
        assert admin.delete("mt", [new_id]) == 1  # the world as the next mode expects it


def test_a_router_places_document_tenants_and_answers_as_a_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Through a router over two shards: the tenants get home shards, a document lives on its
    owner's home (a grant across shards makes the grantee present there), and every search,
    get, count and refusal of the scenario equals a single node's; then deletes, a revoke and
    a drop through the router."""
    with vecdb.connect(str(tmp_path / "single")) as c:
        want = _tenant_scenario(c)
    with vecdb.connect(cluster.address, timeout=20) as c:
        got = _tenant_scenario(c)
        for key, value in want.items():
            assert got[key] == value, key
        _two_tenants(c)
        homes = []
        for address in cluster.addresses:  # what each shard holds
            with vecdb.connect(address, timeout=20) as node:
                homes.append(sorted(d.id for d in node.get_documents("mt", [1, 2, 3, 4])))
        assert sorted(homes) == [[1, 2], [3, 4]]
        assert c.delete("mt", [4], tenant="b") == 1
        assert c.revoke("mt", [3], tenant="a") == 1
        assert _hits(c.search_documents("mt", QUERY, k=10, tenant="a")) == [[1, 2]]
        assert [d.id for d in c.get_documents("mt", [1, 2, 3, 4])] == [1, 2, 3]
        c.drop_tenant("mt", "a")
        assert _hits(c.search_documents("mt", QUERY, k=10)) == [[3]]
        assert c.count("mt", tenant="b") == 1
        c.drop_collection("mt")
