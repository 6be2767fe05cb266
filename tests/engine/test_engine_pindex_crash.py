"""kill -9 never leaves payload index entries out of step with the points.

A child process (`pindex_crash_writer.py`) upserts, updates payloads and deletes on a
collection with payload indexes of every type; the test SIGKILLs it at random moments and,
after each reopen, checks every index against the stored payloads: its entries are exactly
those the live points' values call for (none missing, none stale), and for every value held
and some ranges, the indexed answer to a filter equals a brute-force scan of the payloads.
Trials: 6 by default, VECDB_CRASH_TRIALS to change.
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
from oracles import matches

from vecdb.engine import Database
from vecdb.engine.filters import parse, resolve
from vecdb.engine.payload_index import encode_value
from vecdb.engine.validate import encode_id
from vecdb.storage import kv as kvmod

sys.path.insert(0, str(Path(__file__).parent))
from pindex_crash_writer import ID_RANGE, INDEXES  # noqa: E402

TRIALS = int(os.environ.get("VECDB_CRASH_TRIALS", "6"))
WRITER = Path(__file__).parent / "pindex_crash_writer.py"


def run_and_kill(path: Path, seed: int, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(seed)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.05, 0.8))
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def check_indexes(db: Database) -> int:
    """Every index holds exactly the entries of the live points' payloads, and filters
    answered from it equal brute force; returns how many entries were checked."""
    core = db.collections["c"].core
    records = db.get("c", list(range(ID_RANGE)), with_vectors=False)
    ids = [r.id for r in records]
    slots = dict(zip(ids, core.points.lookup([encode_id(i) for i in ids]), strict=True))
    entries = 0
    assert core.pindex.types() == INDEXES
    for key, d in core.pindex.defs.items():
        assert d.ready, key
        fp = core.pindex.field_prefix(key)
        got = {k[len(fp) :] for k, _ in db.kv.scan_prefix(kvmod.CF_META, fp)}
        want = set()
        values = []
        for rec in records:
            value = resolve(rec.payload or {}, d.path)
            enc = encode_value(value, d.kind)
            if enc is not None:
                slot = slots[rec.id]
                assert slot is not None
                want.add(enc + kvmod.u64(slot))
                values.append(value)
        assert got == want, f"index {key!r}: {len(got - want)} stale, {len(want - got)} missing"
        entries += len(got)
        distinct = list({repr(v): v for v in values}.values())  # 1 and 1.0 both, True apart
        conds: list[Any] = [{"$eq": v} for v in distinct]
        if d.kind in ("number", "string") and values:
            pivot = sorted(values)[len(values) // 2]
            conds += [{"$gte": pivot}, {"$lt": pivot}, {"$ne": pivot}]
        for cond in conds[:40]:
            flt = {key: cond}
            compiled = parse(flt)
            assert compiled is not None and core.pindex.answerable(compiled)
            mask = core.pindex.plan(compiled, core.points.alive())
            assert mask is not None
            found = set(core.points.ids_of(np.flatnonzero(mask).astype(np.int64)).tolist())
            brute = {r.id for r in records if matches(r.payload, flt)}
            assert found == brute, flt
    return entries


@pytest.mark.slow
def test_sigkill_keeps_payload_indexes_in_step(tmp_path: Path) -> None:
    """Across TRIALS kills at random moments, every index equals its points' payloads."""
    rng = random.Random(77)
    path = tmp_path / "db"
    checked = 0
    for trial in range(TRIALS):
        run_and_kill(path, seed=trial + 1, rng=rng)
        with Database(path) as db:
            checked += check_indexes(db)
            assert db.count("c") == len(db.get("c", list(range(ID_RANGE)), with_vectors=False))
    assert checked > 1000, checked  # the writer really filled the indexes
