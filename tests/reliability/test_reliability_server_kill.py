"""kill -9 of the real server under mixed load: acknowledged lost = 0, torn requests = 0.

A `vecdb serve` process holds a multi-tenant dense SPANN collection "m" (tenants t0..t3 and
one victim tenant per trial) and a multivector collection "d" (its codebook trained in the
background while documents arrive). Three client threads load it over gRPC (`server_load`):
tenant upserts with grant_to, deletes, grants and revokes; document upserts and deletes;
optimize of either collection and the drop of the trial's victim tenant at a random moment.
The server is SIGKILLed at a random moment, restarted on the same directory (the recovery
time, spawn to serving, is measured), and every acknowledged request must be there exactly
(vectors, payloads, tokens, grantees seen through tenant-scoped gets, drops in force), each
request in flight all or nothing, searches find stored points; then the next trial loads the
restarted server. Extends tests/tenants/test_tenant_server_crash.py (one kill, tenant
isolation in depth) with many trials, documents, optimize and torn-request counting.
Trials: 3 by default, VECDB_CRASH_TRIALS to change (100 for the full run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from server_load import DIM, TENANTS, Admin, DenseWriter, DocWriter, Tally, doc_of, vector_of

import vecdb

TRIALS = int(os.environ.get("VECDB_CRASH_TRIALS", "3"))
SERVE = [sys.executable, "-m", "vecdb", "serve", "--port", "0", "--no-metrics"]


def start(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """`vecdb serve` on `data`: (process, port, seconds from spawn to serving)."""
    t0 = time.monotonic()
    with open(log, "wb") as err:
        proc = subprocess.Popen([*SERVE, "--data", str(data)], stdout=subprocess.DEVNULL,
                                stderr=err, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))  # fmt: skip
    while time.monotonic() - t0 < 120:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("msg") == "serving":
                port = int(json.loads(line)["address"].rsplit(":", 1)[1])
                return proc, port, time.monotonic() - t0
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"server did not start: {log.read_text()[-3000:]}")


def setup(target: str) -> None:
    with vecdb.connect(target, timeout=120) as c:
        c.create_collection("m", DIM, "l2", multi_tenant=True, index="spann",
                            index_params={"vector_dtype": "float32"})  # fmt: skip
        for t in TENANTS:
            c.create_tenant("m", t)
        c.create_collection("d", DIM, "cosine", kind="multivector",
                            index_params={"K": 16, "min_train_tokens": 600})  # fmt: skip


def searches(c: Any, dense: DenseWriter, docs: DocWriter, rng: random.Random) -> tuple[int, int]:
    """Stored points found by searching for themselves: (dense found, docs found) of 10 each
    (dense: exact vectors, scoped to the owner; docs: their own tokens)."""
    found_m = found_d = 0
    for i in rng.sample(sorted(dense.model), min(10, len(dense.model))):
        res = c.search("m", vector_of(i, dense.model[i][0]), k=1, tenant=TENANTS[i % len(TENANTS)])
        found_m += int(res.ids[0, 0]) == i
    for i in rng.sample(sorted(docs.model), min(10, len(docs.model))):
        res = c.search_documents("d", doc_of(i, docs.model[i]), k=1)
        found_d += int(res.ids[0, 0]) == i
    return found_m, found_d


@pytest.mark.slow
def test_sigkilled_server_under_mixed_load(tmp_path: Path) -> None:
    rng = random.Random(1313)
    data = tmp_path / "data"
    dense, docs, admin, tally = DenseWriter(), DocWriter(), Admin(), Tally()
    recover: list[float] = []
    found = [0, 0, 0]  # dense found, docs found, searched each
    proc, port, _ = start(data, tmp_path / "serve0.log")
    try:
        setup(f"127.0.0.1:{port}")
        for trial in range(TRIALS):
            target = f"127.0.0.1:{port}"
            with vecdb.connect(target, timeout=60) as c:
                victim = admin.setup_victim(c, trial)
            stop = threading.Event()
            kill_after = rng.uniform(0.5, 2.5)
            threads = [
                threading.Thread(target=dense.run, args=(target, stop, rng.random())),
                threading.Thread(target=docs.run, args=(target, stop, rng.random())),
                threading.Thread(target=admin.run, args=(target, stop, rng.random(), victim,
                                                         rng.uniform(0.0, kill_after))),
            ]  # fmt: skip
            for th in threads:
                th.start()
            time.sleep(kill_after)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
            stop.set()
            for th in threads:
                th.join(timeout=60)
            proc, port, seconds = start(data, tmp_path / f"serve{trial + 1}.log")
            recover.append(seconds)
            with vecdb.connect(f"127.0.0.1:{port}", timeout=60) as c:
                dense.check(c, tally)
                docs.check(c, tally)
                admin.check(c, tally)
                fm, fd = searches(c, dense, docs, rng)
                found[0] += fm
                found[1] += fd
                found[2] += 10
            assert tally.lost == 0 and tally.torn == 0, (trial, tally)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    tally.acked = dense.acks + docs.acks
    print(
        f"\nserver kill -9: {TRIALS} trials, {tally.acked} acknowledged writes "
        f"({dense.acks} dense, {docs.acks} documents), {admin.optimizes} optimize calls, "
        f"{tally.drops_acked} acknowledged tenant drops; in flight at the kill: "
        f"{tally.in_flight_landed} landed whole, {tally.in_flight_not} not at all; "
        f"lost {tally.lost}, torn {tally.torn}; recovery (spawn to serving) median "
        f"{statistics.median(recover):.2f} s, max {max(recover):.2f} s; self-search found "
        f"{found[0]}/{found[2]} dense, {found[1]}/{found[2]} documents"
    )
    assert tally.lost == 0 and tally.torn == 0
    assert dense.acks > TRIALS and docs.acks > TRIALS  # the load really ran between kills
    assert found[0] == found[2]  # a stored vector is its own nearest neighbour
    assert found[1] >= 0.9 * found[2]
