"""kill -9 at random moments loses no acknowledged write.

A child process upserts and deletes in a loop and prints every acknowledgement; the test
SIGKILLs it at a random moment, reopens the directory and checks every acknowledged id: its
newest acknowledged write (or a later unacknowledged one that reached disk) is there exactly,
and acknowledged deletes stay deleted unless a later write re-created the id.
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
    time.sleep(rng.uniform(0.05, 1.0))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    return out.splitlines()


def _expected(lines: list[str], state: dict[int, tuple[str, int]]) -> None:
    """Fold acknowledged operations into id -> (newest acknowledged op, its generation)."""
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("ack", "del"):
            continue  # a line torn by the kill was never acknowledged
        gen = int(parts[1])
        for i in map(int, parts[2].split(",")):
            state[i] = (parts[0], gen)


@pytest.mark.slow
@pytest.mark.parametrize("index", ["flat"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, index: str) -> None:
    """Across TRIALS kills, every acknowledged upsert and delete survives reopen."""
    rng = random.Random(1234)
    path = tmp_path / "db"
    acked: dict[int, tuple[str, int]] = {}
    total_acks = 0
    for trial in range(TRIALS):
        lines = _run_and_kill(path, index, seed=trial + 1, rng=rng)
        total_acks += sum(1 for line in lines if line.startswith(("ack", "del")))
        _expected(lines, acked)
        with Database(path) as db:
            ids = list(acked)
            records = {r.id: r for r in db.get("c", ids)} if ids else {}
            lost = []
            for i, (op, gen) in acked.items():
                rec = records.get(i)
                if op == "del":
                    # Deleted and acknowledged: only a later, unacknowledged write may revive it.
                    if rec is not None:
                        assert rec.payload is not None and rec.payload["gen"] > gen, i
                    continue
                if rec is None or rec.payload is None or rec.payload["gen"] < gen:
                    lost.append(i)
                    continue
                got_gen = rec.payload["gen"]
                assert rec.payload["id"] == i
                np.testing.assert_array_equal(rec.vector, vector_of(i, got_gen))
            assert lost == [], f"trial {trial}: {len(lost)} acknowledged writes lost"
            # The index agrees with storage: count matches, and stored points are found.
            stored = db.get("c", list(range(ID_RANGE)))
            assert db.count("c") == len(stored)
            if stored:
                sample = stored[:: max(1, len(stored) // 50)]
                res = db.search("c", np.stack([r.vector for r in sample]), k=1)
                assert res.ids[:, 0].tolist() == [r.id for r in sample]
    assert total_acks > TRIALS  # the writer really worked between kills
