"""A shard follows the catalog: real Database in tmp_path, real etcd."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import etcd3
import pytest
from etcd_proc import EtcdProcess

from vecdb.cluster.catalog import EtcdCatalog
from vecdb.cluster.shard_sync import SYNC_FILE, ShardSync
from vecdb.engine.database import Database
from vecdb.errors import FailedPrecondition, FormatError, InvalidArgument

SHARDS = ["127.0.0.1:1", "127.0.0.1:2"]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def names(db: Database) -> set[str]:
    return {info.name for info in db.list_collections()}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "shard0")
    yield database
    database.close()


def applied(db: Database) -> int:
    return int(json.loads((db.path / SYNC_FILE).read_text())["applied_epoch"])


def test_catalog_create_and_drop_reach_a_running_shard(
    db: Database, etcd_catalog: EtcdCatalog
) -> None:
    """Collections created in the catalog appear on the shard with the catalog's settings;
    a drop removes it; the applied epoch is persisted."""
    etcd_catalog.init_shards(SHARDS)
    sync = ShardSync(db, etcd_catalog, 0)
    sync.start()
    try:
        etcd_catalog.create_collection("docs", {"dim": 4, "metric": "l2", "multi_tenant": True})
        wait_for(lambda: "docs" in names(db))
        info = db.get_collection("docs")
        assert (info.dim, info.metric.value, info.multi_tenant) == (4, "l2", True)
        etcd_catalog.drop_collection("docs")
        wait_for(lambda: "docs" not in names(db))
        wait_for(lambda: applied(db) == etcd_catalog.state().epoch)
    finally:
        sync.stop()


def test_a_shard_that_was_down_catches_up_on_start(
    tmp_path: Path, etcd_catalog: EtcdCatalog
) -> None:
    """Created, dropped and re-created (other settings) while the shard was down: on start
    it drops the old collection, creates the new ones, keeps its local-only collection."""
    etcd_catalog.init_shards(SHARDS)
    etcd_catalog.create_collection("old", {"dim": 4})
    etcd_catalog.create_collection("again", {"dim": 4})
    path = tmp_path / "shard1"
    db = Database(path)
    sync = ShardSync(db, etcd_catalog, 1)
    sync.start()
    db.create_collection("local_only", 3)
    db.upsert("again", [7], [[1.0, 0.0, 0.0, 0.0]])
    sync.stop()
    db.close()
    # The shard is down.
    etcd_catalog.drop_collection("old")
    etcd_catalog.drop_collection("again")
    etcd_catalog.create_collection("again", {"dim": 6})
    etcd_catalog.create_collection("fresh", {"dim": 2, "metric": "ip"})
    db = Database(path)
    try:
        sync = ShardSync(db, etcd_catalog, 1)
        sync.start()  # applies synchronously before following
        try:
            assert names(db) == {"again", "fresh", "local_only"}
            assert db.get_collection("again").dim == 6
            assert db.count("again") == 0  # the old one's points went with it
            assert applied(db) == etcd_catalog.state().epoch
        finally:
            sync.stop()
    finally:
        db.close()


def test_a_tombstone_is_applied_once(db: Database, etcd_catalog: EtcdCatalog) -> None:
    """After a drop was applied, a collection of that name made locally is not dropped again
    by later syncs or a restart."""
    etcd_catalog.init_shards(SHARDS)
    etcd_catalog.create_collection("x", {"dim": 4})
    sync = ShardSync(db, etcd_catalog, 0)
    sync.start()
    wait_for(lambda: "x" in names(db))
    etcd_catalog.drop_collection("x")
    wait_for(lambda: "x" not in names(db))
    db.create_collection("x", 5)
    etcd_catalog.create_collection("y", {"dim": 4})
    wait_for(lambda: "y" in names(db))
    sync.stop()
    again = ShardSync(db, etcd_catalog, 0)
    assert again.apply(etcd_catalog.state()) == []
    again.start()
    again.stop()
    assert db.get_collection("x").dim == 5


def test_bad_catalog_entries_are_logged_and_skipped(
    db: Database,
    etcd_server: EtcdProcess,
    etcd_catalog: EtcdCatalog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A spec the engine refuses, unknown spec keys, or settings that differ from the local
    collection: logged, skipped, the other collections still created, the shard runs on."""
    db.create_collection("clash", 3)
    # Logged from the first read of the raw keys on, which may be the catalog's watch thread
    # at any moment after the puts: capture from before them.
    with caplog.at_level(logging.WARNING, logger="vecdb.cluster"):
        etcd_catalog.create_collection("clash", {"dim": 4})
        raw = etcd3.client("127.0.0.1", int(etcd_server.endpoint.rsplit(":", 1)[1]))
        try:
            p = etcd_catalog.prefix
            raw.put(f"{p}/collections/baddim", json.dumps({"dim": -1}))
            raw.put(f"{p}/collections/badkey", json.dumps({"dim": 4, "colour": "red"}))
            raw.put(f"{p}/collections/notjson", b"{nope")
        finally:
            raw.close()
        etcd_catalog.create_collection("good", {"dim": 4})  # bumps the epoch after the raw keys
        etcd_catalog.refresh()
        sync = ShardSync(db, etcd_catalog, 0)
        sync.start()
        sync.stop()
    assert names(db) == {"clash", "good"}
    assert db.get_collection("clash").dim == 3
    text = caplog.text
    assert "'baddim' not applied" in text and "'badkey' not applied" in text
    assert "'clash' not applied" in text and "notjson ignored" in text


def test_a_directory_belongs_to_one_shard_index(db: Database) -> None:
    """Started as another shard than the one the directory was claimed by:
    FailedPrecondition naming both; a bad index: InvalidArgument."""
    from vecdb.cluster.catalog import MemoryCatalog

    catalog = MemoryCatalog(SHARDS)
    sync = ShardSync(db, catalog, 0)
    sync.start()
    sync.stop()
    with pytest.raises(FailedPrecondition) as e:
        ShardSync(db, catalog, 1).start()
    assert "shard 0" in e.value.message and "shard 1" in e.value.message
    other = Database(db.path.parent / "shard2")
    with pytest.raises(FailedPrecondition) as outside:  # the map has shards 0 and 1
        ShardSync(other, catalog, 2).start()
    other.close()
    assert outside.value.reason == "WRONG_SHARD" and "2 shards" in outside.value.message
    for bad in (-1, True, "0", 5000):
        with pytest.raises(InvalidArgument) as bad_e:
            ShardSync(db, catalog, bad)  # type: ignore[arg-type]
        assert bad_e.value.field == "shard_index"


def test_a_damaged_sync_file_is_a_clear_error(db: Database) -> None:
    """Bad JSON, bad magic or an unknown version: FormatError naming the file."""
    from vecdb.cluster.catalog import MemoryCatalog

    path = db.path / SYNC_FILE
    for text, words in [
        ("{", "unreadable"),
        ('{"magic": "x"}', "bad magic"),
        ('{"magic": "vecdb-cluster-sync", "format_version": 9}', "version 9"),
    ]:
        path.write_text(text)
        with pytest.raises(FormatError) as e:
            ShardSync(db, MemoryCatalog(SHARDS), 0).start()
        assert str(path) in e.value.message and words in e.value.message


def test_a_collection_re_created_directly_survives_the_older_tombstone(
    db: Database, etcd_catalog: EtcdCatalog
) -> None:
    """A router drops and re-creates a collection on the shard itself faster than the sync
    follows: the older tombstone does not drop the new collection (nor its points)."""
    etcd_catalog.init_shards(SHARDS)
    etcd_catalog.create_collection("x", {"dim": 4})
    sync = ShardSync(db, etcd_catalog, 0)
    assert sync.apply(etcd_catalog.refresh()) == ["create x"]
    # What the router does, while this sync has not seen it yet:
    etcd_catalog.drop_collection("x")
    db.drop_collection("x")
    etcd_catalog.create_collection("x", {"dim": 4})
    db.create_collection("x", 4, exist_ok=True)
    db.upsert("x", [1], [[1.0, 0.0, 0.0, 0.0]])
    dropped_state = etcd_catalog.state()
    assert sync.apply(dropped_state) == []
    assert db.count("x") == 1
    # Later a real drop of this incarnation is applied.
    etcd_catalog.drop_collection("x")
    assert sync.apply(etcd_catalog.state()) == ["drop x"]
    assert "x" not in names(db)


def test_a_tombstoned_collection_never_recorded_is_dropped_unless_listed_again(
    tmp_path: Path,
) -> None:
    """A shard killed before its sync saw a collection a router made on it: on return the
    tombstone drops it if the catalog no longer lists the name, and keeps it if the name was
    created again (it may be the new one)."""
    from vecdb.cluster.catalog import MemoryCatalog

    catalog = MemoryCatalog(SHARDS)
    db = Database(tmp_path / "s")
    try:
        catalog.create_collection("seed", {"dim": 2})
        ShardSync(db, catalog, 0).apply(catalog.state())  # the directory's first sync
        db.create_collection("gone", 4)  # made by a router, never seen by the sync
        db.create_collection("again", 4)
        catalog.create_collection("gone", {"dim": 4})
        catalog.create_collection("again", {"dim": 4})
        catalog.drop_collection("gone")
        catalog.drop_collection("again")
        catalog.create_collection("again", {"dim": 4})
        changes = ShardSync(db, catalog, 0).apply(catalog.state())
        assert changes == ["drop gone"]
        assert names(db) == {"seed", "again"}
    finally:
        db.close()


def test_a_stale_state_does_not_bring_back_a_dropped_collection(db: Database) -> None:
    """Applying a state older than a drop the catalog already knows of does not create the
    dropped collection again."""
    from vecdb.cluster.catalog import MemoryCatalog

    catalog = MemoryCatalog(SHARDS)
    catalog.create_collection("x", {"dim": 4})
    old = catalog.state()
    catalog.drop_collection("x")
    sync = ShardSync(db, catalog, 0)
    assert sync.apply(old) == []
    assert "x" not in names(db)
    catalog.create_collection("x", {"dim": 4})
    assert sync.apply(catalog.state()) == ["create x"]


def test_a_change_without_collection_news_costs_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant placed (a new epoch, same collections and tombstones): no sync file rewrite,
    no create_collection call; a collection the shard could not create is tried again."""
    from vecdb.cluster.catalog import MemoryCatalog

    catalog = MemoryCatalog(SHARDS)
    catalog.create_collection("docs", {"dim": 4, "multi_tenant": True})
    sync = ShardSync(db, catalog, 0)
    assert sync.apply(catalog.state()) == ["create docs"]
    before = (db.path / SYNC_FILE).stat()
    calls: list[str] = []
    real = db.create_collection

    def counting(name: str, *args: object, **kwargs: object) -> object:
        calls.append(name)
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(db, "create_collection", counting)
    catalog.place_tenant("docs", "acme")
    assert sync.apply(catalog.state()) == []
    after = (db.path / SYNC_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert calls == []
    # A create that failed is not remembered as applied: the next epoch tries it again.
    monkeypatch.setattr(db, "create_collection", lambda *a, **k: (_ for _ in ()).throw(
        FailedPrecondition("disk full", field="data")))  # fmt: skip
    catalog.create_collection("more", {"dim": 4})
    assert sync.apply(catalog.state()) == []
    monkeypatch.setattr(db, "create_collection", counting)
    catalog.place_tenant("docs", "other")
    assert sync.apply(catalog.state()) == ["create more"]


def test_a_restored_catalog_is_followed_from_its_epoch(db: Database) -> None:
    """etcd restored to an older epoch: nothing is dropped for being absent, and a drop made
    after the restore is applied although its epoch was used before."""
    from vecdb.cluster.catalog import MemoryCatalog

    old = MemoryCatalog(SHARDS)
    for i in range(5):
        old.create_collection(f"c{i}", {"dim": 2})
    sync = ShardSync(db, old, 0)
    sync.apply(old.state())
    assert applied(db) == 5
    restored = MemoryCatalog(SHARDS)
    restored.create_collection("c0", {"dim": 2})
    sync.catalog = restored
    assert sync.apply(restored.state()) == []
    assert names(db) == {f"c{i}" for i in range(5)}
    restored.drop_collection("c0")  # epoch 2: below the 5 applied from the old catalog
    assert sync.apply(restored.state()) == ["drop c0"]
    assert applied(db) == 2
