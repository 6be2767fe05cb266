"""The structured rotation of "bits" codes (`vecdb.kernels.hadamard`) against numpy.

Real numba kernels. The rotation must be orthogonal (the codes' estimator assumes it),
equal to a dense matrix built independently here from the same signs (numpy's own
Sylvester Hadamard construction), code a row to the same bits alone or in a batch, and give
the same codes through `encode_rows` as that dense matrix does through the dense path.
"""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.kernels.bitscan import METRIC_L2, encode_rows
from vecdb.kernels.hadamard import hadamard_signs, structured_matrix, structured_rows

DIMS = [8, 50, 256, 384, 600, 1536]


def sylvester(m: int) -> np.ndarray:
    """H_m / sqrt(m) in float64, by Sylvester's doubling."""
    h = np.ones((1, 1))
    while len(h) < m:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(m)


def reference(signs: np.ndarray) -> np.ndarray:
    """The dense (d, d) matrix M (rows rotated as v @ M) of the module's rule, in float64:
    each round flips signs, then transforms the leading block (even rounds) or the trailing
    block (odd rounds) of m = the largest power of two <= d components."""
    rounds, d = signs.shape
    m = 1 << (d.bit_length() - 1)
    out = np.eye(d)
    for r in range(rounds):
        step = np.diag(signs[r].astype(np.float64))
        lo = 0 if r % 2 == 0 else d - m
        block = np.eye(d)
        block[lo : lo + m, lo : lo + m] = sylvester(m)
        out = out @ step @ block.T  # v @ M: flip, then H (symmetric) on the block
    return out


@pytest.mark.parametrize("d", DIMS)
def test_the_rotation_is_orthogonal_and_matches_the_reference(d: int) -> None:
    signs = hadamard_signs(d, seed=d)
    m = structured_matrix(signs).astype(np.float64)
    np.testing.assert_allclose(m @ m.T, np.eye(d), atol=2e-6)
    np.testing.assert_allclose(m, reference(signs), atol=2e-6)
    x = np.random.default_rng(d).standard_normal((5, d)).astype(np.float32)
    np.testing.assert_allclose(structured_rows(x, signs), x @ m, rtol=1e-4, atol=1e-4)
    norms = np.linalg.norm(structured_rows(x, signs), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(x, axis=1), rtol=1e-5)


@pytest.mark.parametrize("d", [50, 384, 1536])
def test_codes_equal_the_dense_form_and_do_not_depend_on_the_batch(d: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, d)).astype(np.float32)
    c = rng.standard_normal(d).astype(np.float32)
    signs = hadamard_signs(d, seed=3)
    got = encode_rows(x, c, signs, METRIC_L2)
    dense = encode_rows(x, c, structured_matrix(signs), METRIC_L2)
    # the sign bits agree wherever a rotated component is not within rounding of 0
    r = (x - c) @ structured_matrix(signs)
    clear = (np.abs(r) > 1e-4).all(1)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got[clear, :-1], dense[clear, :-1])
    f_got = got[:, -1:].view(np.float32)
    f_dense = dense[:, -1:].view(np.float32)
    np.testing.assert_allclose(f_got, f_dense, rtol=1e-2)  # bfloat16-rounded factors
    one = np.stack([encode_rows(x[i : i + 1], c, signs, METRIC_L2)[0] for i in range(0, 300, 7)])
    np.testing.assert_array_equal(one, got[::7])
    big = np.repeat(x, 15, axis=0)  # past the parallel threshold (4,096 rows)
    np.testing.assert_array_equal(encode_rows(big, c, signs, METRIC_L2)[::15], got)


def test_signs_and_bad_shapes() -> None:
    s = hadamard_signs(384, seed=0)
    assert s.dtype == np.int8 and s.shape == (4, 384) and set(np.unique(s)) == {-1, 1}
    np.testing.assert_array_equal(s, hadamard_signs(384, seed=0))  # seeded
    assert (s != hadamard_signs(384, seed=1)).any()
    x = np.zeros((2, 384), np.float32)
    with pytest.raises(ValueError, match="rotation"):
        encode_rows(x, np.zeros(384, np.float32), hadamard_signs(383), METRIC_L2)
