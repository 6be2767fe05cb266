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
  page cache: writes not fsynced) is not in the image file, so it is lost, as at a power
  cut. The mount uses `commit=600`, so the journal never commits by itself, and background
  writeback only sends pages older than the kernel's 30 s dirty expiry: whatever was written
  in the last seconds before the cut reaches the device only if it was fsynced. That is
  stricter than a real power cut, which may keep some unsynced pages.
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

import pytest
from acked_state import WRITER, check_acked
from loopdisk import make_image, mounted

from vecdb.engine import Database

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
                a, p, l_ = check_acked(db, lines, index)
        acked, points, landed = acked + a, points + p, landed + l_
        copy.unlink()
    print(f"\npower cut ({index}): {TRIALS} trials, {acked} acknowledged requests, all present; "
          f"{points} points checked; in-flight landed {landed}; searches exact")  # fmt: skip
    assert acked > TRIALS  # the writer really worked before each cut
