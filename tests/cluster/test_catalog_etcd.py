"""The etcd catalog against a real etcd: key layout, CAS under contention, etcd loss."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import etcd3
import pytest
from etcd_proc import EtcdProcess

from vecdb.cluster import catalog_etcd
from vecdb.cluster.catalog import CatalogState, CatalogUnavailable, EtcdCatalog
from vecdb.errors import AlreadyExists, NotFound, Unavailable

SHARDS = [f"shard-{i}.vecdb:7700" for i in range(8)]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def second(etcd_server: EtcdProcess, etcd_catalog: EtcdCatalog) -> Iterator[EtcdCatalog]:
    """Another process's view: a second catalog on the same prefix."""
    other = EtcdCatalog(etcd_server.endpoint, prefix=etcd_catalog.prefix, timeout=2.0)
    yield other
    other.close()


def raw_client(server: EtcdProcess) -> etcd3.MultiEndpointEtcd3Client:
    return etcd3.client("127.0.0.1", int(server.endpoint.rsplit(":", 1)[1]), timeout=2)


def test_key_layout_is_the_documented_one(
    etcd_server: EtcdProcess, etcd_catalog: EtcdCatalog
) -> None:
    """epoch, shards, collections/<name>, dropped/<name>, tenants/<collection>/<tenant>,
    JSON values; a drop removes the collection's tenant keys."""
    c = etcd_catalog
    c.init_shards(SHARDS[:2])
    c.create_collection("a", {"dim": 3, "multi_tenant": True})
    c.create_collection("b", {"dim": 3})
    c.place_tenant("a", "t.1")
    c.add_tenant_shards("a", "t.1", [1])
    c.drop_collection("b")
    raw = raw_client(etcd_server)
    try:
        found = {m.key.decode(): json.loads(v) for v, m in raw.get_prefix(c.prefix + "/")}
    finally:
        raw.close()
    p = c.prefix
    assert found == {
        f"{p}/epoch": 6,
        f"{p}/shards": SHARDS[:2],
        f"{p}/collections/a": {"dim": 3, "metric": "cosine", "id_type": "int", "kind": "dense",
                               "index": None, "index_params": None, "multi_tenant": True},
        f"{p}/dropped/b": 6,
        f"{p}/tenants/a/t.1": {"home": 0, "shards": [0, 1]},
    }  # fmt: skip
    c.drop_collection("a")
    raw = raw_client(etcd_server)
    try:
        keys = {m.key.decode() for _, m in raw.get_prefix(c.prefix + "/")}
    finally:
        raw.close()
    assert keys == {f"{p}/epoch", f"{p}/shards", f"{p}/dropped/a", f"{p}/dropped/b"}


def test_changes_reach_another_catalog_through_the_watch(
    etcd_catalog: EtcdCatalog, second: EtcdCatalog
) -> None:
    """A change made through one catalog shows in the other's cached state (no refresh) and
    in its watch callbacks, epochs in order."""
    seen: list[int] = []
    second.watch(lambda s: seen.append(s.epoch))
    etcd_catalog.init_shards(SHARDS[:3])
    etcd_catalog.create_collection("docs", {"dim": 4, "multi_tenant": True})
    etcd_catalog.place_tenant("docs", "acme")
    wait_for(lambda: bool(seen) and seen[-1] == 3)  # callbacks run after the cache is set
    assert second.state() == etcd_catalog.state()
    assert seen == sorted(set(seen))


def test_a_change_judged_on_a_stale_cache_reads_etcd_before_failing(
    etcd_catalog: EtcdCatalog, second: EtcdCatalog
) -> None:
    """A collection created through another catalog a moment ago (this cache may not have it
    yet): placing a tenant in it, or creating it again, goes by etcd, not the cache."""
    second.init_shards(SHARDS[:2])
    for i in range(5):
        second.create_collection(f"new{i}", {"dim": 4, "multi_tenant": True})
        assert etcd_catalog.place_tenant(f"new{i}", "t").home == 0
        spec = {"dim": 4, "multi_tenant": True}
        expected = second.state().collections[f"new{i}"]
        assert etcd_catalog.create_collection(f"new{i}", spec) == expected
        second.drop_collection(f"new{i}")
        with pytest.raises(NotFound):
            etcd_catalog.drop_tenant(f"new{i}", "t")


def test_a_lost_race_plans_again_on_the_transactions_own_read(
    etcd_catalog: EtcdCatalog, second: EtcdCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change planned on a cache another catalog has since moved past loses the
    compare-and-swap; the failed transaction itself carries the prefix as it now stands, so
    the change is planned again on that and commits, with no separate range read."""
    etcd_catalog.init_shards(SHARDS[:2])
    wait_for(lambda: second.state().shards == tuple(SHARDS[:2]))
    with etcd_catalog._state_lock:
        stale = (etcd_catalog._state, etcd_catalog._revision, etcd_catalog._epoch_mod)
    second.create_collection("theirs", {"dim": 4})
    wait_for(lambda: "theirs" in etcd_catalog.state().collections)
    with etcd_catalog._state_lock:  # as if the watch had not delivered their change yet
        etcd_catalog._state, etcd_catalog._revision, etcd_catalog._epoch_mod = stale
    reads = []
    real_read = etcd_catalog._read
    monkeypatch.setattr(etcd_catalog, "_read", lambda: reads.append(1) or real_read())
    races = etcd_catalog.lost_races
    etcd_catalog.create_collection("mine", {"dim": 8})
    assert etcd_catalog.lost_races == races + 1
    assert reads == []
    state = etcd_catalog.state()
    assert {"theirs", "mine"} <= set(state.collections)
    assert state.epoch == stale[0].epoch + 2
    assert real_read()[0].collections == state.collections


def test_concurrent_changes_from_two_catalogs_never_lose_one(
    etcd_catalog: EtcdCatalog, second: EtcdCatalog
) -> None:
    """Threads on two catalogs race: each collection is created by exactly one racer (the
    others get AlreadyExists naming dim), each tenant placed once, concurrent
    add_tenant_shards all land in the union, and the epoch counts exactly the winning
    changes."""
    etcd_catalog.init_shards(SHARDS)
    catalogs = [etcd_catalog, second]
    names = [f"c{i}" for i in range(4)]

    def create(racer: int, name: str) -> int | None:
        try:
            catalogs[racer % 2].create_collection(name, {"dim": racer + 1, "multi_tenant": True})
            return racer + 1
        except AlreadyExists as e:
            assert e.field == "dim"
            return None

    with ThreadPoolExecutor(8) as pool:
        results = {n: list(pool.map(create, range(6), [n] * 6)) for n in names}
    for name, dims in results.items():
        winners = [d for d in dims if d is not None]
        assert len(winners) == 1, (name, dims)
        assert etcd_catalog.refresh().collections[name].spec["dim"] == winners[0]
    epoch = etcd_catalog.state().epoch
    assert epoch == 1 + len(names)

    def place(racer: int) -> tuple[str, int]:
        tenant = f"t{racer % 5}"
        return tenant, catalogs[racer % 2].place_tenant("c0", tenant).home

    with ThreadPoolExecutor(8) as pool:
        placed = list(pool.map(place, range(20)))
    homes: dict[str, set[int]] = {}
    for tenant, home in placed:
        homes.setdefault(tenant, set()).add(home)
    assert all(len(h) == 1 for h in homes.values())  # everyone got the same placement
    assert sorted(h for (h,) in homes.values()) == [0, 1, 2, 3, 4]  # balanced: one each
    assert etcd_catalog.refresh().epoch == epoch + 5

    def add(racer: int) -> None:
        catalogs[racer % 2].add_tenant_shards("c0", "t0", [racer])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(8)))
    state = etcd_catalog.refresh()
    assert state.tenants[("c0", "t0")].shards == frozenset(range(8))
    assert state.epoch == epoch + 5 + 7  # t0's home was already in its set
    wait_for(lambda: second.state() == state)
    assert etcd_catalog.lost_races + second.lost_races > 0  # the races did happen


def test_etcd_down_keeps_the_cache_refuses_changes_and_recovers(
    etcd_server: EtcdProcess, etcd_catalog: EtcdCatalog, second: EtcdCatalog
) -> None:
    """etcd stopped: state() answers the cache, a change raises CatalogUnavailable naming the
    endpoint at once; etcd back: changes succeed again and the other catalog's watch
    resumes (it sees the new change without refresh)."""
    etcd_catalog.init_shards(SHARDS[:2])
    etcd_catalog.create_collection("kept", {"dim": 4})
    wait_for(lambda: second.state().epoch == 2)
    seen: list[CatalogState] = []
    second.watch(seen.append)
    etcd_server.stop()
    try:
        wait_for(lambda: not second.connected)
        assert "kept" in etcd_catalog.state().collections
        assert "kept" in second.state().collections
        started = time.monotonic()
        with pytest.raises(CatalogUnavailable) as e:
            etcd_catalog.create_collection("new", {"dim": 4})
        assert time.monotonic() - started < 2.0 + 1.0
        assert etcd_server.endpoint in e.value.message
        assert "catalog changes are refused; reads and writes go on" in e.value.message
        assert e.value.code == "UNAVAILABLE" and e.value.reason == "CATALOG_UNAVAILABLE"
        with pytest.raises(CatalogUnavailable):
            second.refresh()
        assert second.state().epoch == 2  # the cache is still there
    finally:
        etcd_server.start()
    deadline = time.monotonic() + 15
    while True:  # gRPC reconnects within its (capped) backoff
        try:
            etcd_catalog.create_collection("new", {"dim": 4})
            break
        except CatalogUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    wait_for(lambda: bool(seen) and seen[-1].epoch == 3)
    assert "new" in second.state().collections
    wait_for(lambda: second.connected)


def _wait_stopped(pid: int) -> None:
    """Until every thread of `pid` is stopped: SIGSTOP is delivered asynchronously, and a busy
    etcd thread could still answer a request sent at once (CI failed this test once with the
    change answered, on a loaded 2-core machine)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                continue
        if states and all(state in "Tt" for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop within 5 s")


def test_a_hung_etcd_fails_changes_within_the_timeout(
    etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    """etcd frozen (SIGSTOP): a change raises CatalogUnavailable after about `timeout`."""
    catalog = EtcdCatalog(etcd_server.endpoint, prefix=etcd_prefix, timeout=0.5)
    try:
        catalog.init_shards(SHARDS[:1])
        os.kill(etcd_server.pid, signal.SIGSTOP)
        try:
            _wait_stopped(etcd_server.pid)
            started = time.monotonic()
            with pytest.raises(CatalogUnavailable) as e:
                catalog.create_collection("x", {"dim": 2})
            assert 0.4 < time.monotonic() - started < 2.0
            assert "no answer within 0.5 s" in e.value.message
            assert catalog.state().shards == tuple(SHARDS[:1])
        finally:
            os.kill(etcd_server.pid, signal.SIGCONT)
        catalog.create_collection("x", {"dim": 2})
    finally:
        catalog.close()


def test_a_hung_etcd_breaks_the_watch(
    etcd_server: EtcdProcess, etcd_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd frozen (SIGSTOP): the idle watch notices through its keepalive ping and the
    catalog reports itself disconnected (grpcio waited 60 s for the ping's answer, so a
    hung etcd stayed 'connected' for 70 s: shards kept taking direct routes), then
    reconnects when etcd resumes. Keepalive at 5 s, etcd's least allowed interval."""
    monkeypatch.setattr(catalog_etcd, "KEEPALIVE_TIME_MS", 5_000)
    monkeypatch.setattr(catalog_etcd, "PING_TIMEOUT_MS", 1_000)
    catalog = EtcdCatalog(etcd_server.endpoint, prefix=etcd_prefix, timeout=0.5)
    try:
        wait_for(lambda: catalog.connected)
        os.kill(etcd_server.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not catalog.connected, timeout=30.0)  # ~6 s; 70 s before
        finally:
            os.kill(etcd_server.pid, signal.SIGCONT)
        wait_for(lambda: catalog.connected)
    finally:
        catalog.close()


def test_a_catalog_made_while_etcd_is_down_fills_its_cache_when_etcd_returns(
    etcd_server: EtcdProcess, etcd_catalog: EtcdCatalog
) -> None:
    """Construction does not need etcd; the cache starts empty and fills on its own."""
    etcd_catalog.init_shards(SHARDS[:2])
    etcd_server.stop()
    try:
        late = EtcdCatalog(etcd_server.endpoint, prefix=etcd_catalog.prefix, timeout=0.5)
        assert late.state().epoch == 0 and not late.connected
    finally:
        etcd_server.start()
    try:
        wait_for(lambda: late.state().shards == tuple(SHARDS[:2]))
    finally:
        late.close()


def test_several_endpoints_fail_over_and_are_all_named(
    etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    """A dead endpoint before the live one: changes go through; with every endpoint dead the
    error names each of them."""
    dead = "127.0.0.1:9"
    catalog = EtcdCatalog(f"{dead},{etcd_server.endpoint}", prefix=etcd_prefix, timeout=0.5)
    try:
        assert catalog.init_shards(SHARDS[:1]).epoch == 1
    finally:
        catalog.close()
    lost = EtcdCatalog(f"{dead},127.0.0.1:10", prefix=etcd_prefix, timeout=0.5)
    try:
        with pytest.raises(CatalogUnavailable) as e:
            lost.init_shards(SHARDS[:1])
        assert f"{dead}: connection failed" in e.value.message
        assert "127.0.0.1:10: connection failed" in e.value.message
    finally:
        lost.close()


def test_closed_catalog_refuses_changes_and_stops_its_thread(etcd_catalog: EtcdCatalog) -> None:
    """After close(): changes are Unavailable, the watch thread has ended, state() answers."""
    etcd_catalog.init_shards(SHARDS[:1])
    etcd_catalog.close()
    assert not etcd_catalog._thread.is_alive()
    assert etcd_catalog.state().epoch == 1
    with pytest.raises(Unavailable) as e:
        etcd_catalog.create_collection("x", {"dim": 2})
    assert e.value.reason == "CATALOG_CLOSED"


def test_an_etcd_whose_revision_went_back_is_reloaded(
    etcd_server: EtcdProcess,
    etcd_catalog: EtcdCatalog,
    second: EtcdCatalog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """etcd replaced by an empty one (its revision starts again, lower than the cache's):
    the catalog logs it, reloads, refresh() answers the new content, watchers get it whatever
    its epoch, and the watch follows the new etcd's changes."""
    etcd_catalog.init_shards(SHARDS[:2])
    for i in range(10):  # the old revision well above what the new etcd will reach
        etcd_catalog.create_collection(f"old{i}", {"dim": 2})
    wait_for(lambda: second.state().epoch == 11)
    seen: list[CatalogState] = []
    etcd_catalog.watch(seen.append)
    with caplog.at_level(logging.WARNING, logger="vecdb.cluster"):
        etcd_server.wipe()
        deadline = time.monotonic() + 15
        while True:  # second's cache is stale: its CAS fails, it reads etcd and plans again
            try:
                second.init_shards(SHARDS[:3])
                break
            except CatalogUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert second.state().epoch == 1 and not second.state().collections
        state = etcd_catalog.refresh()
        assert (state.epoch, state.shards, dict(state.collections)) == (1, tuple(SHARDS[:3]), {})
        wait_for(lambda: bool(seen) and seen[-1] == state)
    assert "etcd revision went back" in caplog.text and "catalog reloaded" in caplog.text
    second.create_collection("after", {"dim": 2})  # reaches the first one through its watch
    wait_for(lambda: "after" in etcd_catalog.state().collections)
    wait_for(lambda: bool(seen) and seen[-1].epoch == 2)
    wait_for(lambda: etcd_catalog.connected)
