"""A database whose drains into a built SPANN index run in a child process
(`VECDB_DRAIN_CHILD_MIB=0`): searches stay exact-merged with the buffer while the child runs,
writes and deletes made meanwhile are kept, the result survives a reopen, and closing the
database while the child runs stops it and loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.index.spann import drain_child
from vecdb.kernels.scan import exact_topk

DIM, N, TAIL = 16, 20_000, 3000  # a tail under REBUILD_SHARE of the index: a drain
WAIT = 120.0
EVERY = {"max_postings": 4096, "prune_ratio": 1e9}  # every posting: the index's whole content


def _children() -> list[int]:
    """Live drain children of this process."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        pids += [int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()]
    alive = []
    for p in pids:
        try:
            mine = b"drain_child" in Path(f"/proc/{p}/cmdline").read_bytes()
            if mine and "\nState:\tZ" not in Path(f"/proc/{p}/status").read_text():
                alive.append(p)
        except FileNotFoundError:
            pass
    return alive


def _db(path: Path) -> Database:
    return Database(path, settings={"idle_seconds": 3600, "build_min_vectors": 1})


def _exact_ids(db: Database, x: np.ndarray, live: np.ndarray, q: np.ndarray) -> None:
    """The database answers every query exactly over the `live` rows of `x`."""
    rows, _ = exact_topk(q, x[live], "l2", 10)
    want = np.sort(live[rows], axis=1)
    got = np.sort(db.search("c", q, k=10, params=EVERY).ids, axis=1)
    assert (got == want).all()


def test_drain_in_child_with_writes_and_deletes_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the child drains the tail, searches see every vector (index + frozen buffer),
    and an upsert and a delete made meanwhile are in the result; all of it reopens."""
    monkeypatch.setenv(drain_child.ENV, "0")
    db = _db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = np.random.default_rng(0).standard_normal((N + TAIL + 100, DIM)).astype(np.float32)
    db.upsert("c", list(range(N)), x[:N])
    db.optimize("c")
    db.upsert("c", list(range(N, N + TAIL)), x[N : N + TAIL])
    done = threading.Event()
    during: list[bool] = []

    def meanwhile() -> None:
        deadline = time.monotonic() + WAIT
        while not _children() and time.monotonic() < deadline:
            time.sleep(0.005)
        during.append(bool(_children()))
        _exact_ids(db, x, np.arange(N + TAIL), x[N : N + 30] + 0.01)  # tail still buffered
        db.delete("c", list(range(0, 50)) + list(range(N, N + 50)))
        db.upsert("c", list(range(N + TAIL, N + TAIL + 100)), x[N + TAIL :])
        done.set()

    t = threading.Thread(target=meanwhile)
    t.start()
    db.optimize("c")
    t.join()
    assert done.is_set() and during == [True]
    db.optimize("c")
    live = np.setdiff1d(np.arange(len(x)), np.r_[np.arange(50), np.arange(N, N + 50)])
    info = db.get_collection("c")
    assert (info.indexed, info.buffered, info.index_state) == (len(live), 0, "ready")
    q = x[::97] + 0.01
    _exact_ids(db, x, live, q)
    db.close()
    assert not list((tmp_path / "db").rglob("build.*.tmp"))
    db = _db(tmp_path / "db")
    assert db.count("c") == len(live)
    _exact_ids(db, x, live, q)
    db.close()


def test_close_during_a_drain_child_stops_it_and_keeps_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(drain_child.ENV, "0")
    db = _db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = np.random.default_rng(1).standard_normal((N + 3900, DIM)).astype(np.float32)
    db.upsert("c", list(range(N)), x[:N])
    db.optimize("c")
    db.upsert("c", list(range(N, len(x))), x[N:])
    db.optimize("c", wait=False)
    deadline = time.monotonic() + WAIT
    while not _children() and time.monotonic() < deadline:
        time.sleep(0.005)
    (pid,) = _children()
    db.close()
    deadline = time.monotonic() + WAIT
    while pid in _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid not in _children()
    assert not list((tmp_path / "db").rglob("build.*.tmp"))
    db = _db(tmp_path / "db")  # the writes are kept (op log); the drain starts over
    assert db.count("c") == len(x)
    db.optimize("c")
    _exact_ids(db, x, np.arange(len(x)), x[::211] + 0.01)
    db.close()


def test_parent_killed_after_the_child_published_reopens_whole(tmp_path: Path) -> None:
    """The parent SIGKILLed between the child's last checkpoint and its own swap: the
    directory reopens at the child's checkpoint plus the op log, every point is there and
    found exactly."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from vecdb.engine import Database
        db = Database({str(tmp_path / "db")!r},
                      settings={{"idle_seconds": 3600, "build_min_vectors": 1}})
        db.create_collection("c", dim={DIM}, metric="l2",
                             index_params={{"vector_dtype": "float32"}})
        x = np.random.default_rng(2).standard_normal(({N + TAIL}, {DIM})).astype(np.float32)
        db.upsert("c", list(range({N})), x[:{N}])
        db.optimize("c")
        db.upsert("c", list(range({N}, {N + TAIL})), x[{N}:])
        db.delete("c", list(range(10)))
        print("go", flush=True)
        db.optimize("c")
        print("survived", flush=True)
        """
    )
    env = dict(os.environ, **{drain_child.ENV: "0", "VECDB_KILL_AT": "drain_child"})
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == -9 and out.stdout.split() == ["go"], out.stderr[-2000:]
    x = np.random.default_rng(2).standard_normal((N + TAIL, DIM)).astype(np.float32)
    db = _db(tmp_path / "db")
    live = np.arange(10, N + TAIL)
    assert db.count("c") == len(live)
    db.optimize("c")
    _exact_ids(db, x, live, x[::131] + 0.01)
    db.close()


@pytest.mark.slow
def test_sigkill_during_drain_children_loses_no_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's crash test with every drain in a child (kills land in the parent while
    children run, and in children's checkpoints' aftermath)."""
    monkeypatch.setenv(drain_child.ENV, "0")
    sys.path.insert(0, str(Path(__file__).parent))
    import test_engine_crash

    test_engine_crash.test_sigkill_loses_no_acknowledged_write(tmp_path, "spann")
