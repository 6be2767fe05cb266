"""Overwriting the same points again and again keeps a flat index (and a write buffer) bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import vecdb


def test_overwrites_of_hot_points_keep_flat_rows_bounded(tmp_path: Path) -> None:
    """500 upserts of the same 100 ids leave rows near the 100 live ones, not 50,000 dead
    rows that only an optimize would have dropped; every point stays searchable."""
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    with vecdb.connect(tmp_path / "db") as client:
        client.create_collection("hot", dim=8, metric="l2", index="flat")
        for _ in range(500):
            client.upsert("hot", list(range(100)), x)
        stats = client.stats("hot")["index"]
        assert stats["vectors"] == 100
        assert stats["rows"] < 10_000, stats  # before: 50,000 rows, 49,900 of them dead
        res = client.search("hot", x, k=1)
        assert res.ids[:, 0].tolist() == list(range(100))
