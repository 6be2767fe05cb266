"""Runtime API-key management on a real server: create, list and revoke keys over the wire,
effective at once, hashed on disk, kept across a restart; who may manage keys; the key file's
format checks; `[[auth.keys]]` config parsing and redaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from wire_helpers import DIM, server_config

import vecdb
from vecdb.client.keys import ApiKeyInfo
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer
from vecdb.server.auth_keys import FILE_NAME

ROOT = "root-admin-key-000001"
READER = "config-reader-key-0001"
AUTH = {"admin_key": ROOT, "keys": [{"key": READER, "role": "read", "description": "dash"}]}


def _client(srv: VecdbServer, key: str | None) -> vecdb.client.remote.RemoteClient:
    return vecdb.connect(f"127.0.0.1:{srv.port}", api_key=key, timeout=20)  # type: ignore[return-value]


def test_created_key_works_at_once_and_revoked_key_stops(
    start_server: Callable[..., VecdbServer],
) -> None:
    """A key created over the wire is usable on the next call with its role and scope; after
    revocation the same key is UNAUTHENTICATED; listings never show secrets."""
    srv = start_server(auth=AUTH)
    with _client(srv, ROOT) as root:
        root.create_collection("base", DIM, "l2", index="flat")
        made = root.create_api_key("write", collections=["base"], description="ingest job")
        assert made.key.startswith("vdb_") and len(made.key) > 40
        assert (made.info.role, made.info.collections, made.info.source) == (
            "write", ("base",), "runtime")  # fmt: skip
        with _client(srv, made.key) as job:
            assert job.upsert("base", [1], np.ones((1, DIM))) == 1
            with pytest.raises(vecdb.PermissionDenied):
                job.create_collection("x", DIM)
            with pytest.raises(vecdb.PermissionDenied):
                job.list_api_keys()  # write role: not an admin
        listed = root.list_api_keys()
        assert [k.source for k in listed] == ["config", "config", "runtime"]
        assert [k.role for k in listed] == ["admin", "read", "write"]
        assert listed[2] == made.info and all(isinstance(k, ApiKeyInfo) for k in listed)
        assert made.key not in repr(listed) and ROOT not in repr(listed)
        root.revoke_api_key(made.info.id)
        with _client(srv, made.key) as job:
            with pytest.raises(vecdb.Unauthenticated):
                job.count("base")
        assert [k.id for k in root.list_api_keys()] == [k.id for k in listed[:2]]


def test_runtime_keys_survive_a_restart_hashed_on_disk(
    start_server: Callable[..., VecdbServer], tmp_path: Path
) -> None:
    """Keys are kept in <data>/api_keys.json as SHA-256 digests (mode 0600); after a restart
    on the same data the live key works and the revoked one does not."""
    srv = start_server(auth=AUTH)
    with _client(srv, ROOT) as root:
        root.create_collection("base", DIM, "l2", index="flat")
        keep = root.create_api_key("read", tenants=["acme"])
        gone = root.create_api_key("admin")
        root.revoke_api_key(gone.info.id)
    data = Path(srv.config.server.data)
    srv.stop(grace=0)
    path = data / FILE_NAME
    raw = path.read_text()
    assert keep.key not in raw and gone.key not in raw and ROOT not in raw
    doc = json.loads(raw)
    assert (doc["format"], doc["version"], [k["id"] for k in doc["keys"]]) == (
        "vecdb-api-keys", 1, [keep.info.id])  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o600
    again = VecdbServer(server_config(data, auth=AUTH)).start()
    try:
        with _client(again, gone.key) as c, pytest.raises(vecdb.Unauthenticated):
            c.list_collections()
        with _client(again, keep.key) as c:
            assert [i.name for i in c.list_collections()] == ["base"]
            with pytest.raises(vecdb.PermissionDenied) as info:
                c.stats("base")  # the tenant scope survived the restart
            assert info.value.reason == "TENANT_SCOPED_KEY"
        with _client(again, ROOT) as root:
            assert [k.id for k in root.list_api_keys()][-1] == keep.info.id
    finally:
        again.stop(grace=0)


def test_who_may_manage_keys(start_server: Callable[..., VecdbServer]) -> None:
    """Only unscoped admins manage keys; an open server refuses (keys would lock it); config
    keys cannot be revoked at runtime; unknown ids are NOT_FOUND; bad roles INVALID_ARGUMENT."""
    srv = start_server(auth=AUTH)
    with _client(srv, ROOT) as root:
        scoped = root.create_api_key("admin", tenants=["acme"])
        with _client(srv, scoped.key) as c, pytest.raises(vecdb.PermissionDenied) as info:
            c.create_api_key("read")
        assert info.value.reason == "SCOPED_KEY"
        with _client(srv, READER) as c, pytest.raises(vecdb.PermissionDenied):
            c.list_api_keys()
        config_id = root.list_api_keys()[1].id
        with pytest.raises(vecdb.FailedPrecondition) as fp:
            root.revoke_api_key(config_id)
        assert fp.value.reason == "CONFIG_KEY"
        with pytest.raises(vecdb.NotFound):
            root.revoke_api_key("key_0000")
        with pytest.raises(vecdb.InvalidArgument) as bad:
            root.create_api_key("owner")
        assert (bad.value.field, bad.value.reason) == ("role", "BAD_ROLE")
        with pytest.raises(vecdb.InvalidArgument) as bad:
            root.create_api_key("read", tenants=[""])
        assert bad.value.field == "tenants[0]"
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:  # role unset on the wire
        with pytest.raises(grpc.RpcError) as raw:
            pb_grpc.VectorDBStub(ch).CreateApiKey(
                pb.CreateApiKeyRequest(), metadata=(("api-key", ROOT),), timeout=5)  # fmt: skip
        err = status.error_of(raw.value)
        assert (type(err), err.reason, err.field) == (vecdb.InvalidArgument, "BAD_ROLE", "role")
    open_srv = start_server()
    with _client(open_srv, None) as c, pytest.raises(vecdb.FailedPrecondition) as fp:
        c.create_api_key("admin")
    assert fp.value.reason == "AUTH_DISABLED"


def test_async_client_manages_keys(start_server: Callable[..., VecdbServer]) -> None:
    """The async client has the same three methods; over a local target they are refused."""
    srv = start_server(auth=AUTH)

    async def run() -> None:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", api_key=ROOT) as c:
            made = await c.create_api_key("read", description="async")
            assert made.info.id in [k.id for k in await c.list_api_keys()]
            await c.revoke_api_key(made.info.id)
        async with vecdb.AsyncClient(":memory:") as local:
            with pytest.raises(vecdb.FailedPrecondition):
                await local.list_api_keys()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("{not json", "does not parse"),
        ('{"format": "other", "version": 1, "keys": []}', "is not a vecdb-api-keys file"),
        ('{"format": "vecdb-api-keys", "version": 9, "keys": []}', "format version 9"),
        ('{"format": "vecdb-api-keys", "version": 1, "keys": [{"id": "x"}]}', "malformed"),
    ],
    ids=["garbage", "magic", "version", "record"],
)
def test_damaged_key_file_stops_the_start(tmp_path: Path, body: str, needle: str) -> None:
    """A key file the server cannot read is DataLoss naming it: starting without it would
    bring revoked keys back or drop live ones silently."""
    data = tmp_path / "d"
    data.mkdir()
    (data / FILE_NAME).write_text(body)
    with pytest.raises(vecdb.DataLoss) as info:
        VecdbServer(server_config(data, auth=AUTH)).start()
    assert needle in info.value.message and FILE_NAME in info.value.message


def test_auth_keys_config_is_checked_and_redacted(tmp_path: Path) -> None:
    """`[[auth.keys]]` from TOML and from the environment (JSON); bad entries name what is
    wrong without echoing the key; `redacted()` hides every key."""
    cfg_file = tmp_path / "vecdb.toml"
    cfg_file.write_text(
        '[[auth.keys]]\nkey = "k-one-0000000001"\nrole = "write"\ntenants = ["acme"]\n'
        "[quotas]\nrequests_per_second = 5\n[quotas.tenants.acme]\nmax_k = 10\n"
    )
    cfg = vecdb.server.config.load_config(cfg_file, env={})
    assert cfg.auth.keys[0]["tenants"] == ["acme"] and cfg.quotas.tenants == {"acme": {"max_k": 10}}
    assert cfg.redacted()["auth"]["keys"][0]["key"] == "***"
    env = {"VECDB__AUTH__KEYS": '[{"key": "k-two-000000000001", "role": "admin"}]'}
    assert vecdb.server.config.load_config(env=env).auth.keys[0]["role"] == "admin"
    for keys, needle in (
        ([{"key": "secret-value-0001", "role": "root"}], "role='root' is not one of"),
        ([{"key": "secret-value-0001", "role": "read", "scope": 1}], "unknown field"),
        ([{"role": "read"}], "key must be a non-empty string"),
        ([{"key": "secret-value-0001"}], "role is required"),
        ([{"key": "secret-value-0001", "role": "read", "tenants": "acme"}], "must be a list"),
    ):
        with pytest.raises(vecdb.InvalidArgument) as info:
            vecdb.server.config.load_config(env={}, overrides={"auth": {"keys": keys}})
        assert needle in info.value.message and "secret-value" not in info.value.message
    with pytest.raises(vecdb.InvalidArgument) as info:
        vecdb.server.config.load_config(env={"VECDB__AUTH__KEYS": "[{secret-value"})
    assert "auth.keys must be a list of tables" in info.value.message
    assert "secret-value" not in info.value.message
