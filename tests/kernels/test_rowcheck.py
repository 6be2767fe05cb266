"""vecdb.kernels.rowcheck against numpy: the upsert and query checks name the same first
offender with the same message, and the cosine normalisation gives the same bits, as the
whole-matrix numpy passes they replace (written out here as the reference)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb import config
from vecdb.engine import validate as v
from vecdb.errors import InvalidArgument
from vecdb.kernels import rowcheck
from vecdb.kernels.unitrow import unit_row
from vecdb.types import Metric


def _numpy_checks(x: np.ndarray, cosine: bool) -> tuple[int, int, int]:
    """The checks as numpy passes over a float64 copy, in their order of precedence."""
    wide = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(wide))
    if len(bad):
        return rowcheck.NOT_FINITE, int(bad[0][0]), int(bad[0][1])
    big = np.argwhere(np.abs(wide) > config.MAX_ABS_COMPONENT)
    if len(big):
        return rowcheck.TOO_LARGE, int(big[0][0]), int(big[0][1])
    sq = (wide * wide).sum(axis=1)
    huge = np.flatnonzero(sq > config.MAX_SQ_NORM)
    if len(huge):
        return rowcheck.HUGE_NORM, int(huge[0]), -1
    zero = np.flatnonzero(sq == 0)
    if cosine and len(zero):
        return rowcheck.ZERO_ROW, int(zero[0]), -1
    return rowcheck.OK, -1, -1


SPECIALS = [np.nan, np.inf, -np.inf, 2e18, -3e18, 1e19, 0.0]


@st.composite
def _matrices(draw: Any) -> tuple[np.ndarray, bool]:
    n = draw(st.integers(1, 6))
    d = draw(st.sampled_from([1, 3, 8, 50, 130]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    for _ in range(draw(st.integers(0, 4))):  # a few special values anywhere
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(
            st.sampled_from(SPECIALS)
        )
    if draw(st.booleans()):  # an all-zero row
        x[draw(st.integers(0, n - 1))] = 0.0
    if draw(st.booleans()):  # a row whose squared norm overflows float32 distances
        x[draw(st.integers(0, n - 1))] = 9e17
    with np.errstate(over="ignore"):
        return x.astype(dtype), draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(_matrices())
def test_scan_rows_names_the_offender_numpy_names(case: tuple[np.ndarray, bool]) -> None:
    x, cosine = case
    got = rowcheck.scan_rows(x, config.MAX_ABS_COMPONENT, config.MAX_SQ_NORM, cosine)
    assert tuple(int(t) for t in got) == _numpy_checks(x, cosine)


@settings(max_examples=200, deadline=None)
@given(_matrices())
def test_prepare_vectors_errors_and_values(case: tuple[np.ndarray, bool]) -> None:
    """The errors of `prepare_vectors` follow the precedence above, named and worded as
    before; a clean matrix comes back as a float32 copy of its own."""
    x, cosine = case
    metric = Metric.COSINE if cosine else Metric.L2
    code, row, col = _numpy_checks(x, cosine)
    if code == rowcheck.OK:
        out = v.prepare_vectors(x, x.shape[1], metric)
        np.testing.assert_array_equal(out, x.astype(np.float32))
        assert out.dtype == np.float32 and out.flags.c_contiguous
        assert not np.shares_memory(out, x)
        return
    with pytest.raises(InvalidArgument) as exc:
        v.prepare_vectors(x, x.shape[1], metric)
    err = exc.value
    value = float(x.astype(np.float64)[row, col]) if col >= 0 else None
    if code == rowcheck.NOT_FINITE:
        assert (err.reason, err.field) == ("NOT_FINITE", f"vectors[{row}][{col}]")
        assert err.message == f"vectors[{row}][{col}] is {value}: NaN and inf are not allowed"
    elif code == rowcheck.TOO_LARGE:
        assert (err.reason, err.field) == ("TOO_LARGE", f"vectors[{row}][{col}]")
        assert err.message.startswith(f"vectors[{row}][{col}] = {value:.3g} is too large")
    elif code == rowcheck.HUGE_NORM:
        assert (err.reason, err.field) == ("TOO_LARGE", f"vectors[{row}]")
        assert "too large for float32 distances" in err.message
    else:
        assert (err.reason, err.field) == ("ZERO_VECTOR", f"vectors[{row}]")


@pytest.mark.parametrize("d", [1, 7, 8, 50, 128, 129, 384, 1000, 1536])
def test_normalize_gives_numpys_bits_and_unit_rows_bits(d: int) -> None:
    """Rows of every width around numpy's pairwise blocks: `validate.normalize` equals the
    float64 numpy arithmetic bit for bit, and so the single-query kernel's row."""
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((40, d)) * rng.uniform(1e-3, 1e3, (40, 1))).astype(np.float32)
    wide = x.astype(np.float64)
    want = (wide / np.sqrt((wide * wide).sum(axis=1, keepdims=True))).astype(np.float32)
    got = v.normalize(x)
    np.testing.assert_array_equal(got, want)
    one = np.empty((1, d), np.float32)
    for i in range(0, 40, 7):
        assert unit_row(x[i], True, config.MAX_SQ_NORM, one)
        np.testing.assert_array_equal(one[0], got[i])
    np.testing.assert_array_equal(v.normalize(x[3]), got[3])  # one row given as (d,)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1_000, 4_099])
def test_normalize_on_every_core_gives_the_one_core_bits(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From NORMALIZE_PARALLEL components the rows go out in blocks to every core: the same
    bits as one core, an all-zero row left zero, every row written (ragged last block)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, 300)) * rng.uniform(1e-3, 1e3, (n, 1))).astype(np.float32)
    x[n // 2] = 0.0
    serial = np.full(x.shape, np.nan, np.float32)
    rowcheck._normalize_block(x, serial, 0, n)
    monkeypatch.setattr(rowcheck, "NORMALIZE_PARALLEL", 1)
    par = np.full(x.shape, np.nan, np.float32)
    rowcheck.normalize_rows(x, par)
    np.testing.assert_array_equal(par, serial)
    assert not par[n // 2].any()
    wide = np.delete(x, n // 2, axis=0).astype(np.float64)
    want = (wide / np.sqrt((wide * wide).sum(axis=1, keepdims=True))).astype(np.float32)
    np.testing.assert_array_equal(np.delete(par, n // 2, axis=0), want)


def test_first_above_is_the_first_row_major() -> None:
    x = np.zeros((4, 5), np.float32)
    assert tuple(rowcheck.first_above(x, 1.0)) == (-1, -1)
    x[2, 1] = -3.0
    x[3, 0] = 5.0
    assert tuple(rowcheck.first_above(x, 1.0)) == (2, 1)
    assert tuple(rowcheck.first_above(x, 4.0)) == (3, 0)


def test_scan_rows_sums_squares_in_numpys_order() -> None:
    """A row whose float64 sum of squares differs between numpy's pairwise order and a
    plain loop: against a bound equal to numpy's sum it passes, one ulp below it fails, so
    the kernel's squared norm is numpy's to the last bit."""
    for seed in range(1000):
        w = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
        sq = float(np.add.reduce(w.astype(np.float64) ** 2))
        loop = 0.0
        for t in (w.astype(np.float64) ** 2).tolist():
            loop += t
        if loop != sq:
            break
    else:
        pytest.fail("no row with differing sums found")
    x = w.reshape(1, -1)
    ok = rowcheck.scan_rows(x, np.inf, sq, False)
    assert tuple(int(t) for t in ok) == (rowcheck.OK, -1, -1)
    below = rowcheck.scan_rows(x, np.inf, float(np.nextafter(sq, 0.0)), False)
    assert tuple(int(t) for t in below) == (rowcheck.HUGE_NORM, 0, -1)
