"""kill -9 and tenants: no acknowledged tenant write is lost, isolation holds after recovery,
and an interrupted drop_tenant resumes and ends with no trace of the tenant.

1. A child (`tenant_crash_writer.py`) upserts with grant_to, grants, revokes and deletes as
   owners in a loop, printing every acknowledgement; the test SIGKILLs it at a random moment,
   reopens the directory and checks: every point's existence, vector and grantees equal the
   acknowledged history (the points of the one operation in flight may show either state),
   the in-memory tenant sets equal the access rows in RocksDB, and randomized reads across
   tenants see exactly their grants (exact on flat, recall >= 0.9 on SPANN). The same child
   writes documents into a multi-tenant document collection ("multivector"): each document's
   tokens reopen exactly and each tenant's get / count / search see exactly its documents.
2. A child drops a large tenant and is SIGKILLed inside the cleanup (kill points between the
   cleanup's batches); after reopening the tenant is still "dropping", nobody sees its
   points, its name is refused; the worker resumes and afterwards nothing in RocksDB or
   memory names it and the name can be created again.
Trials: 3 per index by default, VECDB_CRASH_TRIALS to change.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tenant_crash_writer import ID_RANGE, TENANTS, document_of, owner_of, vector_of
from tenant_world import World, assert_memory_matches_rocksdb, build_world, check_isolation, load

from vecdb.engine import Database
from vecdb.engine.maintenance import MaintenanceWorker
from vecdb.errors import AlreadyExists, NotFound
from vecdb.storage import kv as kvmod

TRIALS = int(os.environ.get("VECDB_CRASH_TRIALS", "3"))
HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), *sys.path])}


def _run_and_kill(path: Path, index: str, seed: int, rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "tenant_crash_writer.py"), str(path), index, str(seed)],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.1, 1.2))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    return out.splitlines()


Model = dict[int, tuple[int, set[str]]]  # live id -> (generation, grantees)


def _fold(lines: list[str], model: Model) -> dict[int, int]:
    """Apply acknowledged operations; return the ids of the operation in flight at the kill,
    each with the generation that operation would have written."""
    pending: dict[int, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 6 or parts[0] not in ("try", "ack"):
            continue  # a line torn by the kill
        _, op, gen, _, raw_ids, raw_others = parts
        ids = [] if raw_ids == "-" else [int(i) for i in raw_ids.split(",")]
        others = set() if raw_others == "-" else set(raw_others.split(","))
        if parts[0] == "try":
            if op != "grant" and op != "revoke":
                pending = {}
            pending.update(
                {i: int(gen) if op == "up" else model.get(i, (-1, set()))[0] for i in ids}
            )
            continue
        for i in ids:
            if op == "up":
                kept = model[i][1] if i in model else set()
                model[i] = (int(gen), kept | others)
            elif op == "grant" and i in model:
                model[i][1].update(others)
            elif op == "revoke" and i in model:
                model[i][1].difference_update(others)
            elif op == "del":
                model.pop(i, None)
        pending = {}
    return pending


def _observed(db: Database) -> dict[int, tuple[np.ndarray, set[str]]]:
    core = db.collections["m"].core
    ts = core.tenants
    names = {t.no: t.name for t in ts.by_no.values()}
    out = {}
    if core.cfg.kind == "multivector":  # a document's first token is its point's vector
        by_id = {d.id: d.tokens[0] for d in db.get_documents("m", list(range(ID_RANGE)))}
    else:
        by_id = {r.id: r.vector for r in db.get("m", list(range(ID_RANGE)))}
    slots = core.points.lookup([i.to_bytes(8, "big") for i in range(ID_RANGE)])
    for i, slot in enumerate(slots):
        if slot is None:
            continue
        acl = ts.acls([slot])[0]
        assert acl is not None and names[acl[0]] == owner_of(i), f"id {i}: wrong owner"
        out[i] = (by_id[i], {names[g] for g in acl[1]})
    return out


def _documents_isolation(db: Database, seen: dict[int, tuple[np.ndarray, set[str]]]) -> None:
    """Each tenant's get_documents, count and searches see exactly its owned and granted
    documents, with their whole tokens."""
    for t in TENANTS:
        mine = sorted(i for i, (_, grants) in seen.items() if owner_of(i) == t or t in grants)
        got = db.get_documents("m", list(range(ID_RANGE)), tenant=t)
        assert [d.id for d in got] == mine and db.count("m", tenant=t) == len(mine)
        for d in got:
            assert np.array_equal(d.tokens[0], seen[d.id][0]) and len(d.tokens) == 3
        if mine:
            q = np.stack([seen[i][0] for i in mine[:3]])
            res = db.search_documents("m", q, k=50, tenant=t)
            assert set(res.ids[0][res.ids[0] >= 0].tolist()) <= set(mine)


@pytest.mark.slow
@pytest.mark.parametrize("index", ["flat", "spann", "multivector"])
def test_sigkill_keeps_acknowledged_tenant_writes_and_isolation(tmp_path: Path, index: str) -> None:
    """Across TRIALS kills every acknowledged tenant write reopens exactly, memory equals the
    access rows, and reads across tenants see exactly their grants."""
    rng = random.Random(99)
    path = tmp_path / "db"
    model: Model = {}
    for trial in range(TRIALS):
        pending = _fold(_run_and_kill(path, index, trial + 1, rng), model)
        db = Database(path)
        try:
            core = db.collections["m"].core
            with core.write_lock:
                assert_memory_matches_rocksdb(core)
            seen = _observed(db)
            for i in range(ID_RANGE):
                if i in pending:
                    continue  # in flight at the kill: either state
                assert (i in seen) == (i in model), f"trial {trial}: id {i} existence"
                if i in model:
                    gen, grants = model[i]
                    np.testing.assert_array_equal(seen[i][0], vector_of(i, gen))
                    if index == "multivector":
                        got = db.get_documents("m", [i])[0].tokens
                        np.testing.assert_array_equal(got, document_of(i, gen))
                    assert seen[i][1] == grants, f"trial {trial}: id {i} grantees"
            for i, tried in pending.items():  # adopt what the in-flight operation left
                if i in seen:
                    old = model[i][0] if i in model else None
                    landed = np.array_equal(seen[i][0], vector_of(i, tried))
                    assert landed or (
                        old is not None and np.array_equal(seen[i][0], vector_of(i, old))
                    ), f"trial {trial}: id {i} holds neither its old nor its in-flight vector"
                    gen = model[i][0] if i in model else -1
                    if np.array_equal(seen[i][0], vector_of(i, tried)):
                        gen = tried  # the in-flight upsert was committed
                    model[i] = (gen, seen[i][1])
                else:
                    model.pop(i, None)
            if index == "multivector":
                _documents_isolation(db, seen)
                continue
            w = World(list(TENANTS))
            for i, (vec, grants) in seen.items():
                w.vectors[i], w.owner[i], w.grants[i] = vec, owner_of(i), set(grants)
            done = check_isolation(db, "m", w, random.Random(trial), 300, exact=index == "flat")
            if index == "spann" and "recall" in done:
                assert done["recall"] >= 0.9, done
        finally:
            db.close()


DROP_CHILD = """
import sys
from vecdb.engine import Database
from vecdb.engine.maintenance import MaintenanceWorker
db = Database(sys.argv[1])
db.drop_tenant("mt", sys.argv[2])
print("dropped", flush=True)
db.optimize("mt")
print("finished", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["tenant_drop_slice:1", "tenant_drop_granted:2"])
def test_drop_tenant_interrupted_by_sigkill_resumes_and_leaves_no_trace(
    tmp_path: Path, kill_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop killed inside its cleanup is still in force after reopening and finishes."""
    rng = np.random.default_rng(4)
    w = build_world(rng, n_tenants=5, n_points=9000)
    victim = max(w.tenants, key=lambda t: len(w.visible([t])))
    path = tmp_path / "db"
    db = Database(path)
    db.create_collection("mt", 16, "l2", index="flat", multi_tenant=True)
    load(db, "mt", w)
    victim_no = db.collections["mt"].core.tenants.by_name[victim].no
    db.close()
    proc = subprocess.run(
        [sys.executable, "-c", DROP_CHILD, str(path), victim],
        capture_output=True, text=True, env={**ENV, "VECDB_KILL_AT": kill_at}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "dropped" in proc.stdout and "finished" not in proc.stdout
    for pid in [p for p, o in w.owner.items() if o == victim]:
        w.delete(pid)
    for g in w.grants.values():
        g.discard(victim)
    w.tenants.remove(victim)
    start = MaintenanceWorker.start
    monkeypatch.setattr(MaintenanceWorker, "start", lambda self: self)  # look first
    db = Database(path)
    try:
        core = db.collections["mt"].core
        # The worker has not started: the state is what recovery made of RocksDB.
        info = db.get_tenant("mt", victim)
        assert info.state == "dropping" and 0 < info.progress < 1, info
        with pytest.raises(NotFound):
            db.count("mt", tenant=victim)
        with pytest.raises(AlreadyExists):
            db.create_tenant("mt", victim)
        assert db.count("mt") == len(w.owner)
        with core.write_lock:
            assert_memory_matches_rocksdb(core)
        check_isolation(db, "mt", w, random.Random(5), 300, exact=True)
        start(db.worker)
        db.optimize("mt")  # the worker resumed the cleanup; wait for its end
        with pytest.raises(NotFound):
            db.get_tenant("mt", victim)
        with core.write_lock:
            assert_memory_matches_rocksdb(core)
        assert not _names_tenant(db, core, victim_no)
        check_isolation(db, "mt", w, random.Random(6), 300, exact=True)
        assert db.create_tenant("mt", victim).vectors == 0
    finally:
        db.close()


def _names_tenant(db: Database, core: Any, no: int) -> bool:
    """Whether any access row still names tenant number `no`."""
    from vecdb.engine.tenants import decode_acl

    if any(True for _ in db.kv.scan_prefix(kvmod.CF_META, core.tenants.tv_prefix(no))):
        return True
    head = kvmod.META_ACL + core.prefix
    for _, raw in db.kv.scan_prefix(kvmod.CF_META, head):
        owner, grantees = decode_acl(raw)
        if owner == no or no in grantees:
            return True
    return False
