"""Crash at each named kill point (split, merge, defrag, checkpoint), reopen, replay the
ops after the durable sequence like the engine does: nothing is lost and recall holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_spann_support import (
    SMALL,
    assert_no_orphans,
    assert_tree_consistent,
    clustered,
    live_after,
    op_log,
    recall,
    run_log,
)

SEED = 11
CHILD = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_spann_support import SMALL, run_log
run_log(Path({directory!r}), {seed}, SMALL)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Recall of the same op log applied without a crash."""
    idx = run_log(tmp_path_factory.mktemp("ref"), SEED, SMALL)
    live = live_after(op_log(SEED))
    q = clustered(100, 16, seed=77)
    r = recall(idx.search(q, 10, {"max_postings": 8}).slots, live, q, 10, "l2")
    c = idx.state.counters
    assert c["splits"] >= 3 and c["merges"] >= 2 and c["defrags"] >= 1, c
    idx.close()
    return r


@pytest.mark.slow
@pytest.mark.parametrize("point", ["split:3", "merge:1", "defrag:1", "checkpoint:4"])
def test_crash_at_kill_point_then_replay_loses_nothing(
    point: str, reference: float, tmp_path: Path
) -> None:
    """The child dies by SIGKILL at the kill point; reopening and replaying restores every
    live vector exactly and recall stays at the uncrashed run's level."""
    code = CHILD.format(tests=str(Path(__file__).parent), directory=str(tmp_path), seed=SEED)
    env = dict(os.environ, VECDB_KILL_AT=point)
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    idx = run_log(tmp_path, SEED, SMALL)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    live = live_after(op_log(SEED))
    assert_no_orphans(idx, set(live))
    assert_tree_consistent(idx, set(live))
    q = clustered(100, 16, seed=77)
    r = recall(idx.search(q, 10, {"max_postings": 8}).slots, live, q, 10, "l2")
    assert r >= reference - 0.02, (r, reference)
    some = np.fromiter(live, np.int64)[:200]
    found = idx.search(np.stack([live[int(s)] for s in some]), 1, {"max_postings": 4096}).slots
    np.testing.assert_array_equal(found[:, 0], some)  # every vector finds itself
    idx.close()


def test_kill_point_is_inert_without_the_variable() -> None:
    """Without VECDB_KILL_AT the points cost nothing and do nothing."""
    from vecdb.index.spann.killpoints import kill_point

    env = os.environ.pop("VECDB_KILL_AT", None)
    try:
        for _ in range(5):
            kill_point("split")
    finally:
        if env is not None:
            os.environ["VECDB_KILL_AT"] = env
