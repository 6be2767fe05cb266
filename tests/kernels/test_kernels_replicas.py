"""The fused RNG replica kernel against a plain numpy statement of the rule."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.kernels.replicas import PARALLEL_MIN_ROWS, rng_replicas


def rule(x: np.ndarray, cand: np.ndarray, heads: np.ndarray, factor: float, replicas: int):
    """The RNG rule row by row in float64: walk candidates by ascending distance, accept c
    unless an accepted a has factor * |c - a|^2 < |x - c|^2."""
    out = np.full((len(x), replicas), -1, np.int64)
    for i in range(len(x)):
        valid = cand[i][cand[i] >= 0]
        d = ((heads[valid].astype(np.float64) - x[i]) ** 2).sum(1)
        taken: list[int] = []
        for j in np.argsort(d, kind="stable"):
            if len(taken) == replicas:
                break
            c = valid[j]
            if all(factor * ((heads[c] - heads[a]) ** 2).sum() >= d[j] for a in taken):
                taken.append(int(c))
        out[i, : len(taken)] = taken
    return out


def problem(rows: int, seed: int, dim: int = 24, n_heads: int = 60, m: int = 12):
    rng = np.random.default_rng(seed)
    heads = rng.standard_normal((n_heads, dim)).astype(np.float32)
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    cand = np.stack([rng.choice(n_heads, m, replace=False) for _ in range(rows)]).astype(np.int64)
    cand[rng.random(cand.shape) < 0.15] = -1  # excluded candidates
    return x, cand, heads


@pytest.mark.parametrize("rows", [50, PARALLEL_MIN_ROWS + 7])
@pytest.mark.parametrize("given_distances", [False, True])
def test_rng_replicas_follows_the_rule(rows: int, given_distances: bool) -> None:
    x, cand, heads = problem(rows, seed=rows)
    norms = np.einsum("ij,ij->i", heads, heads)
    cand_d = None
    if given_distances:
        cand_d = ((x[:, None, :] - heads[np.maximum(cand, 0)]) ** 2).sum(2).astype(np.float32)
        cand_d[cand < 0] = -1.0  # never read for a missing candidate (read, it would sort first)
    picked, dist = rng_replicas(x, cand, heads, norms, 1.0, 4, cand_d)
    want = rule(x, cand, heads, 1.0, 4)
    # float32 dot products may flip a near tie; the rule must hold on all but a few rows
    agree = (picked == want).all(1)
    assert agree.mean() > 0.99
    # every row with a candidate gets its nearest one first, distances ascending, inf padded
    has = (cand >= 0).any(1)
    assert (picked[has, 0] >= 0).all() and (picked[~has] == -1).all()
    d_true = ((x[:, None, :] - heads[np.maximum(picked, 0)]) ** 2).sum(2)
    np.testing.assert_allclose(dist[picked >= 0], d_true[picked >= 0], rtol=1e-4, atol=1e-4)
    assert np.isinf(dist[picked < 0]).all()
    np.testing.assert_array_equal(np.sort(dist, axis=1), dist)  # nearest first


def test_rng_replicas_factor_keeps_more_when_larger() -> None:
    x, cand, heads = problem(300, seed=9)
    norms = np.einsum("ij,ij->i", heads, heads)
    few, _ = rng_replicas(x, cand, heads, norms, 0.5, 8)
    many, _ = rng_replicas(x, cand, heads, norms, 4.0, 8)
    assert (many >= 0).sum() > (few >= 0).sum()
    np.testing.assert_array_equal(many, rule(x, cand, heads, 4.0, 8))


def test_rng_replicas_empty() -> None:
    p, d = rng_replicas(
        np.zeros((0, 4), np.float32),
        np.zeros((0, 3), np.int64),
        np.zeros((2, 4), np.float32),
        np.zeros(2, np.float32),
        1.0,
        2,
    )
    assert p.shape == (0, 2) and d.shape == (0, 2)
