"""The pieces of client-side routing without processes: a shard's `RouteCheck` over an
in-memory catalog (every reason to refuse a route, and the one case it holds), the client's
`RouteTable` rules, and `direct_routing` refused for embedded targets."""

from __future__ import annotations

import pytest

import vecdb
from vecdb.client.routes import STALE_ROUTE, Route, RouteTable, route_key
from vecdb.cluster.catalog import MemoryCatalog
from vecdb.cluster.shard_routes import RouteCheck
from vecdb.errors import FailedPrecondition, InvalidArgument, Unavailable, Unimplemented
from vecdb.rpc.v1 import vecdb_pb2 as pb

SPEC = {"dim": 4, "metric": "l2", "index": "flat"}


@pytest.fixture
def catalog() -> MemoryCatalog:
    c = MemoryCatalog(["s0:1", "s1:1"])
    c.create_collection("mt", {**SPEC, "multi_tenant": True})
    c.create_collection("plain", dict(SPEC))
    c.place_tenant("mt", "a")  # home 0
    c.place_tenant("mt", "b")  # home 1
    return c


def _refused(check: RouteCheck, route: str, req: object) -> str:
    with pytest.raises(FailedPrecondition) as info:
        check.check(route, req)
    assert info.value.reason == STALE_ROUTE and info.value.field == "route"
    return info.value.message


def test_route_check_holds_only_for_a_tenant_on_this_shard_alone(catalog: MemoryCatalog) -> None:
    check = RouteCheck(catalog, 0)
    epoch = catalog.state().epoch
    a = pb.SearchRequest(collection="mt", tenant="a")
    check.check(f"0@{epoch}", a)  # holds: nothing raised
    check.check("0@0", pb.CountRequest(collection="mt", tenant="a"))  # an older route too
    assert "shard 1" in _refused(check, f"1@{epoch}", a)
    assert "older" in _refused(check, f"0@{epoch + 1}", a)
    assert "malformed" in _refused(check, "zero", a)
    assert "not on this shard" in _refused(check, "0@0", pb.GetRequest(collection="mt", tenant="b"))
    assert "exactly one tenant" in _refused(check, "0@0", pb.ScrollRequest(collection="mt"))
    union = pb.SearchRequest(collection="mt", tenant="a", tenants=["b"])
    assert "exactly one tenant" in _refused(check, "0@0", union)
    assert "multi-tenant" in _refused(check, "0@0", pb.CountRequest(collection="plain", tenant="a"))
    assert "multi-tenant" in _refused(check, "0@0", pb.CountRequest(collection="gone", tenant="a"))
    catalog.add_tenant_shards("mt", "a", [1])  # a grant put a on shard 1 too
    assert "not on this shard alone" in _refused(check, "0@0", a)
    catalog.connected = False  # etcd away: the shard cannot vouch for any route
    assert "watch is down" in _refused(check, "0@0", pb.CountRequest(collection="mt", tenant="b"))


def test_route_table_rules() -> None:
    table = RouteTable()
    assert route_key("Search", pb.SearchRequest(collection="c", tenant="t")) == ("c", "t")
    assert route_key("Search", pb.SearchRequest(collection="c", tenant="t", tenants=["u"])) is None
    assert route_key("Count", pb.CountRequest(collection="c")) is None
    assert route_key("Delete", pb.DeleteRequest(collection="c", tenant="t")) is None
    one = table.learn(("c", "t"), pb.GetRouteResponse(shards=[2], addresses=["h:2"], epoch=7))
    assert one == Route(2, "h:2", 7) and table.known(("c", "t")) == (True, one)
    two = pb.GetRouteResponse(shards=[0, 1], addresses=["h:0", "h:1"], epoch=8)
    assert table.learn(("c", "u"), two) is None and table.known(("c", "u")) == (True, None)
    assert table.known(("c", "v")) == (False, None)
    stale = FailedPrecondition("stale route: x", reason=STALE_ROUTE)
    assert table.failed(("c", "t"), one, stale) and table.known(("c", "t")) == (False, None)
    assert not table.failed(("c", "t"), one, FailedPrecondition("a node's own"))
    assert table.reachable("h:2")
    assert table.failed(("c", "t"), one, Unavailable("down")) and not table.reachable("h:2")
    table.lookup_failed(Unavailable("router restarting"))
    assert table.enabled
    table.lookup_failed(Unimplemented("a node"))
    assert not table.enabled


def test_direct_routing_is_for_servers_only(tmp_path: object) -> None:
    with pytest.raises(InvalidArgument, match="direct_routing applies to remote targets") as err:
        vecdb.connect(":memory:", direct_routing=True)
    assert err.value.field == "direct_routing"
    with pytest.raises(InvalidArgument, match="direct_routing applies to remote targets"):
        vecdb.AsyncClient(":memory:", direct_routing=True)
    vecdb.connect(":memory:", direct_routing=False).close()
