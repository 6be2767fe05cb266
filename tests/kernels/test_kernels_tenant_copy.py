"""The small-tenant kernels: `tenant_scan.copy_topk` (a copy's exact top-k, rows mapped to
slots in the same call) against `scan.exact_topk`, and `idmap.int_ids` (result slots to int
ids, vanished ones counted) against the numpy reference it replaced."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.kernels import scan
from vecdb.kernels.idmap import int_ids
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.tenant_scan import FUSED_MAX_QUERIES, KINDS, copy_topk, fused_fits


def _reference(q: np.ndarray, x: np.ndarray, metric: str, found: np.ndarray, k: int):  # type: ignore[no-untyped-def]
    rows, dist = exact_topk(q, x, metric, k)
    if len(found) == 0:
        return np.full(rows.shape, -1, np.int64), dist
    return np.where(rows >= 0, found[np.maximum(rows, 0)], -1), dist


@settings(max_examples=60, deadline=None)
@given(
    metric=st.sampled_from(["l2", "ip", "cosine"]),
    nq=st.integers(1, FUSED_MAX_QUERIES),
    n=st.integers(0, 300),
    dim=st.integers(1, 40),
    k=st.integers(1, 24),
    seed=st.integers(0, 2**31 - 1),
    ties=st.booleans(),
)
def test_copy_topk_answers_as_exact_topk(metric, nq, n, dim, k, seed, ties) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    if ties:  # small integer coordinates: many equal distances (ties by row)
        x = rng.integers(-2, 3, (n, dim)).astype(np.float32)
        q = rng.integers(-2, 3, (nq, dim)).astype(np.float32)
    else:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        q = rng.standard_normal((nq, dim)).astype(np.float32)
    if metric == "cosine":  # prepared rows and queries are unit length
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
    found = np.sort(rng.choice(10 * n + 1, n, replace=False)).astype(np.int64)
    assert fused_fits(nq, n, dim)
    got_s, got_d = copy_topk(q, x, KINDS[metric], found, k)
    ref_s, ref_d = _reference(q, x, metric, found, k)
    np.testing.assert_array_equal(got_s, ref_s)
    np.testing.assert_array_equal(got_d, ref_d)
    assert got_s.dtype == np.int64 and got_d.dtype == np.float32
    assert got_s.shape == got_d.shape == (nq, k)


def test_copy_topk_reads_read_only_mapped_rows() -> None:
    rng = np.random.default_rng(1)
    raw = np.concatenate([np.arange(50, dtype=np.int64).view(np.uint8),
                          rng.standard_normal((50, 8)).astype(np.float32).view(np.uint8).ravel()])  # fmt: skip
    buf = bytes(raw)  # read-only, as the copy file's mapping
    found = np.frombuffer(buf, np.int64, 50, 0)
    x = np.frombuffer(buf, np.float32, 400, 400).reshape(50, 8)
    q = rng.standard_normal((1, 8)).astype(np.float32)
    got = copy_topk(q, x, KINDS["l2"], found, 5)
    ref = _reference(q, x, "l2", found, 5)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_fused_fits_only_where_exact_topk_scans_directly_on_one_thread() -> None:
    assert FUSED_MAX_QUERIES < scan._MIN_BLAS_QUERIES
    assert fused_fits(1, 1000, 50)
    assert not fused_fits(FUSED_MAX_QUERIES + 1, 10, 50)
    assert not fused_fits(1, 200_000, 50)  # a planned (multi-thread) scan


@settings(max_examples=80, deadline=None)
@given(
    table=st.lists(st.one_of(st.just(-1), st.integers(0, 10**12)), max_size=40),
    slots=st.lists(st.integers(-1, 50), min_size=0, max_size=30),
    rows=st.integers(1, 3),
)
def test_int_ids_match_the_numpy_lookup(table, slots, rows) -> None:  # type: ignore[no-untyped-def]
    tab = np.asarray(table, np.int64)
    s = np.asarray(slots * rows, np.int64).reshape(rows, len(slots))
    ids, missing = int_ids(s, tab)
    ref = np.full(s.shape, -1, np.int64)
    ok = (s >= 0) & (s < len(tab))
    ref[ok] = tab[s[ok]]
    np.testing.assert_array_equal(ids, ref)
    assert missing == int(np.count_nonzero((s >= 0) & (ref == -1)))
    assert ids.dtype == np.int64 and ids.shape == s.shape


@pytest.mark.parametrize("shape", [(0,), (4,), (2, 0)])
def test_int_ids_keep_the_shape(shape: tuple[int, ...]) -> None:
    s = np.zeros(shape, np.int64)
    ids, missing = int_ids(s, np.asarray([7], np.int64))
    assert ids.shape == shape and missing == 0
    assert (ids == 7).all()
