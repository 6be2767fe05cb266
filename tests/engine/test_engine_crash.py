"""kill -9 at random moments loses no acknowledged write.

A child process upserts, deletes and optimizes in a loop and prints every acknowledgement; the
test SIGKILLs it at a random moment after its first acknowledgement, reopens the directory and
checks every id against the acknowledged history: exactly the newest acknowledged state,
except for the ids of the one operation in flight at the kill, which may show either its old
or its new state.
Trials: 10 by default, VECDB_CRASH_TRIALS to change.
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

from vecdb.engine import Database

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import ID_RANGE, vector_of  # noqa: E402

TRIALS = int(os.environ.get("VECDB_CRASH_TRIALS", "10"))
WRITER = Path(__file__).parent / "crash_writer.py"


def _run_and_kill(path: Path, index: str, seed: int, rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), index, str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    # The random delay starts at the first acknowledgement: the first write (imports, kernels
    # loaded from numba's cache, the first fsyncs) can take over a second on a loaded machine,
    # and a kill before it would test nothing.
    first: list[str] = []
    while not first or not first[-1].startswith(("ack", "del")):
        line = proc.stdout.readline()
        assert line, "the writer exited before its first acknowledgement"
        first.append(line.rstrip("\n"))
    time.sleep(rng.uniform(0.05, 1.0))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    return first + out.splitlines()


State = dict[int, tuple[str, int]]  # id -> ("ack", generation) or ("del", generation)


def _fold(lines: list[str], state: State) -> tuple[str, int, list[int]] | None:
    """Apply acknowledged operations to `state`; return the operation in flight at the kill."""
    pending = None
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue  # a line torn by the kill
        op, gen, ids = parts[0], int(parts[1]), [int(i) for i in parts[2].split(",")]
        if op.startswith("try-"):
            pending = (op[4:], gen, ids)
        elif op in ("ack", "del"):
            for i in ids:
                state[i] = (op, gen)
            pending = None
    return pending


def _observed(rec: Any) -> tuple[str, int] | None:
    return None if rec is None else ("ack", int(rec.payload["gen"]))


@pytest.mark.slow
@pytest.mark.parametrize("index", ["flat", "spann"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, index: str) -> None:
    """Across TRIALS kills, every acknowledged upsert and delete is exactly what reopens."""
    rng = random.Random(1234)
    path = tmp_path / "db"
    state: State = {}
    total_acks = 0
    for trial in range(TRIALS):
        lines = _run_and_kill(path, index, seed=trial + 1, rng=rng)
        total_acks += sum(1 for line in lines if line.startswith(("ack", "del")))
        pending = _fold(lines, state)
        in_flight = set(pending[2]) if pending else set()
        with Database(path) as db:
            records = {r.id: r for r in db.get("c", list(range(ID_RANGE)))}
            wrong = []
            for i in range(ID_RANGE):
                got = _observed(records.get(i))
                known = state.get(i)
                want = None if known is None or known[0] == "del" else known
                if i in in_flight:
                    assert pending is not None
                    landed = ("ack", pending[1]) if pending[0] == "ack" else None
                    if got not in (want, landed):
                        wrong.append((i, want, landed, got))
                    elif got == landed:  # the in-flight operation reached the disk
                        state[i] = (pending[0], pending[1])
                elif got != want:
                    wrong.append((i, want, got))
            assert wrong == [], f"trial {trial}: {len(wrong)} ids differ: {wrong[:5]}"
            for i, rec in records.items():
                assert rec.payload is not None and rec.payload["id"] == i
                np.testing.assert_array_equal(rec.vector, vector_of(i, rec.payload["gen"]))
            # The index agrees with storage: count matches, and stored points are found.
            assert db.count("c") == len(records)
            if records:
                sample = list(records.values())[:: max(1, len(records) // 50)]
                res = db.search("c", np.stack([r.vector for r in sample]), k=1)
                assert res.ids[:, 0].tolist() == [r.id for r in sample]
    assert total_acks > TRIALS  # the writer really worked between kills
