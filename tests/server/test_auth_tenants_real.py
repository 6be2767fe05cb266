"""Tenant-scoped keys end to end on a real server with the real remote client and the engine's
multi-tenant collections: injection, isolation, indistinguishable denials, shared points,
tenant listings and per-tenant metrics and quotas on the real RPCs.

Needs the tenant RPCs and fields of issue 10 (`tenant` on the point and search requests); on a
tree without them (the auth branch before the tenants branch is merged) the module is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from wire_helpers import DIM

import vecdb
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.app import VecdbServer

if "tenant" not in pb.SearchRequest.DESCRIPTOR.fields_by_name:  # pragma: no cover
    pytest.skip("needs the tenant fields of the tenants branch", allow_module_level=True)

ADMIN = "real-admin-key-000001"
ACME = "real-acme-writer-0001"  # write, tenant acme
DUO = "real-duo-reader-00001"  # read, tenants acme + globex

AUTH = {"admin_key": ADMIN, "keys": [
    {"key": ACME, "role": "write", "tenants": ["acme"]},
    {"key": DUO, "role": "read", "tenants": ["acme", "globex"]},
]}  # fmt: skip


@pytest.fixture
def world(start_server: Callable[..., VecdbServer]) -> VecdbServer:
    """A multi-tenant collection: acme owns 1-3, globex owns 4-6 and shares 6 with acme,
    initech owns 7 and has a 3 requests/s quota (no key here is bound to it, so the scoping
    tests never spend it: a tenant-bound key's calls are charged to all its tenants)."""
    srv = start_server(auth=AUTH, quotas={"tenants": {"initech": {"requests_per_second": 3}}},
                       metrics={"enabled": True, "port": 0})  # fmt: skip
    rng = np.random.default_rng(3)
    with vecdb.connect(f"127.0.0.1:{srv.port}", api_key=ADMIN) as c:
        c.create_collection("mt", DIM, "l2", index="flat", multi_tenant=True)
        for t in ("acme", "globex", "initech"):
            c.create_tenant("mt", t)
        c.upsert("mt", [1, 2, 3], rng.standard_normal((3, DIM)), tenant="acme")
        c.upsert("mt", [4, 5, 6], rng.standard_normal((3, DIM)), tenant="globex",
                 grant_to=["acme"])  # fmt: skip
        c.revoke("mt", [4, 5], tenant="acme")
        c.upsert("mt", [7], rng.standard_normal((1, DIM)), tenant="initech")
    return srv


def _connect(srv: VecdbServer, key: str) -> Any:
    return vecdb.connect(f"127.0.0.1:{srv.port}", api_key=key, timeout=20)


def test_tenant_key_sees_only_its_tenant_without_naming_it(world: VecdbServer) -> None:
    """Search, get, count and scroll with an acme key and no tenant argument see acme's
    points and the one globex shares with it, nothing else; its upserts are owned by acme."""
    with _connect(world, ACME) as c:
        res = c.search("mt", np.zeros(DIM), k=10)
        assert sorted(int(i) for i in res.ids[0] if i >= 0) == [1, 2, 3, 6]
        assert c.count("mt") == 4
        assert sorted(r.id for r in c.get("mt", [1, 4, 6, 7])) == [1, 6]
        assert sorted(r.id for r in c.scroll("mt")[0]) == [1, 2, 3, 6]
        assert c.upsert("mt", [8], np.ones((1, DIM))) == 1
        with pytest.raises(vecdb.PermissionDenied):
            c.delete("mt", [6])  # shared with acme, owned by globex
        assert c.delete("mt", [8]) == 1
    with _connect(world, ADMIN) as c:
        assert c.count("mt", tenant="globex") == 3 and c.count("mt") == 7


def test_other_tenant_denied_identically_on_real_rpcs(world: VecdbServer) -> None:
    """globex (exists) and umbrella (does not) get the same denial on every tenant RPC."""
    calls: dict[str, Callable[[Any, str], Any]] = {
        "search": lambda c, t: c.search("mt", np.zeros(DIM), k=3, tenant=t),
        "search tenants": lambda c, t: c.search("mt", np.zeros(DIM), k=3, tenants=["acme", t]),
        "count": lambda c, t: c.count("mt", tenant=t),
        "get_tenant": lambda c, t: c.get_tenant("mt", t),
        "grant": lambda c, t: c.grant("mt", [1], tenant=t),
        "upsert grant_to": lambda c, t: c.upsert("mt", [9], np.ones((1, DIM)), grant_to=[t]),
    }
    with _connect(world, ACME) as c:
        for name, call in calls.items():
            seen = []
            for t in ("globex", "umbrella"):
                with pytest.raises(vecdb.PermissionDenied) as info:
                    call(c, t)
                e = info.value
                seen.append((e.reason, e.field, e.message.replace(repr(t), "<t>")))
            assert seen[0] == seen[1], name
            assert seen[0][0] == "TENANT_NOT_ALLOWED"
        assert c.count("mt") == 4  # nothing changed


def test_multi_tenant_key_must_choose_and_may_union(world: VecdbServer) -> None:
    """A key bound to acme and globex must name one; the union of both is allowed."""
    with _connect(world, DUO) as c:
        with pytest.raises(vecdb.InvalidArgument) as info:
            c.count("mt")
        assert info.value.reason == "TENANT_REQUIRED"
        res = c.search("mt", np.zeros(DIM), k=10, tenants=["acme", "globex"])
        assert sorted(int(i) for i in res.ids[0] if i >= 0) == [1, 2, 3, 4, 5, 6]
        tenants, nxt = c.list_tenants("mt")
        assert ([t.name for t in tenants], nxt) == (["acme", "globex"], None)
        page, nxt = c.list_tenants("mt", limit=1)
        assert ([t.name for t in page], nxt) == (["acme"], "globex")


def test_real_rpcs_feed_tenant_quotas_and_metrics(world: VecdbServer) -> None:
    """initech's 3 requests/s quota refuses its fourth quick call with RetryInfo, acme is not
    affected, and /metrics carries the per-tenant series."""
    import urllib.request

    with _connect(world, ADMIN) as c:
        with pytest.raises(vecdb.ResourceExhausted) as info:
            for _ in range(4):  # the bucket holds 3 (the fixture may have spent some)
                c.count("mt", tenant="initech")
        assert info.value.message == "tenant 'initech' over its 3 requests/s quota"
        assert info.value.retry_after is not None
        for _ in range(5):
            c.count("mt", tenant="acme")
    body = urllib.request.urlopen(f"http://127.0.0.1:{world.metrics_port}/metrics",
                                  timeout=5).read().decode()  # fmt: skip
    assert 'vecdb_tenant_throttled_total{limit="requests_per_second",tenant="initech"} 1.0' in body
    assert 'vecdb_tenant_requests_total{code="OK",method="Count",tenant="acme"} 5.0' in body


def test_a_tenants_document_searches_count_the_bytes_they_read(world: VecdbServer) -> None:
    """SearchDocuments answers its statistics as JSON: the bytes the engine read reach the
    tenant's vecdb_tenant_bytes_read series, as a dense search's do."""
    import urllib.request

    rng = np.random.default_rng(4)
    docs = [rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(3)]
    with _connect(world, ADMIN) as c:
        c.create_collection("pages", DIM, kind="multivector", multi_tenant=True)
        c.create_tenant("pages", "acme")
        c.upsert_documents("pages", [1, 2, 3], docs, tenant="acme")
    with _connect(world, ACME) as c:  # the key's tenant, not named
        res = c.search_documents("pages", docs[0][:2], k=2)
    assert res.ids[0, 0] == 1 and res.stats["bytes_read"] > 0
    body = urllib.request.urlopen(f"http://127.0.0.1:{world.metrics_port}/metrics",
                                  timeout=5).read().decode()  # fmt: skip
    line = next(
        x for x in body.splitlines() if x.startswith('vecdb_tenant_bytes_read_total{tenant="acme"}')
    )
    assert float(line.split()[-1]) >= res.stats["bytes_read"]
