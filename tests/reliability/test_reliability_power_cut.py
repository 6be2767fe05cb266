"""Power cut of the whole data directory: every acknowledged (synced) write survives, and the
index answers exactly what RocksDB holds.

The data directory lives on an ext4 image mounted through a loop device (`loopdisk`: root
and a working `mount -o loop`, else skipped with the reason). A writer process (the engine
crash test's `crash_writer.py`: upserts, deletes and optimize calls, i.e. index builds,
drains and checkpoints, printing each acknowledgement) runs past WARM_ACKS acknowledgements
and then for a random time; then it is
frozen with SIGSTOP, the test waits until every one of its threads is stopped (no system
call of it in flight), and the image file is copied. That copy is the disk after the power
cut, and it is strict:

- What the file system had not written to its block device (the mounted file system's own
  page cache: every write that was not fsynced) is not in the image file, so it is lost, as
  at a power cut. The mount uses `commit=600` and the whole trial runs well inside the
  kernel's 30 s dirty-page expiry, so neither the journal's periodic commit nor background
  writeback sends anything to the device on its own: only what vecdb (and RocksDB) fsynced
  reaches it. That is stricter than a real power cut, which may keep some unsynced pages.
- What the file system did write to the device is in the image file (through the host's
  page cache, which survives: the host does not lose power): a disk that completed the
  writes it was sent. No O_DIRECT is needed: the image file's own dirty pages are writes the
  device completed, not the writes a power cut drops.
- Two canary files written by the test on the mounted file system just before the cut, one
  fsynced and one not, show both halves: the first must be in the copy, the second not.
- The copy is one instant: the image is hashed again after the copy and must be unchanged
  (nothing wrote to the device while it was copied; no torn snapshot).

The writer is then killed, the copy is mounted elsewhere (ext4 replays its journal) and opened
by this process, a fresh one: every acknowledged write must be there exactly (the one request
in flight may be either way, never half), the point count must match, and searches reading
every posting must equal the exact top-k over the vectors RocksDB returns (tie-aware).
Trials: 1 per index by default; VECDB_RELIABILITY_SCALE=N runs N.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from loopdisk import make_image, mounted
from oracles import ALL_POSTINGS, FLOAT16, FLOAT32, assert_search_matches, distances

from vecdb.engine import Database

ENGINE_TESTS = Path(__file__).parents[1] / "engine"
sys.path.insert(0, str(ENGINE_TESTS))
from crash_writer import ID_RANGE, vector_of  # noqa: E402
from test_engine_crash import _fold  # noqa: E402

WRITER = ENGINE_TESTS / "crash_writer.py"
TRIALS = int(os.environ.get("VECDB_RELIABILITY_SCALE", "1"))
MIB = 64
WARM_ACKS = 20  # the cut comes after this many acknowledgements plus a random time
CANARY = b"power cut canary " * 4096


def _acks(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(("ack ", "del ")))


def _stopped(pid: int) -> bool:
    """Every thread of `pid` is in the stopped state."""
    tasks = Path(f"/proc/{pid}/task")
    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    return all(s in ("T", "t") for s in states)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def _cut(tmp: Path, index: str, seed: int, run_for: float) -> tuple[Path, list[str]]:
    """Run the writer on a fresh image for `run_for` s, freeze it, copy the image: (the
    copy, the writer's acknowledgement lines)."""
    image, copy, out = tmp / "disk.img", tmp / "cut.img", tmp / "writer.out"
    make_image(image, MIB)
    with mounted(image, tmp / "mnt", "commit=600") as mnt:
        with open(out, "w") as f:
            proc = subprocess.Popen([sys.executable, str(WRITER), str(mnt / "db"), index, str(seed)],
                                    stdout=f, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))  # fmt: skip
        try:
            end = time.monotonic() + 120
            while _acks(out.read_text()) < WARM_ACKS:  # past its first build (and JIT)
                assert proc.poll() is None and time.monotonic() < end, "writer did not start"
                time.sleep(0.02)
            (mnt / "synced").write_bytes(CANARY)  # two canaries: one fsynced, one not
            fd = os.open(mnt / "synced", os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            (mnt / "unsynced").write_bytes(CANARY)
            time.sleep(run_for)
            os.kill(proc.pid, signal.SIGSTOP)
            end = time.monotonic() + 10
            while not _stopped(proc.pid):
                assert time.monotonic() < end, "writer did not stop"
                time.sleep(0.005)
            with open(image, "rb") as src, open(copy, "wb") as dst:
                while chunk := src.read(2**20):
                    dst.write(chunk)
            assert _sha(image) == _sha(copy), "the device was written during the copy"
            lines = out.read_text().splitlines()  # read while frozen: exactly what was acked
        finally:
            proc.kill()
            proc.wait()
    image.unlink()
    return copy, lines


def _check(db: Database, lines: list[str], index: str) -> tuple[int, int, int]:
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


@pytest.mark.slow
@pytest.mark.parametrize("index", ["flat", "spann"])
def test_power_cut_keeps_every_synced_write(tmp_path: Path, index: str) -> None:
    rng = random.Random(77 if index == "flat" else 78)
    acked = points = landed = 0
    for trial in range(TRIALS):
        tmp = tmp_path / f"t{trial}"
        tmp.mkdir()
        copy, lines = _cut(tmp, index, seed=trial + 1, run_for=rng.uniform(0.2, 2.0))
        with mounted(copy, tmp / "after") as mnt:
            # The cut dropped what was not synced, and kept what was.
            assert (mnt / "synced").read_bytes() == CANARY
            unsynced = mnt / "unsynced"
            assert not unsynced.exists() or unsynced.read_bytes() != CANARY
            with Database(mnt / "db") as db:
                a, p, l_ = _check(db, lines, index)
        acked, points, landed = acked + a, points + p, landed + l_
        copy.unlink()
    print(f"\npower cut ({index}): {TRIALS} trials, {acked} acknowledged requests, all present; "
          f"{points} points checked; in-flight landed {landed}; searches exact")  # fmt: skip
    assert acked > TRIALS  # the writer really worked before each cut
