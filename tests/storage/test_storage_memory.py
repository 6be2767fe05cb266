"""What RocksDB holds in memory, as `stats()` reports it: each column family's block cache
(RocksDB's default LRU cache of 32 MiB per family, which vecdb does not set) and memtables.
A bound, not a leak: blocks of dropped collections stay until evicted (the create / build /
drop drift of ~16 KB a cycle, bench/RESULTS.md, 2026-12-07)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import vecdb
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV
from vecdb.storage.layout import CF_META, CF_PAYLOAD, COLUMN_FAMILIES

MiB = 2**20


def test_a_familys_block_cache_is_bounded_by_rocksdbs_default(tmp_path: Path) -> None:
    """60 MiB of values read back: the family's cache stops at 32 MiB."""
    kv = KV(tmp_path / "kv")
    try:
        value = os.urandom(4000)
        for b in range(15):
            batch = kv.batch()
            for i in range(1000):
                batch.put(CF_PAYLOAD, (b * 1000 + i).to_bytes(8, "big"), value)
            kv.commit(batch)
        kv.flush()
        assert kv.memory()["block_cache"][CF_PAYLOAD] < MiB  # nothing read yet
        for key in range(15_000):
            assert kv.get(CF_PAYLOAD, key.to_bytes(8, "big")) == value
        used = kv.memory()["block_cache"][CF_PAYLOAD]
        assert 30 * MiB < used <= 32 * MiB
    finally:
        kv.close()


def test_stats_report_rocksdb_memory_by_family(tmp_path: Path) -> None:
    with vecdb.connect(tmp_path / "db") as client:
        client.create_collection("c", dim=4, metric="l2")
        client.upsert("c", list(range(100)), np.ones((100, 4)), [{"n": i} for i in range(100)])
        memory = client.stats()["rocksdb_memory"]
        assert set(memory) == {"block_cache", "memtables"}
        for part in memory.values():
            assert set(part) == set(COLUMN_FAMILIES)
            assert all(isinstance(v, int) and v >= 0 for v in part.values())
        assert memory["memtables"][CF_PAYLOAD] > 0  # the payloads just written


def test_the_write_ahead_log_is_bounded_during_a_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load whose every commit also writes a few bytes to a second family (as each upsert
    writes its sequence number) keeps at most about `WAL_MAX_BYTES` of log files, not a log
    of everything it wrote beside the table files (80 MiB written, a 16 MiB cap here)."""
    monkeypatch.setattr(kvmod, "WAL_MAX_BYTES", 16 * MiB)
    kv = KV(tmp_path / "kv")
    try:
        value = os.urandom(4000)
        for b in range(20):  # 20 commits of 4 MiB
            batch = kv.batch()
            for i in range(1000):
                batch.put(CF_PAYLOAD, (b * 1000 + i).to_bytes(8, "big"), value)
            batch.put(CF_META, b"load-step", b.to_bytes(8, "big"))
            kv.commit(batch)
        logs = sum(p.stat().st_size for p in (tmp_path / "kv").glob("*.log"))
        assert logs <= 2 * 16 * MiB, f"{logs / MiB:.1f} MiB of write-ahead log"
        assert kv.get(CF_PAYLOAD, (19_999).to_bytes(8, "big")) == value
    finally:
        kv.close()
