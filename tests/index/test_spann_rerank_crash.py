"""Crash an index with a rerank store at SPANN kill points, reopen, replay the op log after
the durable sequence (as the engine does): every live slot's store row holds its vector,
searches return exact distances, and dead rows' pages were given back; with the store's rows
in slot order and in head order (`row_order`: the slot -> row map is the checkpoint's, rows
written after it are given again by the replay)."""

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
    clustered,
    live_after,
    op_log,
    recall,
    run_log,
    store_rows,
    stored,
)

SEED = 11
PARAMS = dict(SMALL, vector_dtype="int8", rerank="float16")
CHILD = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_spann_support import run_log
run_log(Path({directory!r}), {seed}, {params!r})
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", ["slot", "head"])
@pytest.mark.parametrize("point", ["split:3", "merge:1", "checkpoint:4", "checkpoint:9"])
def test_crash_then_replay_keeps_the_store_exact(point: str, order: str, tmp_path: Path) -> None:
    params = dict(PARAMS, row_order=order)
    code = CHILD.format(
        tests=str(Path(__file__).parent), directory=str(tmp_path), seed=SEED, params=params
    )
    env = dict(os.environ, VECDB_KILL_AT=point)
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=180)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    idx = run_log(tmp_path, SEED, params)
    live = live_after(op_log(SEED))
    slots = np.fromiter(live, np.int64)
    vecs = np.stack([live[int(s)] for s in slots])
    np.testing.assert_array_equal(store_rows(idx, slots), stored(vecs))
    got = idx.search(vecs[:200], 1, {"max_postings": 4096})
    np.testing.assert_array_equal(got.slots[:, 0], slots[:200])  # every vector finds itself
    want = ((stored(vecs[:200]) - vecs[:200]) ** 2).sum(1)
    np.testing.assert_allclose(got.distances[:, 0], want, rtol=1e-3, atol=1e-6)
    q = clustered(100, 16, seed=77)
    assert recall(idx.search(q, 10, {"max_postings": 8}).slots, live, q, 10, "l2") > 0.85
    # pages without a live row are holes after the last checkpoint (the header page stays)
    store = idx.state.store
    assert store is not None
    rows = store.rows_of(slots)
    first, last = 4096 + rows * store.row, 4096 + (rows + 1) * store.row - 1
    pages = set((first // 4096).tolist()) | set((last // 4096).tolist())
    assert store.allocated_bytes() <= 4096 * (1 + len(pages))
    idx.close()
