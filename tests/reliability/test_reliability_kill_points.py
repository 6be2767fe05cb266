"""Kill points in the engine's index jobs that had none: a SIGKILL right after a first build
or a rebuild wrote the index ("build"), or right after a drain applied the buffer ("drain"),
each before the checkpoint, loses nothing and leaves an index that answers exactly.

The engine crash writer (`tests/engine/crash_writer.py`) runs with `VECDB_KILL_AT` naming the
point and occurrence; after the kill the directory is reopened (op log replayed past the last
checkpoint) and held to the acknowledged state (`acked_state.check_acked`), then written to
and optimized once more, and checked again after a clean reopen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from acked_state import WRITER, check_acked

from vecdb.engine import Database


@pytest.mark.slow
@pytest.mark.parametrize("point", ["build:1", "drain:1"])
def test_sigkill_at_engine_kill_point(tmp_path: Path, point: str) -> None:
    path = tmp_path / "db"
    env = {**os.environ, "VECDB_KILL_AT": point, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(WRITER), str(path), "spann", "5"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    with Database(path) as db:
        acked, points, _ = check_acked(db, lines, "spann")
        assert acked > 0 and points > 0
        db.upsert("c", [0], np.zeros((1, 16), np.float32), [{"gen": 0, "id": 0}])
        db.optimize("c")
        assert db.get("c", [0])[0].payload == {"gen": 0, "id": 0}
        n = db.count("c")
    with Database(path) as db:
        assert db.count("c") == n
        res = db.search("c", np.zeros((1, 16), np.float32), k=1)
        assert int(res.ids[0, 0]) == 0
