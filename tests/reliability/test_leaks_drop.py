"""Dropping collections leaves nothing behind: no table file and no open file per drop."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest

import vecdb

DROPS = 24


def _open_files_under(path: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
                n += 1
        except OSError:
            pass  # closed meanwhile
    return n


def test_drops_of_collections_without_payloads_leave_no_table_files(tmp_path: Path) -> None:
    """A collection that never wrote a payload, built (which flushes every column family) and
    dropped, again and again: table files and open files stay bounded, not one per drop."""
    db = tmp_path / "db"
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    with vecdb.connect(db) as client:

        def create_build_drop(times: int) -> None:
            for _ in range(times):
                client.create_collection("c", dim=8, metric="l2")
                client.upsert("c", list(range(300)), x)
                client.optimize("c")  # the bulk build flushes the memtables
                client.drop_collection("c")

        create_build_drop(4)
        tables, files = len(list((db / "kv").glob("*.sst"))), _open_files_under(db / "kv")
        create_build_drop(DROPS)
        # Before the fix: one more table file (and open file) per drop, 24 here.
        assert len(list((db / "kv").glob("*.sst"))) - tables < DROPS // 3
        assert _open_files_under(db / "kv") - files < DROPS // 3


def _deleted_files_held_under(path: Path) -> list[str]:
    """Deleted files under `path` this process still has open or mapped."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)) and target.endswith("(deleted)"):
            held.append(target)
    with open("/proc/self/maps") as maps:
        held += [
            line.split(None, 5)[-1].strip()
            for line in maps
            if str(path) in line and "(deleted)" in line
        ]
    return held


def test_dropped_index_files_are_released_on_an_idle_database(tmp_path: Path) -> None:
    """A built index's files are closed and unmapped once its collection is dropped, with
    no further work and no run of Python's cycle collector (an idle server may not run it
    for hours): the background worker's last job kept the collection until its next job,
    and the collection's own reference cycles until the collector ran, so its deleted
    posting and vector files (and their disk space) stayed held."""
    db = tmp_path / "db"
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    gc.collect()
    gc.disable()  # the collector of an idle process: it does not run on its own here
    try:
        with vecdb.connect(db) as client:
            client.create_collection("c", dim=8, metric="l2")
            client.upsert("c", list(range(300)), x)
            client.optimize("c")  # the worker's last job is this collection's
            client.search("c", x[0], k=3)
            client.drop_collection("c")
            held = _deleted_files_held_under(db)
            for _ in range(50):  # the worker may be between two loop steps: let it settle
                if not held:
                    break
                time.sleep(0.1)
                held = _deleted_files_held_under(db)
            assert held == []
    finally:
        gc.enable()


def test_a_dropped_collection_is_freed_without_the_cycle_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No reference cycle keeps a dropped collection alive (a built SPANN index, tenants,
    payload indexes, documents): refcounting frees it at the drop, so the drop never runs a
    full collection (10-300 ms by the heap's size; the test suite's drops paid ~3 minutes).
    Before: the tree's bound `head_vectors` and the tenant hooks' closures made cycles."""
    import vecdb.engine.database as database

    def no_collection() -> None:
        raise AssertionError("the drop needed the cycle collector")

    monkeypatch.setattr(database, "_release_cycles", no_collection)
    x = np.random.default_rng(2).standard_normal((600, 8)).astype(np.float32)
    gc.collect()
    gc.disable()
    try:
        with vecdb.connect(tmp_path / "db") as client:
            client.create_collection("dense", dim=8, metric="l2", multi_tenant=True)
            client.create_tenant("dense", "a")
            client.upsert("dense", list(range(600)), x, [{"n": i % 3} for i in range(600)],
                          tenant="a")  # fmt: skip
            client.create_payload_index("dense", "n", "int")
            client.optimize("dense")
            client.search("dense", x[0], k=3, tenant="a", filter={"n": 1})
            client.create_collection("docs", dim=8, metric="cosine", kind="multivector")
            client.upsert_documents("docs", [1, 2], [x[:5], x[5:12]])
            client.search_documents("docs", x[:2], k=1)
            for name in ("dense", "docs"):
                client.drop_collection(name)
    finally:
        gc.enable()
