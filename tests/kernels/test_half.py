"""vecdb.kernels.half against numpy: the float16 bits and the float32-widened values equal,
bit for bit, numpy's `astype(np.float16)` with the results below float16's smallest normal
set to +0 (the reference below), on every boundary, every float16 value and random rows, on
the serial and the parallel path; NaN gives a NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.kernels.half import PARALLEL_MIN_ELEMENTS, half_bits, half_round

TINY = np.finfo(np.float16).tiny  # 2**-14


def _reference(x: np.ndarray) -> np.ndarray:
    """The rule in numpy: round to float16, magnitudes below 2**-14 to +0 (as bits)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf is the rule
        h = np.asarray(x, np.float32).astype(np.float16)
    h[np.abs(h) < TINY] = 0
    return h.view(np.uint16)


def _check(x: np.ndarray) -> None:
    """half_bits equals the reference and half_round its widening, bit for bit (NaN: NaN)."""
    got, want = half_bits(x), _reference(x)
    assert got.shape == np.shape(x) and got.dtype == np.uint16
    nan = np.isnan(np.asarray(x, np.float32))
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(got[nan].view(np.float16)).all()
    wide = half_round(x)
    assert wide.shape == np.shape(x) and wide.dtype == np.float32
    np.testing.assert_array_equal(
        wide.view(np.uint32), got.view(np.float16).astype(np.float32).view(np.uint32)
    )


def _sweep(center: float, width: int = 1 << 14) -> np.ndarray:
    """Every float32 bit pattern within `width` of `center`'s, both signs."""
    c = int(np.array([center], np.float32).view(np.uint32)[0])
    b = np.arange(max(0, c - width), c + width, dtype=np.uint32)
    return np.concatenate([b, b | np.uint32(0x80000000)]).view(np.float32)


@pytest.mark.parametrize(
    "center",
    [
        2.0**-14,  # the smallest normal float16
        2.0**-14 - 2.0**-25,  # halfway from the largest subnormal: ties to 2**-14
        2.0**-24,  # the smallest subnormal
        65504.0,  # float16's largest finite
        65520.0,  # halfway from it to 2**16: ties to inf
        1.0,
        1.0 + 2.0**-10,  # odd mantissa
        3.0 * 2.0**7,
        np.float32(0.1),
    ],
)
def test_dense_sweep_near_boundaries(center: float) -> None:
    """Every float32 pattern near each rounding and flushing boundary converts as numpy's."""
    _check(_sweep(center))


def test_ties_round_to_even() -> None:
    """Values halfway between two float16 values go to the even neighbour, either way."""
    lo = np.arange(0x0400, 0x7BFF, 7, dtype=np.uint16)  # normal halves with a finite successor
    a = lo.view(np.float16).astype(np.float64)
    b = (lo + 1).view(np.float16).astype(np.float64)
    mid = ((a + b) / 2).astype(np.float32)  # exact in float32
    assert ((lo & 1) == 0).any() and ((lo & 1) == 1).any()
    _check(np.concatenate([mid, -mid]))
    even = np.where(lo & 1 == 0, lo, lo + 1)
    np.testing.assert_array_equal(half_bits(mid), even)


def test_every_half_round_trips() -> None:
    """Every finite normal float16 and zero, widened to float32, converts back to itself."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    x = h.astype(np.float32)
    _check(x)
    keep = np.isfinite(h) & (np.abs(h) >= TINY)
    np.testing.assert_array_equal(half_bits(x[keep]), bits[keep])
    np.testing.assert_array_equal(half_round(x[keep]), x[keep])


@pytest.mark.parametrize("scale", [1e-6, 1e-4, 1e-2, 1.0, 1e3, 3e4, 1e5])
def test_random_normals_at_scales(scale: float) -> None:
    """Random normal rows at scales from mostly-flushed to mostly-overflowing match numpy."""
    x = (np.random.default_rng(7).standard_normal((64, 129)) * scale).astype(np.float32)
    _check(x)


def test_signed_zero_tiny_and_specials() -> None:
    """-0.0 and negative subnormal results give +0 bits; +-inf stay; NaN gives a NaN."""
    x = np.array(
        [0.0, -0.0, -1e-6, 1e-6, -(2.0**-24), -(2.0**-14), 7e4, -7e4, np.inf, -np.inf, np.nan],
        np.float32,
    )
    got = half_bits(x)
    np.testing.assert_array_equal(got[:5], 0)
    assert got[5] == 0x8400
    np.testing.assert_array_equal(got[6:10], [0x7C00, 0xFC00, 0x7C00, 0xFC00])
    assert np.isnan(got[10:].view(np.float16)).all()
    assert np.isnan(half_round(x)[10])
    nans = np.array([0x7F800001, 0xFFC12345, 0x7FFFFFFF], np.uint32).view(np.float32)
    assert np.isnan(half_bits(nans).view(np.float16)).all()
    assert np.isnan(half_round(nans)).all()
    _check(np.concatenate([x, nans]))


@pytest.mark.parametrize("shape", [(0, 16), (0, 0), (5, 1), (3, 7), (13,), (2, 3, 5), ()])
def test_shapes(shape: tuple[int, ...]) -> None:
    """Zero rows, d=1, odd d, 1-D, 3-D and 0-D arrays keep their shape and match numpy."""
    _check(np.random.default_rng(1).standard_normal(shape).astype(np.float32))


def test_parallel_path_matches() -> None:
    """An array above the parallel threshold (not a multiple of a task) matches numpy."""
    d = 1536
    n = PARALLEL_MIN_ELEMENTS // d + 3
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((n, d)) * 10.0 ** rng.integers(-7, 6, (n, 1))).astype(np.float32)
    x[0, :4] = [np.nan, -0.0, np.inf, 2.0**-14 - 2.0**-25]
    assert x.size >= PARALLEL_MIN_ELEMENTS
    _check(x)


def test_non_contiguous_and_float64_input() -> None:
    """Strided, Fortran-order and float64 inputs convert as their float32 values do."""
    x = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    for view in (x[::2, 1::3], x.T, np.asfortranarray(x)):
        np.testing.assert_array_equal(half_bits(view), _reference(np.ascontiguousarray(view)))
        _check(view)
    wide = x.astype(np.float64)
    np.testing.assert_array_equal(half_bits(wide), half_bits(x))
    np.testing.assert_array_equal(half_round(wide), half_round(x))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=64))
def test_any_bit_patterns(patterns: list[int]) -> None:
    """Arbitrary float32 bit patterns (subnormals, NaN payloads, huge values) match numpy."""
    _check(np.array(patterns, np.uint64).astype(np.uint32).view(np.float32))


def test_round_is_bits_widened() -> None:
    """half_round(x) is half_bits(x) viewed as float16 and widened to float32, exactly."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((300, 77)) * 10.0 ** rng.integers(-9, 6, (300, 77))).astype(np.float32)
    want = half_bits(x).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(half_round(x).view(np.uint32), want.view(np.uint32))
