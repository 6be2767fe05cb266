"""The clustered copies' disk (`engine.tenant_cluster_jobs`): files no active set owns are
swept after a reopen; the files stay under their budget by removing copies of multi-tenant
sets (oldest first) and, when that is not enough, by not building (the set keeps the walk,
answers exact all the same); one tenant's copy is never removed for room. Real SPANN
collection in RocksDB, real worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database, tenant_cluster_jobs, tenant_clusters, tenant_search
from vecdb.engine import tenant_cluster_file as cfile

DIM, K = 16, 10
SIZES = {"a": 3000, "b": 1000, "c": 600}
ALL = {"max_postings": 4096, "tenant_copy": 0}


def _data(n: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    centres = rng.normal(0, 4, size=(30, DIM))
    return (centres[rng.integers(0, 30, n)] + rng.normal(0, 1, (n, DIM))).astype(np.float32)


def _copies(db: Database) -> tenant_clusters.ClusterCopies:
    core = db._get("m").core
    return tenant_clusters.copies_of(core, tenant_search.store_of(core))


def _fill(db: Database, x: np.ndarray) -> dict[str, list[int]]:
    db.create_collection("m", DIM, "l2", index="spann", multi_tenant=True,
                         index_params={"vector_dtype": "float32"})  # fmt: skip
    ids, at = {}, 0
    for name, n in SIZES.items():
        db.create_tenant("m", name)
        ids[name] = list(range(at, at + n))
        db.upsert("m", ids[name], x[at : at + n], tenant=name)
        at += n
    db.optimize("m")
    return ids


def _key(db: Database, *names: str) -> tuple[object, ...]:
    ts = db._get("m").core.tenants
    return ("c", *sorted(ts.active(n).no for n in names))


def _ask(db: Database, x: np.ndarray, ids: dict[str, list[int]], *names: str) -> None:
    """Query the union of `names` (its copy is asked of the worker), wait, check exact."""
    members = sorted(i for n in names for i in ids[n])
    q = (x[members[:: max(1, len(members) // 12)]] + 0.05).astype(np.float32)
    for _ in range(2):  # before and after the worker's turn: exact either way
        res = db.search("m", q, k=K, tenants=list(names), params=ALL)
        got = [sorted(int(i) for i in row if i >= 0) for row in res.ids]
        d = ((x[members][None] - q[:, None]) ** 2).sum(2)
        want = [sorted(members[j] for j in np.argsort(r, kind="stable")[:K]) for r in d]
        assert got == want
        db.optimize("m")


def test_files_no_active_set_owns_are_swept_after_a_reopen(tmp_path: Path) -> None:
    x = _data(sum(SIZES.values()))
    with Database(tmp_path / "db") as db:
        ids = _fill(db, x)
        _ask(db, x, ids, "a")
        cc = _copies(db)
        keep = cc.path(_key(db, "a"))
        folder = keep.parent
        assert keep.is_file()
    (folder / "junk.bin").write_bytes(b"not a copy")
    (folder / "c-0123.bin.tmp").write_bytes(b"torn")
    ghost = cfile.path_for(tmp_path / "x", (999_999,)).name  # a tenant that never existed
    cfile.save(folder / ghost, (999_999,), cfile.parts_of(
        np.zeros(2, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
        np.zeros((1, DIM), np.float32), np.zeros((1, DIM), np.float32)), (64, 1, 1.0))  # fmt: skip
    misnamed = folder / "c-ffffffffffffffffffffffff.bin"
    misnamed.write_bytes(keep.read_bytes())  # a's copy under a name not its own
    with Database(tmp_path / "db") as db:
        db.optimize("m")
        assert sorted(p.name for p in folder.iterdir()) == [keep.name]
        _ask(db, x, ids, "a")  # still served, from the kept file
        assert _key(db, "a") in _copies(db).ready


def test_copies_stay_under_their_disk_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    x = _data(sum(SIZES.values()))
    monkeypatch.setattr(tenant_cluster_jobs, "COPY_DISK_FLOOR", 0)
    monkeypatch.setattr(tenant_cluster_jobs, "COPY_DISK_X_RAW", 100.0)  # room for both first
    with Database(tmp_path / "db") as db:
        ids = _fill(db, x)
        raw = db._get("m").core.index.state.n_live * 4 * DIM
        cc = _copies(db)
        _ask(db, x, ids, "a")
        _ask(db, x, ids, "a", "b")
        a_file, ab_file = cc.path(_key(db, "a")), cc.path(_key(db, "a", "b"))
        assert a_file.is_file() and ab_file.is_file()
        # room for a's copy and the (a, c) copy, not for (a, b) beside them
        replicas = tenant_cluster_jobs.DEFAULTS[1]
        need_ac = (SIZES["a"] + SIZES["c"]) * (replicas * (8 + 4 * DIM) + 8)
        budget = a_file.stat().st_size + need_ac + 1
        monkeypatch.setattr(tenant_cluster_jobs, "COPY_DISK_X_RAW", budget / raw)
        _ask(db, x, ids, "a", "c")
        assert not ab_file.exists() and _key(db, "a", "b") not in cc.ready
        assert cc.path(_key(db, "a", "c")).is_file() and a_file.is_file()
        assert _key(db, "a", "b") in cc.failed  # not asked again until a or b changes
        # no room at all: nothing more is built, nothing of one tenant removed
        monkeypatch.setattr(tenant_cluster_jobs, "COPY_DISK_X_RAW", 1e-9)
        builds = cc.builds
        _ask(db, x, ids, "b", "c")
        assert cc.builds == builds and not cc.path(_key(db, "b", "c")).exists()
        assert a_file.is_file() and _key(db, "b", "c") in cc.failed


def test_no_copy_is_built_into_the_writes_headroom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within its budget but with less free disk than the copy plus `room.HEADROOM`: not
    built (the set keeps the walk, answers exact all the same); with room it is."""
    from vecdb.index import room

    x = _data(sum(SIZES.values()))
    with Database(tmp_path / "db") as db:
        ids = _fill(db, x)
        cc = _copies(db)
        monkeypatch.setattr(room, "free_bytes", lambda directory: room.HEADROOM)
        builds = cc.builds
        _ask(db, x, ids, "a", "b")
        assert cc.builds == builds and not cc.path(_key(db, "a", "b")).exists()
        assert _key(db, "a", "b") in cc.failed
        monkeypatch.setattr(room, "free_bytes", lambda directory: 1 << 50)
        _ask(db, x, ids, "a", "c")
        assert cc.path(_key(db, "a", "c")).is_file()
