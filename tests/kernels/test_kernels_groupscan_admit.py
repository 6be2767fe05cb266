"""`groupscan._admit`, the float32 pre-test before the fold: it admits, in order, every entry
the fold's own test (float64 for cosine) would let through, so the top k is the per-entry
loop's; for l2 and ip exactly those entries."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.kernels.groupscan import _admit
from vecdb.kernels.posting import METRIC_COSINE, METRIC_IP, METRIC_L2


@pytest.mark.parametrize("metric", [METRIC_L2, METRIC_IP, METRIC_COSINE])
def test_admit_keeps_every_entry_the_fold_would_take(metric: int) -> None:
    """Scores around the threshold (equal, one float32 step either side, values whose
    1 - a rounds onto it) and random ones: admitted = {j : fold's d_j <= worst} (a superset
    for cosine, only by float32 ties), ascending."""
    rng = np.random.default_rng(metric)
    for _ in range(200):
        n = int(rng.integers(0, 300))
        a = rng.uniform(-1.5, 1.5, n).astype(np.float32)
        worst = np.float32(rng.uniform(-1, 1.5))
        target = {METRIC_L2: worst, METRIC_IP: -worst, METRIC_COSINE: np.float32(1) - worst}
        near = np.float32(target[metric])
        k = min(n, 12)
        a[:k] = np.nextafter(near, np.float32(rng.choice([-np.inf, np.inf])), dtype=np.float32)
        a[k // 2 : k] = near
        a = rng.permutation(a)
        pick = np.empty(max(n, 1), np.int64)
        m = _admit(a, n, metric, worst, pick)
        if metric == METRIC_L2:
            d = a.astype(np.float64)
        elif metric == METRIC_IP:
            d = -a.astype(np.float64)
        else:
            d = 1.0 - a.astype(np.float64)
        want = np.flatnonzero(d <= worst)
        got = pick[:m]
        assert np.all(np.diff(got) > 0)
        assert set(want.tolist()) <= set(got.tolist())
        d32 = d.astype(np.float32)
        assert np.all(d32[got] <= worst)  # nothing beyond a float32 tie is let in
        if metric != METRIC_COSINE:
            np.testing.assert_array_equal(got, want)
