"""`sorted_unique` is `np.unique` of one array, by a sort (numpy's hash path is slow)."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.kernels.unique import sorted_unique


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 5_000])
def test_sorted_unique_is_numpys_unique(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.integers(0, max(1, n // 3), n).astype(dtype)  # duplicates at every size
    got = sorted_unique(a)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, np.unique(a))
    np.testing.assert_array_equal(sorted_unique(a.reshape(-1, 1)), np.unique(a))  # flattened
