"""The bulk build's disk budget (`assign.disk_cap`): which replicas it drops and what the
built index keeps. Property tests on the trim itself, and a real build of clustered vectors
whose RNG rule keeps more replicas than the budget allows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.index.spann import open_spann
from vecdb.index.spann.assign import disk_cap
from vecdb.index.spann.build import BUILD_SHARE
from vecdb.kernels.posting import SLOT_BYTES


def placements(
    rng: np.random.Generator, n: int, r: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """(n, r) posting ids, nearest first and -1 padded, and ascending squared distances."""
    kept = rng.integers(1, r + 1, n)
    posts = np.full((n, r), -1, np.int32)
    dists = np.full((n, r), np.inf, np.float32)
    for i, c in enumerate(kept):
        posts[i, :c] = rng.choice(1000, c, replace=False)
        dists[i, :c] = np.sort(rng.uniform(0.0, 4.0, c)).astype(np.float32)
    dists[rng.random(n) < 0.05, 0] = 0.0  # vectors sitting on their head
    return posts, dists


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 300),
    r=st.integers(1, 8),
    share=st.floats(0.0, 1.2),
)
def test_the_trim_drops_the_relatively_farthest_replicas_and_keeps_every_nearest(
    seed: int, n: int, r: int, share: float
) -> None:
    rng = np.random.default_rng(seed)
    posts, dists = placements(rng, n, r)
    before_p, before_d = posts.copy(), dists.copy()
    total = int((posts >= 0).sum())
    limit = int(share * total)
    cap = disk_cap(posts, limit, dists)
    kept = posts >= 0
    # every row keeps its nearest, and a prefix of what it had (still -1 padded)
    assert kept[:, 0].all()
    assert (np.diff(kept.astype(np.int8), axis=1) <= 0).all()
    assert (posts[kept] == before_p[kept]).all()
    assert np.array_equal(dists[kept], before_d[kept])
    if total <= limit or r == 1:  # within budget, or nothing but nearest replicas
        assert cap == 0 and np.array_equal(posts, before_p)
        return
    # within budget unless only nearest replicas are left; never more trimmed than a tie needs
    assert kept.sum() <= max(limit, n)
    # no kept spare is relatively farther than a dropped one
    near = np.maximum(before_d[:, :1], np.float32(1e-12))
    ratio = before_d / near
    dropped = (before_p >= 0) & ~kept
    spare = kept.copy()
    spare[:, 0] = False
    if dropped.any() and spare.any():
        assert ratio[spare].max() <= ratio[dropped].min()
    # the cap later placements keep is the column trim's for the same budget
    per_col = (before_p >= 0).sum(0)
    assert 1 <= cap < r
    assert per_col[:cap].sum() <= limit or cap == 1
    assert cap == r - 1 or per_col[: cap + 1].sum() > limit


def test_without_distances_whole_columns_go_farthest_first() -> None:
    posts = np.array([[1, 2, 3], [4, 5, -1], [6, -1, -1]], np.int32)
    cap = disk_cap(posts, 5)
    assert cap == 2
    assert posts.tolist() == [[1, 2, -1], [4, 5, -1], [6, -1, -1]]


def test_a_build_over_its_budget_fits_it_and_finds_every_vector(tmp_path: Path) -> None:
    """Clustered vectors keep several replicas by the RNG rule; a budget of 1.5x raw
    (float32 postings: about 1.4 entries per vector fit) is met with more than one entry
    per vector left, and every vector is still found by a search that reads every
    posting."""
    dim, n = 16, 6000
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((40, dim)).astype(np.float32) * 3
    x = centres[rng.integers(0, 40, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    params = {"threads": 1, "max_disk_ratio": 1.5, "vector_dtype": "float32", "head_fraction": 0.05}
    idx, _ = open_spann(dim, "l2", params, tmp_path)
    try:
        idx.build(np.arange(n, dtype=np.int64), x)
        st_ = idx.state
        entries = st_.table.post_entries[: st_.next_posting].sum()
        budget = BUILD_SHARE * 1.5 * 4 * dim * n / (4 * dim + SLOT_BYTES + 1)
        assert n < entries <= budget
        # (the file adds each block's rounding to whole pages, large at this tiny size;
        # test_spann_disk_bound checks the file's length at 1024 dimensions)
        assert 1 <= st_.replica_cap < 8
        res = idx.search(x[:300], 1, {"max_postings": 4096, "prune_ratio": 1e9})
        assert (res.slots[:, 0] == np.arange(300)).all()
    finally:
        idx.close()
