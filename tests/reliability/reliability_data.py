"""Shared data and checks of the reliability tests: a seeded collection, exact answers from
the source vectors, and the file-damage operations of the corruption sweep.

Every search here reads every posting (`ALL`), so the index's answer equals the exact one
unless a point is lost, stale or corrupt: any difference is a wrong result, never
approximation. Counts are CI-sized; `VECDB_RELIABILITY_SCALE` multiplies them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vecdb.engine import Database
from vecdb.kernels.scan import exact_topk

SCALE = max(1, int(os.environ.get("VECDB_RELIABILITY_SCALE", "1")))
DIM = 16
N = 2000
K = 10
ALL = {"max_postings": 4096, "prune_ratio": 1e9}  # every posting: exact unless damaged
SETTINGS = {"idle_seconds": 3600, "build_min_vectors": 1, "drain_vectors": 1_000_000}


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def queries(n: int = 30) -> np.ndarray:
    return vectors(n, seed=12345)


def open_db(path: Path, **settings: float) -> Database:
    return Database(path, settings={**SETTINGS, **settings})


def build(path: Path, n: int = N, io: str = "mmap", seed: int = 0) -> np.ndarray:
    """A database at `path` with collection "c" of n points (ids 0..n-1) built into a SPANN
    index and checkpointed; returns the vectors."""
    x = vectors(n, seed)
    db = open_db(path)
    db.create_collection(
        "c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32", "io": io}
    )
    for lo in range(0, n, 1000):
        db.upsert("c", list(range(lo, min(n, lo + 1000))), x[lo : lo + 1000])
    db.optimize("c")
    db.close()
    return x


def exact_ids(base: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    rows, _ = exact_topk(q, base, "l2", k)
    return rows.astype(np.int64)


def wrong_rows(got: np.ndarray, base: np.ndarray, q: np.ndarray, k: int = K) -> int:
    """Rows of `got` (ids; ids are row numbers of `base`) that differ from the exact top-k,
    as sets (equal distances may swap places)."""
    want = exact_ids(base, q, k)
    return sum(
        set(g.tolist()) != set(w.tolist()) for g, w in zip(np.asarray(got), want, strict=True)
    )


def index_dir(path: Path) -> Path:
    (only,) = sorted((path / "collections").iterdir())
    return only


def posting_file(path: Path) -> Path:
    (only,) = sorted(index_dir(path).glob("postings.*.bin"))
    return only
