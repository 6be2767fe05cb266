"""A first bulk build is abandoned, once, when as many writes again arrived while it ran (their
drain would rebuild everything right after); within `rebuild_max_bytes` only. Real RocksDB
in tmp_path; the decision is checked on a real collection's buffer, then a load that races
the worker with its first build still ends with every point found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vecdb.engine import Database
from vecdb.engine.supersede import superseded_check

DIM = 16
QUIET = {"idle_seconds": 3600, "build_min_vectors": 1_000_000, "drain_vectors": 1_000_000}


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_first_build_is_superseded_once_by_as_many_new_writes(tmp_path: Path) -> None:
    db = Database(tmp_path / "db", settings=QUIET)
    db.create_collection("c", DIM, "l2", index="spann")
    db.upsert("c", list(range(300)), vectors(300, 1))
    core = db.collections["c"].core
    assert superseded_check(core, 301) is not None
    assert superseded_check(core, 301)() is False  # fewer arrived than it builds
    check = superseded_check(core, 300)
    assert check is not None and check() is True
    assert superseded_check(core, 10) is None  # once per collection
    db.close()


def test_no_supersede_past_the_rebuild_limit(tmp_path: Path) -> None:
    # 300 + 300 vectors of 64 bytes pass a 32 KiB rebuild limit: finishing is cheaper
    db = Database(tmp_path / "db", settings={**QUIET, "rebuild_max_bytes": 32 * 1024})
    db.create_collection("c", DIM, "l2", index="spann")
    db.upsert("c", list(range(300)), vectors(300, 2))
    check = superseded_check(db.collections["c"].core, 300)
    assert check is not None and check() is False
    db.close()


def test_load_racing_the_first_build_finds_everything(tmp_path: Path) -> None:
    """Writes keep coming while the worker runs the first build (bulk threshold 1 MiB): the
    build may be superseded or not; either way optimize() leaves every point indexed."""
    settings = {"idle_seconds": 3600, "bulk_build_bytes": 1 << 20, "drain_vectors": 1_000_000}
    db = Database(tmp_path / "db", settings=settings)
    db.create_collection("c", DIM, "l2", index="spann")
    x = vectors(40_000, 3)
    for lo in range(0, len(x), 2000):
        db.upsert("c", list(range(lo, lo + 2000)), x[lo : lo + 2000])
    db.optimize("c", wait=True)
    info = db.get_collection("c")
    assert info.indexed == len(x) and info.buffered == 0
    probe = np.arange(0, len(x), 997)
    res = db.search("c", x[probe], k=1, params={"max_postings": 4096, "prune_ratio": 1e9})
    np.testing.assert_array_equal(res.ids[:, 0], probe)
    db.close()
