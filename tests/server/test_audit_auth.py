"""Audit of the security layer against a real server: what a revoked, careless or hostile
key can still do on long-lived streams, and how key mistakes in the config are reported.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from wire_helpers import DIM

import vecdb
from vecdb.rpc import status
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.app import VecdbServer

ROOT = "root-admin-key-000001"


def _feed(inbox: queue.Queue[object]) -> Iterator[object]:
    """A request iterator the test writes to one message at a time (None ends it)."""
    while (item := inbox.get()) is not None:
        yield item


def _search(collection: str) -> pb.SearchRequest:
    q = np.zeros((1, DIM), np.float32)
    vectors = pb.Vectors(data=q.tobytes(), dim=DIM, count=1)
    return pb.SearchRequest(collection=collection, queries=vectors, options=pb.SearchOptions(k=2))


def _upsert(seq: int, point: int) -> pb.UpsertStreamRequest:
    v = np.full((1, DIM), float(point), np.float32)
    batch = pb.UpsertRequest(collection="base", ids=pb.Ids(ints=pb.IntIds(values=[point])),
                             vectors=pb.Vectors(data=v.tobytes(), dim=DIM, count=1))  # fmt: skip
    return pb.UpsertStreamRequest(seq=seq, batch=batch)


@pytest.fixture
def keyed(start_server: Callable[..., VecdbServer]) -> Iterator[tuple[VecdbServer, vecdb.Client]]:
    """A server with an admin key and a small "base" collection, and its admin client."""
    srv = start_server(auth={"admin_key": ROOT})
    with vecdb.connect(f"127.0.0.1:{srv.port}", api_key=ROOT, timeout=20) as root:
        root.create_collection("base", DIM, "l2", index="flat")
        root.upsert("base", [1], np.ones((1, DIM), np.float32))
        yield srv, root


def test_a_key_revoked_while_its_search_stream_is_open_stops_at_the_next_request(
    keyed: tuple[VecdbServer, vecdb.Client],
) -> None:
    """A SearchStream opened with a key answers no request after the key is revoked: the
    next one is UNAUTHENTICATED (INVALID_KEY), as a new call with that key would be."""
    srv, root = keyed
    made = root.create_api_key("read")  # type: ignore[attr-defined]
    inbox: queue.Queue[object] = queue.Queue()
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        answers = pb_grpc.VectorDBStub(ch).SearchStream(
            _feed(inbox), metadata=(("authorization", f"Bearer {made.key}"),), timeout=20
        )
        inbox.put(_search("base"))
        assert list(next(answers).ids.ints.values)[:1] == [1]
        root.revoke_api_key(made.info.id)  # type: ignore[attr-defined]
        inbox.put(_search("base"))
        with pytest.raises(grpc.RpcError) as info:
            next(answers)
        inbox.put(None)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert status.error_of(info.value).reason == "INVALID_KEY"


def test_a_key_revoked_while_its_upsert_stream_is_open_writes_nothing_more(
    keyed: tuple[VecdbServer, vecdb.Client],
) -> None:
    """An UpsertStream opened with a write key is refused (UNAUTHENTICATED) at its first
    message after the key is revoked, and that message's points are not written."""
    srv, root = keyed
    made = root.create_api_key("write")  # type: ignore[attr-defined]
    inbox: queue.Queue[object] = queue.Queue()
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        acks = pb_grpc.VectorDBStub(ch).UpsertStream(
            _feed(inbox), metadata=(("authorization", f"Bearer {made.key}"),), timeout=20
        )
        inbox.put(_upsert(0, 100))
        assert next(acks).upserted == 1
        root.revoke_api_key(made.info.id)  # type: ignore[attr-defined]
        inbox.put(_upsert(1, 101))
        with pytest.raises(grpc.RpcError) as info:
            next(acks)
        inbox.put(None)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [r.id for r in root.get("base", [100, 101], with_vectors=False)] == [100]


@pytest.mark.parametrize("scope", ["tenants", "collections"])
def test_create_api_key_refuses_one_string_as_its_scope(
    keyed: tuple[VecdbServer, vecdb.Client], scope: str
) -> None:
    """`create_api_key("read", tenants="acme")` is INVALID_ARGUMENT naming the field, sync
    and async, and makes no key (it made one bound to the tenants "a", "c", "e", "m")."""
    srv, root = keyed
    before = root.list_api_keys()  # type: ignore[attr-defined]
    with pytest.raises(vecdb.InvalidArgument) as info:
        root.create_api_key("read", **{scope: "acme"})  # type: ignore[attr-defined]
    assert info.value.field == scope and "one string" in str(info.value)

    async def in_async() -> None:
        async with vecdb.AsyncClient(f"127.0.0.1:{srv.port}", api_key=ROOT) as client:
            with pytest.raises(vecdb.InvalidArgument) as ainfo:
                await client.create_api_key("read", **{scope: "acme"})  # type: ignore[arg-type]
            assert ainfo.value.field == scope

    asyncio.run(in_async())
    assert root.list_api_keys() == before  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("auth", "field", "reason"),
    [
        ({"admin_key": ROOT, "read_only_keys": [ROOT]}, "auth.read_only_keys[0]", "DUPLICATE_KEY"),
        ({"admin_key": ROOT, "keys": [{"key": ROOT, "role": "read", "tenants": ["acme"]}]},
         "auth.keys[0].key", "DUPLICATE_KEY"),
        ({"admin_key": ROOT + " "}, "auth.admin_key", "BAD_KEY"),
        ({"admin_key": ROOT, "read_only_keys": ["reader-key-0001", " reader-key-0002"]},
         "auth.read_only_keys[1]", "BAD_KEY"),
    ],
)  # fmt: skip
def test_a_config_key_given_twice_or_with_spaces_around_stops_the_start(
    start_server: Callable[..., VecdbServer], auth: dict[str, object], field: str, reason: str
) -> None:
    """The same key in two config entries (one role or scope was silently dropped: the admin
    key became a tenant's read key) or a key with spaces around (it could never match) is
    INVALID_ARGUMENT at start, naming the entries and never the key."""
    with pytest.raises(vecdb.InvalidArgument) as info:
        start_server(auth=auth)
    assert (info.value.field, info.value.reason) == (field, reason)
    assert ROOT not in str(info.value)


@pytest.mark.parametrize("call", ["get_collection", "list_collections", "list_tenants",
                                  "collection_exists"])  # fmt: skip
def test_a_tenant_keys_calls_naming_no_tenant_count_against_its_rate_quota(
    start_server: Callable[..., VecdbServer], call: str
) -> None:
    """A key bound to a tenant over its requests/s quota is refused (TENANT_RATE_QUOTA)
    whatever it calls: the collection calls that name no tenant were never charged, so it
    could make them at any rate."""
    auth = {"admin_key": ROOT, "keys": [{"key": "acme-key-000001", "role": "read",
                                         "tenants": ["acme"]}]}  # fmt: skip
    quotas = {"tenants": {"acme": {"requests_per_second": 0.1, "burst": 2}}}
    srv = start_server(auth=auth, quotas=quotas)
    target = f"127.0.0.1:{srv.port}"
    with vecdb.connect(target, api_key=ROOT, timeout=20) as root:
        root.create_collection("mt", DIM, "l2", index="flat", multi_tenant=True)
    args = () if call == "list_collections" else ("mt",)
    with vecdb.connect(target, api_key="acme-key-000001", timeout=20) as acme:
        getattr(acme, call)(*args)
        getattr(acme, call)(*args)
        with pytest.raises(vecdb.ResourceExhausted) as info:
            getattr(acme, call)(*args)
    assert info.value.reason == "TENANT_RATE_QUOTA" and "'acme'" in str(info.value)
