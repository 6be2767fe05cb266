"""The additive (residual-quantiser) residual codes: beam search against brute force, the
lookup table against decoding, the anisotropic error, and the gain over product codes of the
same bytes on clustered residuals."""

from __future__ import annotations

import itertools

import numpy as np
from oracles import clustered_documents

from vecdb.index.multivector.additive import (
    additive_lut,
    decode_additive,
    encode_additive,
    train_additive,
)
from vecdb.index.multivector.codec import encode_residuals, train_books


def _cost(e: np.ndarray, u: np.ndarray, eta: float) -> np.ndarray:
    return np.einsum("ij,ij->i", e, e) + (eta - 1.0) * np.einsum("ij,ij->i", e, u) ** 2


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    u = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return (0.3 * x + 0.1 * rng.standard_normal((n, d))).astype(np.float32), u


def test_a_full_beam_finds_the_brute_force_optimum() -> None:
    """With 2 codebooks of 256 and a beam of 256, the beam keeps every first choice, so it
    returns the best of all 65,536 codes, plain and anisotropic."""
    r, u = _data(40, 6, 0)
    books = train_additive(r, 2, 4, 10_000, 0)
    pairs = np.array(list(itertools.product(range(256), repeat=2)))
    sums = books[0][pairs[:, 0]] + books[1][pairs[:, 1]]
    for eta in (1.0, 4.0):
        got = encode_additive(r, u, books, eta, beam=256)
        for i in range(len(r)):
            best = _cost(r[i] - sums, np.broadcast_to(u[i], sums.shape), eta).min()
            mine = _cost(r[i : i + 1] - decode_additive(got[i : i + 1], books), u[i : i + 1], eta)
            assert mine[0] <= best + 1e-4


def test_wider_beams_never_code_worse_on_average() -> None:
    r, u = _data(2000, 16, 1)
    books = train_additive(r, 4, 6, 10_000, 1)
    errs = [
        float(
            _cost(r - decode_additive(encode_additive(r, u, books, 4.0, b), books), u, 4.0).mean()
        )
        for b in (1, 4, 16)
    ]
    assert errs[2] <= errs[1] + 1e-6 <= errs[0] + 2e-6


def test_the_lookup_table_sums_to_the_decoded_scores() -> None:
    r, u = _data(300, 24, 2)
    books = train_additive(r, 5, 4, 10_000, 2)
    codes = encode_additive(r, u, books, 4.0)
    q = np.random.default_rng(3).standard_normal((7, 24)).astype(np.float32)
    lut = additive_lut(q, books)
    assert lut.shape == (5, 256, 7) and lut.dtype == np.float32
    summed = lut[np.arange(5)[None, :], codes.astype(np.int64)].sum(axis=1)  # (n, m)
    np.testing.assert_allclose(summed, decode_additive(codes, books) @ q.T, atol=1e-4)


def test_anisotropic_coding_moves_the_error_off_the_token_direction() -> None:
    r, u = _data(3000, 16, 4)
    books = train_additive(r, 4, 6, 10_000, 4)
    along = []
    for eta in (1.0, 4.0):
        e = r - decode_additive(encode_additive(r, u, books, eta), books)
        along.append(float((np.einsum("ij,ij->i", e, u) ** 2).mean()))
    assert along[1] < 0.7 * along[0]


def test_additive_codes_beat_product_codes_of_the_same_bytes_on_clustered_residuals() -> None:
    """Residuals of clustered unit tokens around their document's mean: the residual quantiser
    at 8 bytes (d = 32) leaves less squared error than the product codes (4 dims a byte)."""
    docs = clustered_documents(300, 32, seed=5)
    x = np.concatenate(docs).astype(np.float32)
    means = np.concatenate([np.repeat(dd.mean(0, keepdims=True), len(dd), 0) for dd in docs])
    r = (x - means).astype(np.float32)
    pq_books = train_books(r, 2, 0)
    pq_codes = encode_residuals(r, x, pq_books)
    per = pq_books.shape[2]
    pq_rec = np.concatenate([pq_books[p][pq_codes[:, p]] for p in range(8)], axis=1)[:, :32]
    rq_books = train_additive(r, 8, 8, 65_536, 0)
    rq_rec = decode_additive(encode_residuals(r, x, rq_books, additive=True), rq_books)
    assert per == 4
    pq_err = float(((r - pq_rec) ** 2).sum(1).mean())
    rq_err = float(((r - rq_rec) ** 2).sum(1).mean())
    assert rq_err < pq_err


def test_split_codebooks_stay_in_their_dimension_group() -> None:
    """splits = 2 at d = 10, 4 bytes: bytes 0 and 2 span dimensions 0-4 only, bytes 1 and 3
    dimensions 5-9 (interleaved), and the code sums to a residual estimate better than none."""
    r, u = _data(1500, 10, 6)
    books = train_additive(r, 4, 6, 10_000, 6, splits=2)
    assert not books[0::2, :, 5:].any() and not books[1::2, :, :5].any()
    rec = decode_additive(encode_additive(r, u, books, 4.0), books)
    assert float(((r - rec) ** 2).sum(1).mean()) < 0.5 * float((r * r).sum(1).mean())
