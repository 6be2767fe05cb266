"""A database whose bulk builds run in a child process (`VECDB_BUILD_CHILD_MIB=0`): the
build is searched like any, and closing the database while the child builds stops it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from vecdb.engine import Database
from vecdb.index.spann import child, staging
from vecdb.kernels.scan import exact_topk

DIM, N = 16, 6000
WAIT = 60.0


def _children() -> list[int]:
    """Live child build processes of this process (zombies and other children, e.g. a
    session's servers, not counted)."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        pids += [int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()]
    alive = []
    for p in pids:
        try:
            builds = b"run_child" in Path(f"/proc/{p}/cmdline").read_bytes()
            if builds and "\nState:\tZ" not in Path(f"/proc/{p}/status").read_text():
                alive.append(p)
        except FileNotFoundError:
            pass
    return alive


def _db(path: Path) -> Database:
    return Database(path, settings={"idle_seconds": 3600, "build_min_vectors": 1})


def test_child_build_through_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(child.ENV, "0")
    db = _db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    db.upsert("c", list(range(N)), x)
    db.optimize("c")
    info = db.get_collection("c")
    assert (info.indexed, info.buffered, info.index_state) == (N, 0, "ready")
    q = x[:20] + 0.01
    rows, _ = exact_topk(q, x, "l2", 10)
    got = db.search("c", q, k=10, params={"max_postings": 4096, "prune_ratio": 1e9}).ids
    assert (np.sort(got, axis=1) == np.sort(rows, axis=1)).all()
    db.close()
    assert not list((tmp_path / "db").rglob("build.*.tmp"))


def test_close_during_a_child_build_stops_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(child.ENV, "0")
    db = _db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = np.random.default_rng(1).standard_normal((50_000, DIM)).astype(np.float32)
    db.upsert("c", list(range(len(x))), x)
    db.optimize("c", wait=False)
    deadline = time.monotonic() + WAIT
    while not _children() and time.monotonic() < deadline:
        time.sleep(0.01)
    (pid,) = _children()
    db.close()
    deadline = time.monotonic() + WAIT
    while pid in _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid not in _children()
    assert not list((tmp_path / "db").rglob("build.*.tmp"))
    db = _db(tmp_path / "db")  # the writes are kept; the build starts over
    assert db.count("c") == len(x)
    db.close()


def test_first_build_and_rebuild_gather_their_input_where_the_child_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffer's rows (first build) and the stored plus buffered rows (rebuild) are
    gathered in the staged file the build child maps (`spann.staging`), so the parent
    writes no copy of the vectors; the index answers exactly as before."""
    monkeypatch.setenv(child.ENV, "0")
    staged: list[int] = []
    written: list[tuple[int, ...]] = []
    staged_rows, write_array = staging.staged_rows, np.lib.format.write_array

    def stage(directory: Path, rows: int, dim: int) -> np.ndarray | None:
        staged.append(rows)
        return staged_rows(directory, rows, dim)

    def record(f: object, arr: np.ndarray, *a: object, **k: object) -> None:
        written.append(arr.shape)
        write_array(f, arr, *a, **k)

    monkeypatch.setattr(staging, "staged_rows", stage)
    monkeypatch.setattr(np.lib.format, "write_array", record)
    db = _db(tmp_path / "db")
    db.create_collection("c", dim=DIM, metric="l2", index_params={"vector_dtype": "float32"})
    x = np.random.default_rng(2).standard_normal((N, DIM)).astype(np.float32)
    half = N // 2
    for lo in range(0, half, 1000):  # several writes and a delete: the buffer is moved
        db.upsert("c", list(range(lo, lo + 1000)), x[lo : lo + 1000])
    db.delete("c", [7])
    db.optimize("c")
    assert staged == [half - 1]
    db.upsert("c", list(range(half, N)), x[half:])  # as many again: a rebuild of everything
    db.optimize("c")
    assert staged == [half - 1, N - 1]
    assert [s for s in written if len(s) == 2] == []  # no vectors written besides
    assert db.get_collection("c").indexed == N - 1
    q = x[:20] + 0.01
    keep = np.arange(N) != 7
    rows, _ = exact_topk(q, x[keep], "l2", 10)
    want = np.flatnonzero(keep)[rows]
    got = db.search("c", q, k=10, params={"max_postings": 4096, "prune_ratio": 1e9}).ids
    assert (np.sort(got, axis=1) == np.sort(want, axis=1)).all()
    db.close()
    assert not list((tmp_path / "db").rglob("build.*.tmp"))
