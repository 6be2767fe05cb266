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


@pytest.mark.parametrize("chunk_bytes", [None, 64])
def test_balanced_assignment_follows_the_online_rule(
    chunk_bytes: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a size penalty, rows are assigned one by one in the generator's permutation to
    argmin_c d + lam x (rows already in c): a plain-Python oracle of that rule over the same
    distances, whether the rows fit one block (distances in place) or many chunks."""
    if chunk_bytes is not None:
        monkeypatch.setattr(km, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    c = rng.normal(size=(5, 16)).astype(np.float32)
    lam = 0.05
    labels, dist = assign(x, c, lam, np.random.default_rng(3))
    d = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(2)
    sizes, want = np.zeros(5), np.empty(500, np.int64)
    for i in np.random.default_rng(3).permutation(500):
        want[i] = int(np.argmin(d[i] + lam * sizes))
        sizes[want[i]] += 1
    assert (labels == want).mean() > 0.99  # float32 near-ties aside
    np.testing.assert_allclose(dist, d[np.arange(500), labels], rtol=1e-4, atol=1e-4)
    assert np.bincount(labels, minlength=5).max() < np.bincount(d.argmin(1), minlength=5).max()


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


# --- two levels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_split_counts_shares_k_in_proportion(seed: int) -> None:
    """The total is min(k, rows), no group gets more than its rows, every non-empty group
    gets one while k allows, and no share is more than one off its proportional value
    (the one-per-group floor aside)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 60, rng.integers(1, 25)) * rng.integers(0, 2, 1)[0].clip(1)
    k = int(rng.integers(1, 500))
    out = km.split_counts(sizes, k)
    total = int(sizes.sum())
    assert out.sum() == min(k, total)
    assert (out >= 0).all() and (out <= sizes).all()
    if min(k, total) >= (sizes > 0).sum():
        assert ((out > 0) == (sizes > 0)).all()
        fair = min(k, total) * sizes / max(1, total)
        loose = (out < sizes) & (out > 1)  # neither capped by its rows nor by the floor
        assert (np.abs(out[loose] - fair[loose]) < 1 + 1e-9).all(), (sizes, k, out)
    else:  # fewer than one each: the largest groups get one
        assert set(np.flatnonzero(out)) <= set(np.argsort(-sizes, kind="stable")[: out.sum()])


def test_two_level_kmeans_is_about_as_tight_as_flat() -> None:
    """k = 256 on 40 blobs and on structureless Gaussian rows: every centroid is distinct,
    the squared error of the rows to their nearest centroid is within 3 % of one flat
    clustering's, and on the Gaussian rows the refining iterations lower it."""
    for x in (blobs(20_000, 16, 40, seed=5, spread=1.0),
              np.random.default_rng(0).standard_normal((20_000, 16)).astype(np.float32)):  # fmt: skip
        flat = kmeans(x, 256, iters=6, seed=0, assign_all=False).centroids
        two = km.kmeans_two_level(x, 256, iters=6, seed=0, refine=4)
        assert two.shape == (256, 16) and len(np.unique(two, axis=0)) == 256
        e_flat = assign(x, flat)[1].mean()
        e_two = assign(x, two)[1].mean()
        assert e_two <= 1.03 * e_flat, (e_two, e_flat)
        again = km.kmeans_two_level(x, 256, iters=6, seed=0, refine=4)
        np.testing.assert_array_equal(two, again)  # deterministic for a seed
    unrefined = km.kmeans_two_level(x, 256, iters=6, seed=0, refine=0)
    assert assign(x, unrefined)[1].mean() > 1.01 * e_two


def test_two_level_kmeans_with_fewer_rows_than_k() -> None:
    """k above the rows: each row becomes a centroid (as `kmeans` does)."""
    x = blobs(50, 4, 3, seed=1)
    c = km.kmeans_two_level(x, 200, iters=3, seed=0, refine=1)
    assert len(c) == 50
    np.testing.assert_allclose(np.sort(c, axis=0), np.sort(x, axis=0))


def test_group_centroids_partition_the_centroids() -> None:
    c = blobs(1000, 8, 20, seed=2)
    g = km.group_centroids(c)
    assert len(g.centres) == round(1000**0.5)
    assert g.bounds[0] == 0 and g.bounds[-1] == 1000 and (np.diff(g.bounds) >= 0).all()
    np.testing.assert_array_equal(np.sort(g.members), np.arange(1000))


def test_grouped_assignment_probing_every_group_is_exact() -> None:
    """With probe = G the grouped assignment is `assign` (ties aside: equal distances)."""
    x = blobs(3000, 12, 30, seed=4)
    c = kmeans(x, 300, iters=3, seed=0, assign_all=False).centroids
    g = km.group_centroids(c)
    lab, dist = km.assign_grouped(x, c, g, len(g.centres))
    ref_lab, ref_dist = assign(x, c)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert np.mean(lab == ref_lab) > 0.999


def test_grouped_assignment_of_wide_groups_is_exact_in_every_tile() -> None:
    """Groups of 64 and more members (scored four rows by 64 members a tile, the rest 16 at
    a time) and row counts that leave 1-3 rows in a group's last tile: probing every group
    still gives `assign`'s nearest centroid and distance."""
    rng = np.random.default_rng(9)
    c = rng.standard_normal((20_000, 20)).astype(np.float32)
    g = km.group_centroids(c)
    sizes = np.diff(g.bounds)
    assert sizes.max() >= 128 and (sizes % 64 != 0).any()
    for n in (2001, 2002, 2003, 2004):
        x = rng.standard_normal((n, 20)).astype(np.float32)
        lab, dist = km.assign_grouped(x, c, g, len(g.centres))
        ref_lab, ref_dist = assign(x, c)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
        assert np.mean(lab == ref_lab) > 0.999


def test_grouped_assignment_reports_true_distances_and_is_mostly_exact() -> None:
    """With a few groups probed each row gets a real centroid at the reported (squared)
    distance, never nearer than the true nearest, and the nearest for nearly every row;
    fewer groups probed never do better."""
    x = blobs(6000, 24, 60, seed=6, spread=1.5)
    c = kmeans(x, 1024, iters=3, seed=0, assign_all=False).centroids
    g = km.group_centroids(c)
    ref_lab, ref_dist = assign(x, c)
    got = {}
    for probe in (2, 8):
        lab, dist = km.assign_grouped(x, c, g, probe)
        true = ((x - c[lab]) ** 2).sum(1)
        np.testing.assert_allclose(dist, true, rtol=1e-3, atol=1e-3)
        assert (dist >= ref_dist - 1e-3).all()
        got[probe] = (np.mean(lab == ref_lab), dist)
    assert got[8][0] > 0.95, got[8][0]
    assert (got[8][1] <= got[2][1] + 1e-4).all()  # a superset of the groups


class _Stop(Exception):
    pass


def test_a_tick_sees_every_iteration_and_can_stop_the_clustering() -> None:
    """`tick` is called after each Lloyd iteration (flat: (i, iters)) and after each
    top-level iteration, group and refining iteration (two levels: the work done, rising to
    its total); what it raises stops the clustering at once (no later step runs)."""
    x = blobs(4000, 8, 30, seed=3)
    seen: list[tuple[int, int]] = []
    kmeans(x, 16, iters=5, seed=0, tick=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    seen.clear()
    km.kmeans_two_level(x, 100, iters=3, seed=0, refine=2, tick=lambda i, n: seen.append((i, n)))
    g = round(100**0.5)
    assert len(seen) == 3 + g + 2 and len({n for _, n in seen}) == 1
    done, total = [i for i, _ in seen], seen[0][1]
    assert done[-1] == total and all(a <= b for a, b in zip(done, done[1:]))
    refine = km.REFINE_PROBE * 10 + g  # a refining iteration's work: 8 groups of 10, 10 centres
    assert done[-1] - done[-2] == refine and done[-2] - done[-3] == refine
    assert done[:3] == [g, 2 * g, 3 * g]  # the top level: every row against g centres

    def stop_at(at: int):  # type: ignore[no-untyped-def]
        def tick(i: int, n: int) -> None:
            seen.append((i, n))
            if len(seen) == at:
                raise _Stop

        return tick

    for at in (2, 3 + 4, 3 + g + 1):  # in the top level, among the groups, while refining
        seen.clear()
        with pytest.raises(_Stop):
            km.kmeans_two_level(x, 100, iters=3, seed=0, refine=2, tick=stop_at(at))
        assert len(seen) == at
    seen.clear()
    with pytest.raises(_Stop):
        kmeans(x, 16, iters=5, seed=0, tick=stop_at(3))
    assert len(seen) == 3


def test_a_grouped_assignment_ticks_per_chunk_and_can_be_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`assign_grouped` calls tick(rows done, n) after each chunk of rows, with the same
    answer as without it; what the tick raises stops it."""
    x = blobs(5000, 8, 30, seed=4)
    c = kmeans(x, 100, iters=2, seed=0, assign_all=False).centroids
    g = km.group_centroids(c)
    want = km.assign_grouped(x, c, g, 3)
    monkeypatch.setattr(km, "CHUNK_BYTES", 1000 * len(g.centres) * 4)  # 1000-row chunks
    seen: list[tuple[int, int]] = []
    got = km.assign_grouped(x, c, g, 3, tick=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5000) for i in range(1000, 5001, 1000)]
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])

    def stop(i: int, _n: int) -> None:
        seen.append((i, _n))
        raise _Stop

    seen.clear()
    with pytest.raises(_Stop):
        km.assign_grouped(x, c, g, 3, tick=stop)
    assert seen == [(1000, 5000)]


def test_centroid_groups_stay_even_on_tokens_around_many_topics() -> None:
    """Tokens around many near-orthogonal topics: a plain k-means of their centroids made
    hub groups (here one of 164 of 2,048 centroids, 3.6x the mean; 4,079 of 16,384 on a
    million such tokens) that most rows probed. The balanced grouping keeps every group
    under twice the mean, and the grouped assignment (8 of the 45 groups) still finds the
    exact nearest centroid of >= 99% of the rows, at a mean squared distance within 1%."""
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((300, 128)).astype(np.float32)
    x = topics[rng.integers(0, 300, 50_000)] + 0.6 * rng.standard_normal((50_000, 128))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    c = kmeans(x, 2048, iters=4, seed=0, assign_all=False).centroids
    g = km.group_centroids(c)
    sizes = np.diff(g.bounds)
    assert len(sizes) == 45 and sizes.max() <= 2 * sizes.mean(), sizes.max()
    labels, dist = km.assign_grouped(x, c, g, 8)
    exact, exact_d = assign(x, c)
    assert (labels == exact).mean() >= 0.99
    assert dist.mean() <= 1.01 * exact_d.mean()
    np.testing.assert_allclose(dist, ((x - c[labels]) ** 2).sum(1), rtol=1e-3, atol=1e-4)


def test_a_calibrated_probe_is_the_fewest_groups_within_the_distance_bar() -> None:
    """Centroids on 2,048 near-orthogonal topics, grouped 45 ways: a group's centre (the
    mean of ~45 unrelated topics) says little about where a row's nearest centroid is, so
    2 groups miss it. `calibrate_probe` doubles the probe until the mean squared distance is
    within PROBE_EXCESS of exact, and no smaller probe of its doublings reaches that. Where
    the groups follow the data (blobs), the starting probe is kept."""
    rng = np.random.default_rng(3)
    c = rng.standard_normal((2048, 64)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, 2048, 20_000)] + 0.08 * rng.standard_normal((20_000, 64))
    x = x.astype(np.float32)
    g = km.group_centroids(c)
    exact = float(assign(x, c)[1].sum(dtype=np.float64))

    def excess(probe: int) -> float:
        return float(km.assign_grouped(x, c, g, probe)[1].sum(dtype=np.float64)) / exact - 1

    p = km.calibrate_probe(x, c, g, 2)
    assert 2 < p < len(g.centres), p
    assert excess(p) <= 1.5 * km.PROBE_EXCESS, excess(p)  # (measured on 2,048 of the rows)
    assert excess(p // 2) > km.PROBE_EXCESS, excess(p // 2)
    assert km.calibrate_probe(x, c, g, len(g.centres) + 5) == len(g.centres)

    y = blobs(20_000, 16, 40, seed=5)
    cy = kmeans(y, 1024, iters=3, seed=0, assign_all=False).centroids
    gy = km.group_centroids(cy)
    assert km.calibrate_probe(y, cy, gy, 8) == 8
