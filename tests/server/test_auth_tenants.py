"""Tenant- and collection-scoped API keys over a real gRPC server on loopback: injection of the
key's tenant, PERMISSION_DENIED for other tenants that looks the same whether the tenant exists
or not, refusal of collection-wide RPCs, filtered listings, and per-tenant metrics.

The requests go to the tenant-aware stand-in of `auth_helpers` (the issue-10 field names)
behind the real `CallGuard`, so what is checked here is exactly what the server does before
any servicer sees a message.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from auth_helpers import EXISTING, StandInServer, error_of

import vecdb
from vecdb.server.auth import KeyRing

ADMIN = "admin-key-000000000001"
ACME = "acme-writer-0000000001"  # write, tenant acme
ACME_READ = "acme-reader-000000001"  # read, tenant acme
ACME_ADMIN = "acme-admin-0000000001"  # admin, tenant acme
DUO = "duo-writer-00000000001"  # write, tenants acme + globex
DOCS = "docs-writer-0000000001"  # write, collection docs

KEYS = [
    {"key": ACME, "role": "write", "tenants": ["acme"]},
    {"key": ACME_READ, "role": "read", "tenants": ["acme"]},
    {"key": ACME_ADMIN, "role": "admin", "tenants": ["acme"]},
    {"key": DUO, "role": "write", "tenants": ["acme", "globex"]},
    {"key": DOCS, "role": "write", "collections": ["docs"]},
]


@pytest.fixture
def srv() -> Iterator[StandInServer]:
    s = StandInServer(KeyRing(admin_key=ADMIN, keys=KEYS))
    yield s
    s.close()


def test_single_tenant_key_gets_its_tenant_injected(srv: StandInServer) -> None:
    """A request naming no tenant acts as the key's tenant: search, upsert, stream, grant."""
    assert srv.call("Search", ACME, collection="c").tenant == "acme"
    assert srv.call("SearchBatch", ACME, collection="c").tenant == "acme"
    assert srv.call("Upsert", ACME, collection="c", ids=[1]).tenant == "acme"
    acks = srv.stream(ACME, [{"collection": "c", "ids": [1]}, {"collection": "c", "ids": [2]}])
    assert [a.tenant for a in acks] == ["acme", "acme"]
    granted = srv.call("Grant", ACME, collection="c", tenant="acme", ids=[1])
    assert (granted.tenant, granted.owner) == ("acme", "acme")
    assert srv.call("Count", ACME_READ, collection="c").name == "acme"


def test_naming_own_tenants_passes_unchanged(srv: StandInServer) -> None:
    """Naming the key's own tenant works; `tenants=[...]` is left as the union it asks for."""
    assert srv.call("Search", ACME, collection="c", tenant="acme").tenant == "acme"
    echo = srv.call("Search", DUO, collection="c", tenants=["acme", "globex"])
    assert (echo.tenant, list(echo.tenants)) == ("", ["acme", "globex"])
    assert srv.call("Upsert", DUO, collection="c", tenant="acme", grant_to=["globex"]).tenant


def _denial(srv: StandInServer, key: str, method: str, name: str, **fields: object) -> tuple:
    """(class, reason, field, message with `name` masked) of a call naming tenant `name`."""
    fields = {k: ([name] if v == [...] else name if v is ... else v) for k, v in fields.items()}
    err = error_of(lambda: srv.call(method, key, collection="c", **fields))
    return type(err), err.reason, err.field, err.message.replace(repr(name), "<t>")


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("Search", {"tenant": ...}),
        ("Search", {"tenants": [...]}),
        ("Upsert", {"grant_to": [...]}),
        ("Upsert", {"tenant": ...}),
        ("Grant", {"owner": ...}),
        ("Count", {"tenant": ...}),
        ("GetTenant", {"tenant": ...}),
    ],
    ids=["search tenant", "search tenants", "upsert grant_to", "upsert owner", "grant owner",
         "count", "get tenant"],
)  # fmt: skip
def test_other_tenant_denied_the_same_whether_it_exists_or_not(
    srv: StandInServer, method: str, fields: dict[str, object]
) -> None:
    """An existing tenant of someone else and a made-up one get the same code, reason, field
    and message; an unscoped admin, by contrast, sees the difference (NOT_FOUND vs OK)."""
    existing = _denial(srv, ACME, method, "globex", **fields)
    missing = _denial(srv, ACME, method, "umbrella", **fields)
    assert existing == missing
    assert existing[0] is vecdb.PermissionDenied and existing[1] == "TENANT_NOT_ALLOWED"
    assert existing[3] == "this API key may not access tenant <t>"
    if method in ("Count", "GetTenant"):  # the stand-in knows globex, not umbrella
        assert srv.call(method, ADMIN, collection="c", tenant="globex").name == "globex"
        with pytest.raises(vecdb.NotFound):
            srv.call(method, ADMIN, collection="c", tenant="umbrella")


def test_other_tenant_in_a_stream_ends_it_with_permission_denied(srv: StandInServer) -> None:
    """Every streamed batch is checked: a batch naming another tenant ends the stream."""
    for name in ("globex", "umbrella"):
        err = error_of(lambda n=name: srv.stream(ACME, [{"collection": "c", "ids": [1]},
                                                        {"collection": "c", "tenant": n}]))  # fmt: skip
        assert (type(err), err.reason) == (vecdb.PermissionDenied, "TENANT_NOT_ALLOWED")
        err = error_of(lambda n=name: srv.stream(ACME, [{"collection": "c", "grant_to": [n]}]))
        assert err.field == "grant_to[0]"


def test_several_tenant_key_must_name_one(srv: StandInServer) -> None:
    """A key bound to two tenants never picks one: naming none is INVALID_ARGUMENT."""
    err = error_of(lambda: srv.call("Search", DUO, collection="c"))
    assert (type(err), err.reason, err.field) == (vecdb.InvalidArgument, "TENANT_REQUIRED",
                                                  "tenant")  # fmt: skip
    assert srv.call("Search", DUO, collection="c", tenant="globex").tenant == "globex"
    err = error_of(lambda: srv.call("Search", DUO, collection="c", tenants=["acme", "zz"]))
    assert (err.reason, err.field) == ("TENANT_NOT_ALLOWED", "tenants[1]")


@pytest.mark.parametrize("method", ["CreateCollection", "DropCollection", "CreateSnapshot",
                                    "Optimize", "Stats"])  # fmt: skip
def test_tenant_scoped_admin_may_not_act_on_the_whole_collection(
    srv: StandInServer, method: str
) -> None:
    """Collection-wide RPCs (no tenant field) are refused to tenant-scoped keys, even admin."""
    err = error_of(lambda: srv.call(method, ACME_ADMIN, **_target(method)))
    assert (type(err), err.reason) == (vecdb.PermissionDenied, "TENANT_SCOPED_KEY")
    srv.call(method, ADMIN, **_target(method))  # an unscoped admin may


def _target(method: str) -> dict[str, str]:
    return {"name": "c"} if method.endswith("Collection") else {"collection": "c"}


def test_tenant_scoped_admin_manages_only_its_tenants(srv: StandInServer) -> None:
    """CreateTenant names its tenant: allowed for the key's own, denied for others."""
    assert srv.call("CreateTenant", ACME_ADMIN, collection="c", tenant="acme").name == "acme"
    err = error_of(lambda: srv.call("CreateTenant", ACME_ADMIN, collection="c", tenant="x"))
    assert err.reason == "TENANT_NOT_ALLOWED"
    err = error_of(lambda: srv.call("CreateTenant", ACME, collection="c", tenant="acme"))
    assert (type(err), err.reason) == (vecdb.PermissionDenied, "ROLE_TOO_LOW")
    err = error_of(lambda: srv.call("Upsert", ACME_READ, collection="c"))
    assert (type(err), err.reason) == (vecdb.PermissionDenied, "READ_ONLY_KEY")


def test_list_tenants_and_collections_are_filtered_to_the_key(srv: StandInServer) -> None:
    """ListTenants shows a tenant key only its tenants; ListCollections a collection key only
    its collections; collection-level reads stay open to tenant keys."""
    names = lambda key: [t.name for t in srv.call("ListTenants", key, collection="c").tenants]  # noqa: E731
    assert names(ACME) == ["acme"]
    assert names(DUO) == ["acme", "globex"]
    assert names(ADMIN) == list(EXISTING)
    docs_page = srv.call("ListCollections", DOCS)
    assert ([c.name for c in docs_page.collections], docs_page.next_page_token) == (["docs"], "")
    assert srv.call("ListCollections", ACME).next_page_token == "docs"  # unscoped: pages
    srv.call("GetCollection", ACME_READ, name="c")


def _pages(srv: StandInServer, key: str, limit: int) -> list[tuple[list[str], str]]:
    """Every ListTenants page a key gets, following next_offset."""
    out, offset = [], ""
    while True:
        page = srv.call("ListTenants", key, collection="c", limit=limit, offset=offset)
        out.append(([t.name for t in page.tenants], page.next_offset))
        offset = page.next_offset
        if not offset:
            return out


def test_list_tenants_paging_never_shows_other_names() -> None:
    """Pages of a tenant key carry only its names, in `tenants` and in `next_offset`, and are
    the same whether other tenants exist or not; bad limits are answered as for anyone."""
    keys = KeyRing(admin_key=ADMIN, keys=[
        {"key": DUO, "role": "read", "tenants": ["acme", "initech", "zzz"]}])  # fmt: skip
    s = StandInServer(keys)
    try:
        want = [(["acme"], "initech"), (["initech"], "zzz"), ([], "")]
        assert _pages(s, DUO, 1) == want
        assert _pages(s, DUO, 2) == [(["acme", "initech"], "zzz"), ([], "")]
        assert _pages(s, ADMIN, 1)[0] == (["acme"], "globex")  # what a scoped key never sees
        s.impl.tenants |= {"bravo", "hotel", "yankee"}  # more tenants of others
        assert _pages(s, DUO, 1) == want
        s.impl.tenants -= {"initech"}
        assert _pages(s, DUO, 1) == [(["acme"], "initech"), ([], "")]  # a page skips absent names
        for key in (DUO, ADMIN):
            err = error_of(lambda k=key: s.call("ListTenants", k, collection="c", limit=0))
            assert (type(err), err.field) == (vecdb.InvalidArgument, "limit")
    finally:
        s.close()


def test_collection_scoped_key_stays_in_its_collections(srv: StandInServer) -> None:
    """Another collection is PERMISSION_DENIED whether it exists or not; calls without a
    collection are refused."""
    assert srv.call("Search", DOCS, collection="docs", tenant="acme").tenant == "acme"
    seen = []
    for name in ("other", "nope"):
        err = error_of(lambda n=name: srv.call("Search", DOCS, collection=n))
        seen.append((type(err), err.reason, err.field, err.message.replace(repr(name), "<c>")))
    assert seen[0] == seen[1]
    assert seen[0][:3] == (vecdb.PermissionDenied, "COLLECTION_NOT_ALLOWED", "collection")
    err = error_of(lambda: srv.call("Stats", DOCS, collection=""))
    assert err.reason == "COLLECTION_SCOPED_KEY"
    err = error_of(lambda: srv.call("GetCollection", DOCS, name="other"))
    assert (err.reason, err.field) == ("COLLECTION_NOT_ALLOWED", "name")


def test_per_tenant_metrics_count_calls_latency_and_bytes(srv: StandInServer) -> None:
    """Requests by tenant/method/code, a latency histogram and bytes read are recorded; a
    made-up tenant of a failed call is counted under "(other)"."""
    for _ in range(3):
        srv.call("Search", ACME, collection="c")
    error_of(lambda: srv.call("Count", ADMIN, collection="c", tenant="umbrella"))
    reg = srv.metrics.registry
    get = reg.get_sample_value
    assert get("vecdb_tenant_requests_total",
               {"tenant": "acme", "method": "Search", "code": "OK"}) == 3  # fmt: skip
    # a name seen only in failed calls takes no label of its own
    assert get("vecdb_tenant_requests_total",
               {"tenant": "(other)", "method": "Count", "code": "NOT_FOUND"}) == 1  # fmt: skip
    assert get("vecdb_tenant_request_seconds_count", {"tenant": "acme"}) == 3
    assert get("vecdb_tenant_bytes_read_total", {"tenant": "acme"}) == 3 * 4096


def test_tenant_labels_are_capped_and_exposed_on_metrics_http() -> None:
    """Past `tenant_labels` distinct tenants, calls count under "(other)"; /metrics shows it."""
    s = StandInServer(KeyRing(admin_key=ADMIN), tenant_labels=2)
    try:
        for t in ("acme", "globex", "initech", "acme"):
            s.call("Search", ADMIN, collection="c", tenant=t)
        port = s.metrics.start_http("127.0.0.1", 0)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        s.metrics.stop_http()
        s.close()
    body = text.decode()
    assert 'vecdb_tenant_requests_total{code="OK",method="Search",tenant="acme"} 2.0' in body
    assert 'tenant="(other)"' in body and 'tenant="initech"' not in body
