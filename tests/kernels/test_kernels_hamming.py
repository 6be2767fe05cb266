"""Sign codes and Hamming distances against numpy bit references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecdb.kernels.hamming as hamming_mod
from vecdb.kernels.hamming import hamming, pack_signs

DIMS = [1, 3, 17, 50, 63, 64, 65, 129]


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def kernel_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test through both the serial and the prange variant of each kernel."""
    mode: str = request.param
    monkeypatch.setattr(hamming_mod, "_PARALLEL_MIN_WORDS", 0 if mode == "parallel" else 1 << 62)
    return mode


def _unpack(codes: np.ndarray, d: int) -> np.ndarray:
    """Bits of each row as bool (n, d), bit j from word j // 64 at position j % 64."""
    bits = np.unpackbits(codes.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    return bits[:, :d].astype(bool)


@pytest.mark.parametrize("d", DIMS)
def test_pack_signs_sets_bit_iff_positive(d: int) -> None:
    """Bit j of row i is set exactly when x[i, j] > 0, with unused high bits clear."""
    x = np.random.default_rng(0).standard_normal((20, d)).astype(np.float32)
    x[0] = 0.0
    codes = pack_signs(x)
    assert codes.dtype == np.uint64 and codes.shape == (20, (d + 63) // 64)
    np.testing.assert_array_equal(_unpack(codes, d), x > 0)
    assert _unpack(codes, codes.shape[1] * 64)[:, d:].sum() == 0


def test_pack_signs_treats_nan_and_negative_zero_as_unset() -> None:
    """NaN and -0.0 are not positive, so their bits stay 0."""
    x = np.array([[np.nan, -0.0, 0.0, 1e-30, -np.inf, np.inf]], dtype=np.float32)
    np.testing.assert_array_equal(_unpack(pack_signs(x), 6), [[0, 0, 0, 1, 0, 1]])


def test_pack_signs_accepts_zero_rows() -> None:
    """An empty matrix packs to an empty (0, words) code matrix."""
    assert pack_signs(np.zeros((0, 70), dtype=np.float32)).shape == (0, 2)


@pytest.mark.parametrize("d", DIMS)
def test_hamming_counts_differing_signs(d: int) -> None:
    """The distance of two codes is the number of components whose signs differ."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((11, d)).astype(np.float32)
    b = rng.standard_normal((13, d)).astype(np.float32)
    out = np.empty((11, 13), dtype=np.int32)
    hamming(pack_signs(a), pack_signs(b), out)
    np.testing.assert_array_equal(out, ((a[:, None] > 0) != (b[None] > 0)).sum(-1))


def test_hamming_of_all_ones_against_zero_is_word_bits() -> None:
    """Every bit of a full uint64 word counts, including the top bit."""
    a = np.full((1, 2), np.iinfo(np.uint64).max, dtype=np.uint64)
    b = np.zeros((1, 2), dtype=np.uint64)
    out = np.empty((1, 1), dtype=np.int32)
    hamming(a, b, out)
    assert out[0, 0] == 128


@pytest.mark.parametrize(("n", "m"), [(0, 4), (4, 0), (0, 0)])
def test_hamming_accepts_zero_rows(n: int, m: int) -> None:
    """Empty code matrices give an empty result without error."""
    out = np.empty((n, m), dtype=np.int32)
    hamming(np.zeros((n, 2), dtype=np.uint64), np.zeros((m, 2), dtype=np.uint64), out)


def test_hamming_rejects_bad_arguments() -> None:
    """Mismatched widths, wrong out shape or dtype are ValueErrors."""
    a = np.zeros((2, 2), dtype=np.uint64)
    with pytest.raises(ValueError, match="codes"):
        hamming(a, np.zeros((2, 3), dtype=np.uint64), np.empty((2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="out"):
        hamming(a, a, np.empty((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="a must be"):
        hamming(a.astype(np.int64), a, np.empty((2, 2), dtype=np.int32))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 6),
    m=st.integers(0, 6),
    w=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_hamming_matches_bit_count(n: int, m: int, w: int, seed: int) -> None:
    """For random words the result equals numpy's count of set bits in the xor."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=(n, w), dtype=np.uint64)
    b = rng.integers(0, 2**64, size=(m, w), dtype=np.uint64)
    out = np.empty((n, m), dtype=np.int32)
    hamming(a, b, out)
    np.testing.assert_array_equal(out, np.bitwise_count(a[:, None] ^ b[None]).sum(-1))
