"""Scroll pages are read at one instant, and a scroll under concurrent writes returns every
point that exists for its whole duration exactly once.

Real RocksDB in tmp_path; writes from the test thread in the middle of a page (through the
point table's id iterator) and from a writer thread running beside whole scrolls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV

DIM = 4
FILTERS: list[dict[str, Any] | None] = [None, {"g": 0}, {"h": 0}, {"h": {"$ne": 1}}]


def vec(i: int, gen: int) -> np.ndarray:
    return np.random.default_rng([i, gen]).standard_normal(DIM).astype(np.float32)


def pay(i: int, gen: int) -> dict[str, Any]:
    return {"g": i % 2, "h": i % 2, "gen": gen}  # "g" is indexed, "h" is not


def put(db: Database, ids: list[int], gen: int) -> None:
    db.upsert("c", ids, np.stack([vec(i, gen) for i in ids]), [pay(i, gen) for i in ids])


def check_record(rec: Any) -> None:
    """A record's vector and payload come from the same write."""
    np.testing.assert_array_equal(rec.vector, vec(rec.id, rec.payload["gen"]))


def test_view_reads_one_instant_across_column_families(tmp_path: Path) -> None:
    """Gets and scans through a view see neither later puts nor later deletes, in any
    column family, while the live store does."""
    kv = KV(tmp_path / "kv")
    try:
        batch = kv.batch()
        for i in range(10):
            batch.put(kvmod.CF_IDS, b"k%d" % i, b"old")
            batch.put(kvmod.CF_PAYLOAD, b"k%d" % i, b"old")
        kv.commit(batch)
        with kv.view() as view:
            batch = kv.batch()
            batch.put(kvmod.CF_IDS, b"k1", b"new")
            batch.delete(kvmod.CF_PAYLOAD, b"k2")
            batch.put(kvmod.CF_PAYLOAD, b"k99", b"new")
            kv.commit(batch)
            kv.flush()  # table files change under the view too
            assert view.get(kvmod.CF_IDS, b"k1") == b"old"
            assert view.multi_get(kvmod.CF_PAYLOAD, [b"k2", b"k99"]) == [b"old", None]
            scanned = list(view.scan_prefix(kvmod.CF_PAYLOAD, b"k"))
            assert scanned == [(b"k%d" % i, b"old") for i in range(10)]
            assert [v for _, v in view.scan_range(kvmod.CF_IDS, b"k0", b"k3")] == [b"old"] * 3
        assert kv.get(kvmod.CF_IDS, b"k1") == b"new"
        assert kv.get(kvmod.CF_PAYLOAD, b"k2") is None
    finally:
        kv.close()


@pytest.mark.parametrize("flt", FILTERS)
def test_point_replaced_or_deleted_mid_page_is_neither_skipped_nor_doubled(
    tmp_path: Path, flt: dict[str, Any] | None
) -> None:
    """Writes committed while a page is being read (after its first ids) do not change the
    page: a point replaced further on is returned once, in its old version; a point deleted
    further on is still returned; a new point is not."""
    with Database(tmp_path / "db") as db:
        db.create_collection("c", dim=DIM, metric="l2", index="flat")
        db.create_payload_index("c", "g", "int")
        ids = list(range(0, 4000, 2))
        put(db, ids, gen=1)
        pts = db.collections["c"].core.points
        real = pts.id_range

        def meddling(start: bytes | None, src: Any = None) -> Iterator[tuple[bytes, int]]:
            for n, pair in enumerate(real(start, src)):
                if n == 700:  # in the middle of the page's second chunk
                    put(db, [2000, 3000], gen=2)  # replaced: new slots
                    db.delete("c", [2500])
                    put(db, [2001], gen=2)  # new
                yield pair

        pts.id_range = meddling  # type: ignore[method-assign]
        records, nxt = db.scroll("c", filter=flt, limit=10_000, with_vectors=True)
        del pts.id_range
        want = ids  # even ids: every filter matches them
        assert [r.id for r in records] == want and nxt is None
        for rec in records:
            check_record(rec)
            assert rec.payload["gen"] == 1
        after, _ = db.scroll("c", filter=flt, limit=10_000, with_vectors=True)
        got = {r.id: r.payload["gen"] for r in after}
        assert 2500 not in got and got[2000] == got[3000] == 2
        assert got.get(2001) == (2 if flt is None else None)  # odd ids do not match the others


@pytest.mark.parametrize("flt", FILTERS)
def test_scroll_under_concurrent_writes_returns_stable_points_once(
    tmp_path: Path, flt: dict[str, Any] | None
) -> None:
    """While a writer replaces stable points (same id, new version) and inserts and deletes
    volatile ones, every full scroll returns each matching stable point exactly once, ids
    ascending and never twice, each record whole (vector and payload of one write)."""
    with Database(tmp_path / "db") as db:
        db.create_collection("c", dim=DIM, metric="l2", index="flat")
        db.create_payload_index("c", "g", "int")
        stable = list(range(0, 3000, 3))
        volatile = [i for i in range(3000) if i % 3]
        put(db, stable, gen=0)
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            rng = np.random.default_rng(7)
            gen = 0
            try:
                while not stop.is_set():
                    gen += 1
                    put(db, rng.choice(stable, 40, replace=False).tolist(), gen)
                    vol = rng.choice(volatile, 60, replace=False).tolist()
                    put(db, vol, gen)
                    db.delete("c", rng.choice(volatile, 60, replace=False).tolist())
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for _ in range(3):
                seen: list[int] = []
                offset: Any = None
                while True:
                    page, offset = db.scroll(
                        "c", filter=flt, limit=97, offset=offset, with_vectors=True
                    )
                    for rec in page:
                        check_record(rec)
                        assert flt is None or rec.payload["g"] == 0
                    seen.extend(r.id for r in page)
                    if offset is None:
                        break
                assert seen == sorted(set(seen)), "ids repeated or out of order"
                want = {i for i in stable if flt is None or i % 2 == 0}
                assert want <= set(seen)
        finally:
            stop.set()
            thread.join()
        assert errors == []
