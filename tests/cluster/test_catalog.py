"""The catalog's rules, the same for the in-memory catalog and the etcd one (a real etcd)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from vecdb.cluster.catalog import (
    Catalog,
    CatalogState,
    CollectionEntry,
    EtcdCatalog,
    MemoryCatalog,
    TenantPlacement,
)
from vecdb.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

SHARDS = ["s0:7700", "s1:7700", "s2:7700"]


@pytest.fixture(params=["memory", "etcd"])
def catalog(request: pytest.FixtureRequest) -> Iterator[Catalog]:
    if request.param == "memory":
        yield MemoryCatalog()
    else:
        yield request.getfixturevalue("etcd_catalog")


def test_fresh_catalog_is_empty_at_epoch_zero(catalog: Catalog) -> None:
    """A new prefix: no shards, collections, tombstones or tenants."""
    state = catalog.refresh()
    assert state == catalog.state()
    assert (state.epoch, state.shards, dict(state.collections)) == (0, (), {})
    assert (dict(state.dropped), dict(state.tenants)) == ({}, {})


def test_init_shards_once_then_same_list_is_a_noop_and_another_list_fails(catalog: Catalog) -> None:
    """The first call sets the shard map; the same list again changes nothing; another list
    is FailedPrecondition naming both lists."""
    state = catalog.init_shards(SHARDS)
    assert state.shards == tuple(SHARDS) and state.epoch == 1
    assert catalog.init_shards(SHARDS).epoch == 1
    with pytest.raises(FailedPrecondition) as e:
        catalog.init_shards(SHARDS[:2])
    assert "s2:7700" in e.value.message and str(SHARDS[:2]) in e.value.message
    assert e.value.field == "shards"
    assert catalog.state().shards == tuple(SHARDS) and catalog.state().epoch == 1


@pytest.mark.parametrize(
    "bad, field",
    [([], "shards"), ("a:1", "shards"), (["a:1", ""], "shards[1]"), (["a:1", "a:1"], "shards"),
     (["a b:1"], "shards[0]"), ([3], "shards[0]")],
)  # fmt: skip
def test_init_shards_rejects_bad_lists(bad: object, field: str) -> None:
    """Empty, a bare string, blank or duplicate addresses: InvalidArgument naming the entry."""
    catalog = MemoryCatalog()
    with pytest.raises(InvalidArgument) as e:
        catalog.init_shards(bad)  # type: ignore[arg-type]
    assert e.value.field == field
    assert catalog.state().epoch == 0


def test_create_collection_normalises_and_is_idempotent(catalog: Catalog) -> None:
    """Defaults filled in, metric lower-cased; the same spec again returns the entry without
    a new epoch; a different one is AlreadyExists naming the differing field."""
    entry = catalog.create_collection("docs", {"dim": 8, "metric": "L2"})
    assert entry == CollectionEntry(
        "docs",
        {"dim": 8, "metric": "l2", "id_type": "int", "kind": "dense", "index": None,
         "index_params": None, "multi_tenant": False},
    )  # fmt: skip
    epoch = catalog.state().epoch
    assert epoch == 1 and catalog.state().collections["docs"] == entry
    assert (
        catalog.create_collection("docs", {"dim": 8, "metric": "l2", "index_params": {}}) == entry
    )
    assert catalog.state().epoch == epoch
    with pytest.raises(AlreadyExists) as e:
        catalog.create_collection("docs", {"dim": 9, "metric": "l2"})
    assert e.value.field == "dim" and "dim=8" in e.value.message and "dim=9" in e.value.message
    assert catalog.state().epoch == epoch


@pytest.mark.parametrize(
    "name, spec, field",
    [("bad name", {"dim": 4}, "collection"), ("x" * 65, {"dim": 4}, "collection"),
     ("ok", {"dim": 0}, "dim"), ("ok", {}, "dim"), ("ok", {"dim": 4, "metric": "hamming"}, "metric"),
     ("ok", {"dim": 4, "colour": 1}, "spec.colour"), ("ok", {"dim": 4, "index_params": 3}, "index_params"),
     ("ok", {"dim": 4, "multi_tenant": "yes"}, "multi_tenant"), ("ok", [4], "spec")],
)  # fmt: skip
def test_create_collection_rejects_bad_arguments(name: str, spec: object, field: str) -> None:
    """Names by the engine's rule, spec values by the engine's validators: InvalidArgument
    naming the field, nothing written."""
    catalog = MemoryCatalog()
    with pytest.raises(InvalidArgument) as e:
        catalog.create_collection(name, spec)  # type: ignore[arg-type]
    assert e.value.field == field
    assert catalog.state().epoch == 0


def test_drop_collection_leaves_a_tombstone_and_removes_its_tenants(catalog: Catalog) -> None:
    """Drop: gone from collections, `dropped[name]` = the drop's epoch, its tenants gone,
    another collection's tenants kept; dropping again is NotFound."""
    catalog.init_shards(SHARDS)
    catalog.create_collection("a", {"dim": 4, "multi_tenant": True})
    catalog.create_collection("b", {"dim": 4, "multi_tenant": True})
    catalog.place_tenant("a", "t1")
    catalog.place_tenant("b", "t1")
    catalog.drop_collection("a")
    state = catalog.state()
    assert "a" not in state.collections and state.dropped == {"a": state.epoch}
    assert set(state.tenants) == {("b", "t1")}
    with pytest.raises(NotFound) as e:
        catalog.drop_collection("a")
    assert e.value.field == "collection"
    # Created again: the tombstone stays (a shard down through both must drop the old one).
    catalog.create_collection("a", {"dim": 5})
    assert catalog.state().dropped == {"a": state.epoch}


def test_place_tenant_balances_homes_and_returns_existing(catalog: Catalog) -> None:
    """New tenants go to the shard with the fewest tenants of that collection (ties: lowest
    index); placing an existing tenant returns it unchanged."""
    catalog.init_shards(SHARDS)
    catalog.create_collection("a", {"dim": 4, "multi_tenant": True})
    catalog.create_collection("b", {"dim": 4, "multi_tenant": True})
    homes = [catalog.place_tenant("a", f"t{i}").home for i in range(5)]
    assert homes == [0, 1, 2, 0, 1]
    assert catalog.place_tenant("b", "x").home == 0  # per collection
    catalog.drop_tenant("a", "t0")
    assert catalog.place_tenant("a", "new").home == 0
    epoch = catalog.state().epoch
    assert catalog.place_tenant("a", "t1") == TenantPlacement(1, frozenset({1}))
    assert catalog.state().epoch == epoch


def test_place_tenant_errors(catalog: Catalog) -> None:
    """Unknown collection: NotFound; not multi-tenant: InvalidArgument NOT_MULTI_TENANT; no
    shard map yet: FailedPrecondition; bad tenant name: InvalidArgument."""
    with pytest.raises(NotFound):
        catalog.place_tenant("nope", "t")
    catalog.create_collection("plain", {"dim": 4})
    catalog.create_collection("mt", {"dim": 4, "multi_tenant": True})
    with pytest.raises(FailedPrecondition):
        catalog.place_tenant("mt", "t")
    catalog.init_shards(SHARDS)
    with pytest.raises(InvalidArgument) as e:
        catalog.place_tenant("plain", "t")
    assert e.value.reason == "NOT_MULTI_TENANT"
    with pytest.raises(InvalidArgument) as e:
        catalog.place_tenant("mt", "bad/name")
    assert e.value.field == "tenant"
    assert catalog.place_tenant("mt", "acme.eu").home == 0  # a dot is a tenant character


def test_add_tenant_shards_unions_and_drop_tenant(catalog: Catalog) -> None:
    """Shards are added (union, home kept); a subset changes nothing; out-of-range shards are
    InvalidArgument; drop_tenant removes it, then NotFound."""
    catalog.init_shards(SHARDS)
    catalog.create_collection("mt", {"dim": 4, "multi_tenant": True})
    catalog.place_tenant("mt", "t")
    assert catalog.add_tenant_shards("mt", "t", [2]) == TenantPlacement(0, frozenset({0, 2}))
    epoch = catalog.state().epoch
    assert catalog.add_tenant_shards("mt", "t", {0, 2}).shards == {0, 2}
    assert catalog.state().epoch == epoch
    for bad in ([3], [-1], ["1"], [True]):
        with pytest.raises(InvalidArgument) as e:
            catalog.add_tenant_shards("mt", "t", bad)  # type: ignore[arg-type]
        assert e.value.field == "shards[0]"
    with pytest.raises(NotFound):
        catalog.add_tenant_shards("mt", "other", [1])
    catalog.drop_tenant("mt", "t")
    assert ("mt", "t") not in catalog.state().tenants
    with pytest.raises(NotFound):
        catalog.drop_tenant("mt", "t")


def test_every_change_bumps_the_epoch_and_watch_sees_it(catalog: Catalog) -> None:
    """watch calls back at once with the current state, then with each new state (epochs
    increasing) until cancelled."""
    seen: list[CatalogState] = []
    arrived = threading.Event()

    def callback(state: CatalogState) -> None:
        seen.append(state)
        if state.epoch == 3:
            arrived.set()

    cancel = catalog.watch(callback)
    assert seen[0].epoch == 0
    catalog.init_shards(SHARDS)
    catalog.create_collection("c", {"dim": 2})
    catalog.drop_collection("c")
    assert arrived.wait(5)
    epochs = [s.epoch for s in seen]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3
    assert seen[-1].dropped == {"c": 3}
    cancel()
    catalog.create_collection("d", {"dim": 2})
    catalog.refresh()
    assert seen[-1].epoch == 3


def test_memory_catalog_takes_shards_at_construction() -> None:
    """MemoryCatalog(shards) starts with that shard map at epoch 0."""
    catalog = MemoryCatalog(SHARDS)
    assert catalog.state().shards == tuple(SHARDS) and catalog.state().epoch == 0
    assert catalog.init_shards(SHARDS).epoch == 0


def test_etcd_catalog_rejects_bad_endpoints_and_prefix() -> None:
    """The endpoints string and prefix are judged before any connection."""
    for endpoints in ("", "host", "host:port", "host:0", "a:1,,b:2"):
        with pytest.raises(InvalidArgument) as e:
            EtcdCatalog(endpoints)
        assert e.value.field == "etcd"
    with pytest.raises(InvalidArgument) as e:
        EtcdCatalog("127.0.0.1:1", prefix="vecdb")
    assert e.value.field == "prefix"
