"""The engine crash writer's acknowledged state, checked against a reopened database.

`tests/engine/crash_writer.py` upserts, deletes and optimizes in a loop, printing "try-ack G
ids" / "ack G ids" (and "try-del" / "del") around each request; `test_engine_crash._fold`
folds those lines into the acknowledged state and the request in flight. `check_acked` holds
a reopened database to it: every acknowledged write exact (vector and payload), the request
in flight wholly applied or not at all, the count right, and searches reading every posting
equal to the exact top-k over what RocksDB returns (tie-aware; float16 postings within their
rounding). Shared by the power-cut and kill-point tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from oracles import ALL_POSTINGS, FLOAT16, FLOAT32, assert_search_matches, distances

from vecdb.engine import Database

ENGINE_TESTS = Path(__file__).parents[1] / "engine"
sys.path.insert(0, str(ENGINE_TESTS))
from crash_writer import ID_RANGE, vector_of  # noqa: E402
from test_engine_crash import _fold  # noqa: E402

WRITER = ENGINE_TESTS / "crash_writer.py"


def check_acked(db: Database, lines: list[str], index: str) -> tuple[int, int, int]:
    """Acknowledged state exact, in-flight request whole or absent, searches exact: (acked
    requests, live points, whether the in-flight request landed)."""
    state: dict[int, tuple[str, int]] = {}
    pending = _fold(lines, state)
    records = {r.id: r for r in db.get("c", list(range(ID_RANGE)))}
    got = {i: int(r.payload["gen"]) for i, r in records.items()}
    want = {i: g for i, (op, g) in state.items() if op == "ack"}
    landed = 0
    if pending is not None:
        op, gen, ids = pending
        after = dict(want)
        for i in ids:
            if op == "ack":
                after[i] = gen
            else:
                after.pop(i, None)
        seen = {i: got.get(i) for i in ids}
        if seen == {i: after.get(i) for i in ids}:
            want, landed = after, 1
        else:
            assert seen == {i: want.get(i) for i in ids}, f"torn in-flight {op} of {len(ids)} ids"
    assert got == want, f"{sum(got.get(i) != g for i, g in want.items())} acknowledged ids differ"
    for i, r in records.items():
        np.testing.assert_array_equal(r.vector, vector_of(i, got[i]))
    assert db.count("c") == len(records)
    if records:
        ids = sorted(records)
        base = np.stack([records[i].vector for i in ids])
        rng = np.random.default_rng(len(lines))
        queries = np.concatenate(
            [base[rng.choice(len(ids), 10)], rng.standard_normal((10, base.shape[1]))]
        )
        queries = queries.astype(np.float32)
        k = min(10, len(ids))
        params = ALL_POSTINGS if index == "spann" else None
        res = db.search("c", queries, k=k, params=params)
        assert_search_matches(res, ids, distances(base, queries, "l2"), k,
                              FLOAT16 if index == "spann" else FLOAT32)  # fmt: skip
    acked = sum(1 for line in lines if line.startswith(("ack ", "del ")))
    return acked, len(records), landed
