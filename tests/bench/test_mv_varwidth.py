"""The variable-width residual study (`vecdb.bench.multivector.varwidth`): its scoring from
decoded tokens equals the engine's residual kernel run per width class, and its win counts and
class splits on hand-made inputs."""

from __future__ import annotations

import numpy as np

from vecdb.bench.multivector import varwidth as vw
from vecdb.bench.multivector.scoring import maxsim
from vecdb.index.multivector import codec as mvcodec
from vecdb.index.multivector.params import MVBuildParams
from vecdb.kernels.bitpack import build_lut, code_bits, pack_codes
from vecdb.kernels.maxsim import centroid_scores, residual_maxsim


def _corpus(n_docs: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 12, n_docs)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    x = rng.standard_normal((int(offsets[-1]), d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), offsets


def _engine_scores(
    q: np.ndarray, widths: list[vw.Width], which: np.ndarray, centroids: np.ndarray,
    codes: np.ndarray, offsets: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """MaxSim of every document with each class in its own doc-major arrays, scored by
    `residual_maxsim` one query token at a time (the max over classes is per query token)."""
    n_docs = len(offsets) - 1
    doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
    bits = code_bits(len(centroids))
    best = np.full((len(q), n_docs), -np.inf, np.float32)
    for c, w in enumerate(widths):
        sel = which == c
        off = np.concatenate([[0], np.cumsum(np.bincount(doc_of[sel], minlength=n_docs))])
        packed = pack_codes(codes[sel], bits)
        data = np.ascontiguousarray(w.codes[sel])
        for i in range(len(q)):
            qi = q[i : i + 1]
            lut = build_lut(qi, w.books) if w.nbytes else np.zeros((0, 256, 1), np.float32)
            skq = np.ascontiguousarray(centroids @ qi.T, np.float32)
            out = np.empty(n_docs, np.float32)
            residual_maxsim(lut, data, off.astype(np.int64), np.arange(n_docs), out, skq,
                            packed, bits)  # fmt: skip
            best[i] = np.maximum(best[i], out)
    return best.sum(axis=0)


def test_decoded_scores_equal_the_residual_kernel_per_class() -> None:
    """Scoring the mixed decoded tokens gives the engine's residual score with one array,
    one codebook per width class (a centroid-only class included)."""
    d = 16
    tokens, offsets = _corpus(40, d, 1)
    centroids, codes = (lambda c: (c[0].centroids, c[1]))(
        mvcodec.train(tokens, MVBuildParams.parse({"K": 16}), 1, unit=True)
    )
    widths = [vw.train_width(tokens, centroids, codes, nb, 0) for nb in (8, 2, 0)]
    assert [w.bits for w in widths] == [2, 1, 0]
    which = vw.classes(vw.doc_rank(np.random.default_rng(2).random(len(tokens)), offsets),
                       (0.3, 0.4, 0.3))  # fmt: skip
    assert set(which.tolist()) == {0, 1, 2}
    mixed = vw.mix(widths, which)
    q = np.random.default_rng(3).standard_normal((5, d)).astype(np.float32)
    ours = maxsim(q, mixed, offsets)
    engine = _engine_scores(q, widths, which, centroids, codes, offsets)
    np.testing.assert_allclose(ours, engine, rtol=1e-5, atol=1e-5)
    # the prototype kernel over the classes' doc-major arrays gives the same scores
    stores = vw.class_stores(widths, which, codes, offsets, len(centroids))
    cand = np.arange(len(offsets) - 1, dtype=np.int64)[::-1].copy()
    proto = vw.classes_rerank(q, centroid_scores(centroids, q), stores, code_bits(16), cand)
    np.testing.assert_allclose(proto, ours[cand], rtol=1e-5, atol=1e-5)
    # and the decoded residual is not the token itself: the widths differ in error
    err = [float(np.square(w.decoded - tokens).sum()) for w in widths]
    assert err[0] < err[1] < err[2]


def test_win_counts_and_class_shares() -> None:
    """Each query token gives one win per document (to its best token); classes follow the
    rank fractions and shares."""
    tokens = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]], np.float32)
    offsets = np.array([0, 2, 4], np.int64)
    q = np.array([[1, 0], [0, 1]], np.float32)
    wins_all, wins_top = vw.win_counts(tokens, offsets, q, np.array([0, 1, 2], np.int64), top=1)
    # doc 0: [1,0] wins q0, [0,1] wins q1; doc 1: [0.6,0.8] wins both
    assert wins_all.tolist() == [1, 1, 2, 0]
    # the query's top document is doc 0 (2.0 vs 1.4): only its wins count
    assert wins_top.tolist() == [1, 1, 0, 0]
    rank = vw.doc_rank(np.array([3.0, 1.0, 2.0, 5.0, 4.0]), np.array([0, 3, 5], np.int64))
    np.testing.assert_allclose(rank, [1 / 6, 5 / 6, 3 / 6, 1 / 4, 3 / 4])
    assert vw.classes(rank, (0.6, 0.4)).tolist() == [0, 1, 0, 0, 1]
    (ws, shares) = vw.pair(64, 16, 32.0)
    assert ws == (64, 16) and abs(64 * shares[0] + 16 * shares[1] - 32.0) < 1e-12


def test_lagrange_meets_the_budget_at_least_error() -> None:
    """The error-driven allocation spends at most the budget, nearly all of it, and its total
    error is no larger than that of a split by the narrow width's error at the same shares."""
    rng = np.random.default_rng(4)
    err_hi = rng.random(2000) * 0.2
    err_lo = err_hi + rng.random(2000)
    err = np.stack([err_hi, err_lo])
    ws = np.array([64.0, 16.0])
    which = vw.lagrange(err, ws, 32.0)
    assert 31.5 <= ws[which].mean() <= 32.0
    by_rank = vw.classes(vw.global_rank(err_lo), tuple(np.bincount(which, minlength=2) / 2000))
    assert err[which, np.arange(2000)].sum() <= err[by_rank, np.arange(2000)].sum() + 1e-9
