"""Roles of API keys on a real server with the real remote client: every role against every
class of RPC (read / write / admin), the legacy `admin_key` / `read_only_keys` beside
`[[auth.keys]]`, collection-scoped keys, and tenant-scoped keys refused on collection-wide RPCs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from wire_helpers import DIM

import vecdb
from vecdb.server.app import VecdbServer

ADMIN, LEGACY_READ = "legacy-admin-key-0001", "legacy-read-key-00001"
READ, WRITE, ADMIN2 = "role-read-key-000001", "role-write-key-00001", "role-admin-key-00001"
DOCS_WRITE = "docs-only-writer-0001"  # write, collection "base" only
TENANT_ADMIN = "tenant-admin-key-0001"  # admin, tenant "acme" only

AUTH = {
    "admin_key": ADMIN,
    "read_only_keys": [LEGACY_READ],
    "keys": [
        {"key": READ, "role": "read"},
        {"key": WRITE, "role": "write"},
        {"key": ADMIN2, "role": "admin", "description": "ops"},
        {"key": DOCS_WRITE, "role": "write", "collections": ["base"]},
        {"key": TENANT_ADMIN, "role": "admin", "tenants": ["acme"]},
    ],
}

Call = Callable[[vecdb.Client], Any]
ROW = np.ones((1, DIM), np.float32)

READ_CALLS: dict[str, Call] = {
    "count": lambda c: c.count("base"),
    "get": lambda c: c.get("base", [1]),
    "search": lambda c: c.search("base", np.ones(DIM), k=1),
    "scroll": lambda c: c.scroll("base", limit=5),
    "list_collections": lambda c: c.list_collections(),
    "get_collection": lambda c: c.get_collection("base"),
    "collection_exists": lambda c: c.collection_exists("base"),
    "list_snapshots": lambda c: c.list_snapshots("base"),
    "stats": lambda c: c.stats("base"),
}
WRITE_CALLS: dict[str, Call] = {
    "upsert": lambda c: c.upsert("base", [9], ROW),
    "upsert_stream": lambda c: list(c.upsert_stream("base", [([8], ROW, None)])),
    "set_payload": lambda c: c.set_payload("base", [1], {"a": 1}),
    "overwrite_payload": lambda c: c.overwrite_payload("base", [1], {"a": 2}),
    "delete": lambda c: c.delete("base", [9]),
}
ADMIN_CALLS: dict[str, Call] = {
    "create_collection": lambda c: c.create_collection("extra", DIM, "l2", index="flat"),
    "create_payload_index": lambda c: c.create_payload_index("base", "a", "int"),
    "optimize": lambda c: c.optimize("base"),
    "create_snapshot": lambda c: c.create_snapshot("base"),
    "drop_collection": lambda c: c.drop_collection("extra"),
}
CLASSES = {"read": READ_CALLS, "write": WRITE_CALLS, "admin": ADMIN_CALLS}
# key -> the call classes it may use
ALLOWED = {
    LEGACY_READ: {"read"}, READ: {"read"}, WRITE: {"read", "write"},
    ADMIN: {"read", "write", "admin"}, ADMIN2: {"read", "write", "admin"},
}  # fmt: skip


@pytest.fixture
def keyed(start_server: Callable[..., VecdbServer]) -> VecdbServer:
    srv = start_server(auth=AUTH)
    with vecdb.connect(f"127.0.0.1:{srv.port}", api_key=ADMIN) as c:
        c.create_collection("base", DIM, "l2", index="flat")
        c.upsert("base", [1, 2], np.eye(2, DIM))
        c.create_collection("other", DIM, "l2", index="flat")
    return srv


@pytest.mark.parametrize("key", list(ALLOWED), ids=["legacy read", "read", "write",
                                                    "legacy admin", "admin"])  # fmt: skip
def test_every_role_against_every_rpc_class(keyed: VecdbServer, key: str) -> None:
    """Each key may call exactly the classes of its role; refusals are PERMISSION_DENIED
    naming the role, and change nothing."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=key, timeout=30) as c:
        for cls in ("read", "write", "admin"):
            for name, call in CLASSES[cls].items():
                if cls in ALLOWED[key]:
                    call(c)
                    continue
                with pytest.raises(vecdb.PermissionDenied) as info:
                    call(c)
                want = "READ_ONLY_KEY" if ALLOWED[key] == {"read"} else "ROLE_TOO_LOW"
                assert info.value.reason == want, name
        assert c.collection_exists("base") and not c.collection_exists("extra")
        if ALLOWED[key] == {"read"}:
            assert c.count("base") == 2 and c.get("base", [1])[0].payload in (None, {})


def test_collection_scoped_key_sees_only_its_collection(keyed: VecdbServer) -> None:
    """A key bound to "base" works there; "other" (existing) and "nope" (missing) get the same
    PERMISSION_DENIED; listings are filtered; whole-database stats are refused."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=DOCS_WRITE) as c:
        assert c.upsert("base", [5], ROW) == 1 and c.count("base") == 3
        errors = []
        for name in ("other", "nope"):
            with pytest.raises(vecdb.PermissionDenied) as info:
                c.count(name)
            e = info.value
            errors.append((e.reason, e.field, e.message.replace(repr(name), "<c>")))
        assert errors[0] == errors[1] == ("COLLECTION_NOT_ALLOWED", "collection",
                                          "this API key may not access collection <c>")  # fmt: skip
        with pytest.raises(vecdb.PermissionDenied) as info:
            c.get_collection("other")
        assert info.value.field == "name"
        assert [i.name for i in c.list_collections()] == ["base"]
        with pytest.raises(vecdb.PermissionDenied):
            c.stats()


def test_tenant_scoped_key_may_not_act_on_whole_collections(keyed: VecdbServer) -> None:
    """A tenant-bound admin key may read collection metadata but not create, drop, snapshot,
    optimize, index or read whole-database stats."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=TENANT_ADMIN) as c:
        assert {i.name for i in c.list_collections()} == {"base", "other"}
        assert c.get_collection("base").dim == DIM
        for call in (
            lambda: c.create_collection("t", DIM),
            lambda: c.drop_collection("other"),
            lambda: c.create_snapshot("base"),
            lambda: c.optimize("base"),
            lambda: c.create_payload_index("base", "a", "int"),
            lambda: c.stats(),
        ):
            with pytest.raises(vecdb.PermissionDenied) as info:
                call()
            assert info.value.reason == "TENANT_SCOPED_KEY"
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key=ADMIN) as c:
        assert {i.name for i in c.list_collections()} == {"base", "other"}


def test_unknown_key_is_unauthenticated_for_new_rpcs_too(keyed: VecdbServer) -> None:
    """Key management is behind authentication like everything else."""
    with vecdb.connect(f"127.0.0.1:{keyed.port}", api_key="nope-nope-nope") as c:
        with pytest.raises(vecdb.Unauthenticated):
            c.list_api_keys()  # type: ignore[attr-defined]
