"""kill -9 of `vecdb serve` while snapshots are taken and restored, a collection is created,
filled and dropped, and optimize runs, beside a writer: after each restart every
acknowledged write is there, the restored collection equals its snapshot, nothing an
interrupted snapshot, restore or drop left behind remains (`*.tmp`, an index directory no
collection names, a restore's rows), and every listed snapshot is whole.

Complements test_reliability_server_kill.py (writes, tenant drops, document training,
optimize) with the calls that copy and remove whole collections. Real `vecdb serve`
processes on 127.0.0.1, real RocksDB and SPANN. Trials: 3, VECDB_CRASH_TRIALS to change.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import vecdb
from vecdb.engine import snapshot_files as sf
from vecdb.engine.inspect import verify

TRIALS = int(os.environ.get("VECDB_CRASH_TRIALS", "2"))
SERVE = [sys.executable, "-m", "vecdb", "serve", "--port", "0", "--no-metrics"]
DIM = 16
W_IDS = 3000  # ids of the written collection "w"
R_IDS = 1500  # points of "r", restored again and again from one snapshot


def vec(ids: Any, gen: int) -> np.ndarray:
    return np.stack(
        [np.random.default_rng([int(i), gen]).standard_normal(DIM) for i in ids]
    ).astype(np.float32)


def start(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`vecdb serve` on `data`; (process, target) once it serves."""
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as err:
        proc = subprocess.Popen([*SERVE, "--data", str(data)], stdout=subprocess.DEVNULL,
                                stderr=err, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))  # fmt: skip
    end = time.monotonic() + 120
    while time.monotonic() < end:
        with open(log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            if line.startswith("{") and json.loads(line).get("msg") == "serving":
                return proc, "127.0.0.1:" + json.loads(line)["address"].rsplit(":", 1)[1]
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"server did not start: {log.read_text()[-3000:]}")


def load(target: str, stop: threading.Event, acked: dict[int, int], pending: list[Any]) -> None:
    """The writer of "w": upserts of 30 ids, each id's last acknowledged generation kept;
    `pending` holds the request in flight (landed whole or not at all)."""
    gen = max(acked.values()) + 1
    with vecdb.connect(target, timeout=5) as c:
        while not stop.is_set():
            gen += 1
            ids = random.sample(range(W_IDS), 30)
            pending[0] = (ids, gen)
            try:
                c.upsert("w", ids, vec(ids, gen))
            except vecdb.VecdbError:
                return
            for i in ids:
                acked[i] = gen
            pending[0] = None


def admin(target: str, stop: threading.Event, job: str, base: str, done: list[str]) -> None:
    """One kind of whole-collection call, again and again until the server dies."""
    with vecdb.connect(target, timeout=5) as c:
        while not stop.is_set():
            try:
                if job == "snapshot":
                    c.create_snapshot(random.choice(["w", "r"]))
                elif job == "restore":
                    c.restore_snapshot("r", base)
                elif job == "drop":
                    c.create_collection("d", DIM, "l2", index="spann", exist_ok=True)
                    c.upsert("d", list(range(800)), vec(range(800), 9))
                    c.drop_collection("d")
                else:
                    c.optimize("w")
                done.append(job)
            except vecdb.VecdbError as exc:
                if exc.code == "UNAVAILABLE" and "closed" not in exc.message:
                    return  # the server is gone (a restore's switch is retryable)


def test_kill_during_snapshot_restore_and_drop(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    proc, target = start(data, log)
    with vecdb.connect(target, timeout=120) as c:
        c.create_collection("w", DIM, "l2", index="spann")
        c.upsert("w", list(range(W_IDS)), vec(range(W_IDS), 0))
        c.create_collection("r", DIM, "l2", index="spann")
        c.upsert("r", list(range(R_IDS)), vec(range(R_IDS), 5), [{"i": i} for i in range(R_IDS)])
        c.optimize("r")
        base = c.create_snapshot("r").name
    acked = dict.fromkeys(range(W_IDS), 0)
    rng = random.Random(7)
    done: list[str] = []
    try:
        for _trial in range(TRIALS):
            stop, pending = threading.Event(), [None]
            threads = [threading.Thread(target=load, args=(target, stop, acked, pending))] + [
                threading.Thread(target=admin, args=(target, stop, job, base, done))
                for job in ("snapshot", "restore", "drop", "optimize")
            ]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(1.0, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop.set()
            for t in threads:
                t.join()
            proc, target = start(data, log)
            with vecdb.connect(target, timeout=120) as c:
                got = {r.id: r.vector.tobytes() for r in c.get("w", list(range(W_IDS)), with_vectors=True)}  # fmt: skip
                if pending[0] is not None:  # the request in flight: whole or absent
                    ids, gen = pending[0]
                    landed = [got[i] == vec([i], gen)[0].tobytes() for i in ids]
                    assert all(landed) or not any(landed), "a torn upsert"
                    if all(landed):
                        acked.update(dict.fromkeys(ids, gen))
                lost = [i for i, g in acked.items() if got.get(i) != vec([i], g)[0].tobytes()]
                assert lost == [], f"{len(lost)} acknowledged points lost or changed"
                r = c.get("r", list(range(R_IDS)), with_vectors=True)
                assert c.count("r") == R_IDS
                assert all(x.vector.tobytes() == vec([x.id], 5)[0].tobytes() for x in r)
                assert all(x.payload == {"i": x.id} for x in r)
                live = len(c.list_collections())
                for coll in ("w", "r"):
                    for s in c.list_snapshots(coll):
                        where = data / "snapshots" / coll / s.name
                        sf.verify(where, sf.read_snapshot(where))
                        if s.name != base:
                            c.delete_snapshot(coll, s.name)  # keeps the directory small
            assert not [p for p in (data / "snapshots").rglob("*") if p.name.endswith(sf.TMP)]
            dirs = [
                p for p in (data / "collections").iterdir() if not p.name.endswith("quarantine")
            ]
            assert len(dirs) <= live, sorted(p.name for p in dirs)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    report = verify(data)
    assert report["ok"], [f for f in report["files"] if not f["ok"]]
    print(f"snapshot kill: {TRIALS} kills, calls done {sorted(set(done))} ({len(done)})")
