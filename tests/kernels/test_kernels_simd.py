"""The 16-lane vector type of `vecdb.kernels.simd` against numpy."""

from __future__ import annotations

import numpy as np
from numba import njit

from vecdb.kernels.simd import LANES, vadd, vany_gt, vhmax, vload, vmax, vsplat, vstore, vsum


@njit(cache=False)
def _ops(a, b, i, j, out):  # type: ignore[no-untyped-def]
    x = vload(a, i)
    y = vload(b, j)
    vstore(out, 0, vadd(x, y))
    vstore(out, LANES, vmax(x, y))
    vstore(out, 2 * LANES, vmax(vsplat(0.5), x))
    return vsum(x)


def test_lane_ops_equal_numpy_at_unaligned_offsets_of_2d_arrays() -> None:
    """Loads at odd flat offsets (2-D arrays read flat), add, max, splat and the lane sum."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    out = np.zeros(3 * LANES + 1, np.float32)
    s = _ops(a, b, 3, 21, out)
    x, y = a.reshape(-1)[3 : 3 + LANES], b[21 : 21 + LANES]
    np.testing.assert_array_equal(out[:LANES], x + y)
    np.testing.assert_array_equal(out[LANES : 2 * LANES], np.maximum(x, y))
    np.testing.assert_array_equal(out[2 * LANES : 3 * LANES], np.maximum(np.float32(0.5), x))
    assert out[-1] == 0.0  # nothing written past the three stores
    assert abs(s - float(x.sum(dtype=np.float64))) < 1e-5


@njit(cache=False)
def _tests(a, b):  # type: ignore[no-untyped-def]
    return vany_gt(vload(a, 0), vload(b, 0)), vhmax(vload(a, 0))


def test_any_greater_lane_and_largest_lane() -> None:
    """`vany_gt` finds a single greater lane wherever it is; `vhmax` the largest lane."""
    a = np.linspace(-2, 1, LANES).astype(np.float32)
    assert _tests(a, a.copy()) == (False, np.float32(1.0))
    for lane in (0, 7, LANES - 1):
        b = a.copy()
        b[lane] -= 0.25
        assert _tests(a, b)[0]
        c = a.copy()
        c[lane] = 5.0
        assert _tests(c, c)[1] == np.float32(5.0)
