"""k-means against scikit-learn's inertia, the chunked assignment against a numpy oracle, the
balance penalty, and the edge cases: d=1, odd d, duplicate points, k >= n, zero rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans

from vecdb.kernels import kmeans as km
from vecdb.kernels.kmeans import assign, kmeans


def blobs(n: int, d: int, centres: int, seed: int, spread: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)) * 4
    return (c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize(("d", "k"), [(1, 4), (7, 8), (33, 16), (64, 50)])
def test_inertia_is_close_to_scikit_learn(d: int, k: int) -> None:
    """Plain k-means reaches an inertia within 10 % of scikit-learn's (k-means++, 3 inits)."""
    x = blobs(3000, d, k, seed=d)
    ours = kmeans(x, k, iters=30, sample=len(x), seed=1)
    ref = SkKMeans(n_clusters=k, n_init=3, random_state=0).fit(x.astype(np.float64))
    assert ours.inertia <= 1.10 * ref.inertia_, (ours.inertia, ref.inertia_)
    # the reported distances are the true squared distances to the reported centroids
    expect = ((x - ours.centroids[ours.labels]) ** 2).sum(1)
    np.testing.assert_allclose(ours.distances, expect, rtol=1e-3, atol=1e-3)


def test_sampled_training_assigns_every_row_to_its_nearest_centroid() -> None:
    """With a training sample smaller than n, every row still gets its nearest centroid."""
    x = blobs(5000, 9, 10, seed=3)
    res = kmeans(x, 10, sample=500, seed=2)
    d = ((x[:, None, :] - res.centroids[None, :, :]) ** 2).sum(2)
    assert len(res.labels) == 5000
    np.testing.assert_allclose(d[np.arange(5000), res.labels], d.min(1), rtol=1e-4, atol=1e-4)


def test_chunked_assignment_matches_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Assignment in many small chunks equals a one-line numpy argmin."""
    monkeypatch.setattr(km, "CHUNK_BYTES", 64)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1001, 13)).astype(np.float32)
    c = rng.normal(size=(7, 13)).astype(np.float32)
    labels, dist = assign(x, c)
    d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2)
    assert (labels == d.argmin(1)).mean() > 0.999  # float32 ties aside
    np.testing.assert_allclose(dist, d.min(1), rtol=1e-4, atol=1e-4)


def test_balance_evens_out_cluster_sizes() -> None:
    """On skewed data the size penalty shrinks the largest cluster."""
    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(0, 1, (4000, 4)), rng.normal(6, 1, (400, 4))]).astype(np.float32)
    plain = np.bincount(kmeans(x, 8, seed=0).labels, minlength=8)
    even = np.bincount(kmeans(x, 8, seed=0, balance=1.0).labels, minlength=8)
    assert even.max() < plain.max() and even.std() < plain.std()


def test_duplicate_points_give_zero_inertia() -> None:
    """Three distinct points repeated many times cluster exactly."""
    base = np.array([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0], [-3.0, 0.0, 1.0]], np.float32)
    x = np.repeat(base, 200, axis=0)
    res = kmeans(x, 3, seed=0)
    assert res.inertia == pytest.approx(0.0, abs=1e-6)
    assert len(set(res.labels.tolist())) == 3


def test_more_clusters_than_distinct_points_does_not_fail() -> None:
    """k above the number of distinct points still returns k centroids and zero inertia."""
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    res = kmeans(x, 5, seed=0)
    assert res.centroids.shape == (5, 3) and res.inertia == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_k_at_least_n_makes_every_row_a_centroid(n: int) -> None:
    """With k >= n each row is its own centroid (k' = n), distances zero."""
    x = np.random.default_rng(6).normal(size=(n, 5)).astype(np.float32)
    res = kmeans(x, 5, seed=0)
    assert res.centroids.shape == (n, 5) and (res.labels == np.arange(n)).all()
    assert res.inertia == 0.0


def test_same_seed_same_result_and_bad_k_rejected() -> None:
    """Deterministic per seed; k < 1 is an error."""
    x = blobs(800, 6, 5, seed=7)
    a, b = kmeans(x, 5, seed=3, sample=300), kmeans(x, 5, seed=3, sample=300)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    with pytest.raises(ValueError, match="k"):
        kmeans(x, 0)


def test_large_k_uses_random_seeding_and_fills_every_cluster() -> None:
    """Beyond the k-means++ bound, seeding from distinct rows leaves no cluster empty."""
    x = np.random.default_rng(8).normal(size=(4000, 8)).astype(np.float32)
    res = kmeans(x, 300, seed=0, iters=5)
    assert res.centroids.shape == (300, 8)
    assert np.bincount(res.labels, minlength=300).min() >= 1
