"""A closed database holds no file of its data directory open: no descriptor and no map,
also of a posting file a compaction retired, without waiting for the cycle collector."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np

import vecdb


def open_files(under: Path) -> list[str]:
    """Files under `under` (deleted ones included) this process holds a descriptor of; a
    Python mmap keeps a descriptor of its own, so a live map shows here too."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the listing's own descriptor, closed meanwhile)
            continue
        if target.startswith(str(under)) and "/collections/" in target:
            out.add(target)
    return sorted(out)


def test_close_lets_go_of_current_and_retired_posting_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    gc.collect()
    gc.disable()  # the collector is what let go of the maps before
    try:
        db = vecdb.connect(tmp_path / "db")
        db.create_collection("c", 16, "l2", index="spann")
        db.upsert("c", list(range(4000)), x)
        db.optimize("c")  # built: a posting file, mapped by the warm reader
        db.search("c", x[:3], 5)
        db.delete("c", list(range(0, 4000, 2)))
        db.optimize("c")  # half the entries dead: compacted into a new posting file
        stats = db.stats("c")
        assert db.count("c") == 2000
        db.close()
        del db
        left = open_files(tmp_path)
        assert left == [], (left, stats["index"].get("counters"))
    finally:
        gc.enable()


def test_close_lets_go_of_a_document_collections_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    docs = [rng.standard_normal((int(rng.integers(2, 9)), 16)).astype(np.float32)
            for _ in range(600)]  # fmt: skip
    gc.collect()
    gc.disable()
    try:
        db = vecdb.connect(tmp_path / "db")
        db.create_collection("d", 16, kind="multivector")
        db.upsert_documents("d", list(range(600)), docs)
        db.optimize("d")  # trained: codes, cells and the row file
        db.search_documents("d", docs[0], 5)
        db.delete("d", list(range(0, 600, 2)))
        db.optimize("d")
        assert db.count("d") == 300
        db.close()
        del db
        assert open_files(tmp_path) == []
    finally:
        gc.enable()
