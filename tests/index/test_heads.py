"""The clustering tree on its own: the bulk build (balanced leaves, heads are real rows), its
small API (children, path_to_root, leaves_under, centroid, iteration), memberships with
counts and radii, splits and leaf removal, and the persisted arrays."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.index.heads import ROOT, ClusterTree, build_tree, fill_members
from vecdb.kernels.kmeans import assign


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(20, d)).astype(np.float32) * 3
    return (c[rng.integers(0, 20, n)] + rng.normal(size=(n, d))).astype(np.float32)


def built(n: int = 3000, d: int = 6, leaves: int = 300) -> tuple[ClusterTree, np.ndarray]:
    """A tree over clustered data with memberships: primary = nearest head."""
    x = clustered(n, d, seed=1)
    tree, head_rows = build_tree(x, leaves, seed=0)
    heads = x[head_rows]
    tree.leaf_vectors = lambda p: heads[p]
    primary, _ = assign(x, heads)
    fill_members(tree, np.arange(n), primary, x)
    return tree, x


def test_build_makes_balanced_leaves_whose_heads_are_real_rows() -> None:
    """Above DIRECT_LEAVES the root branches; every head is a distinct input row; leaf sizes
    stay within a small factor of the mean."""
    tree, x = built(leaves=300)
    postings = tree.leaf_postings()
    assert len(postings) == 300 and (postings == np.arange(300)).all()
    assert len(tree.children(ROOT)) > 1 and not tree.is_leaf(ROOT)
    sizes = np.array([tree.count[tree.leaf_of[p]] for p in postings])
    assert sizes.sum() == len(x) and sizes.max() <= 8 * sizes.mean()


def test_api_walks_agree() -> None:
    """Iteration visits each live node once, parents first; path_to_root and leaves_under
    agree with children(); the root's centroid is the data mean; levels increase by one."""
    tree, x = built()
    order = list(tree)
    assert order[0] == ROOT and len(order) == len(set(order)) == len(tree)
    seen: set[int] = set()
    for node in order:
        assert node == ROOT or int(tree.parent[node]) in seen
        seen.add(node)
        for c in tree.children(node):
            assert tree.parent[c] == node and tree.level[c] == tree.level[node] + 1
    leaf = int(tree.leaf_of[5])
    path = tree.path_to_root(leaf)
    assert path[0] == leaf and path[-1] == ROOT and len(path) == tree.level[leaf] + 1
    under = set(tree.leaves_under(ROOT).tolist())
    assert under == {n for n in order if tree.is_leaf(n)}
    np.testing.assert_allclose(tree.centroid(ROOT), x.mean(0), atol=1e-4)
    np.testing.assert_array_equal(tree.centroid(leaf), tree.leaf_vectors(np.array([5]))[0])


def test_counts_and_radii_bound_the_members() -> None:
    """Every node's count is its children's sum, and its radius bounds the distance of every
    member (primary leaf below it) to its centroid."""
    tree, x = built()
    for node in tree:
        kids = tree.children(node)
        if len(kids):
            assert tree.count[node] == tree.count[kids].sum()
    for s in range(0, len(x), 7):
        for node in tree.path_to_root(int(tree.leaf_of[tree.primary[s]])):
            d = np.linalg.norm(x[s] - tree.centroid(int(node)))
            assert d <= tree.radius[node] * (1 + 1e-5) + 1e-5


def test_moves_and_drops_keep_counts() -> None:
    """set_primary moves counts from the old path to the new; drop_primary leaves it."""
    tree, _ = built()
    total = int(tree.count[ROOT])
    slots = np.arange(10)
    tree.set_primary(slots, np.full(10, 7))
    assert tree.count[tree.leaf_of[7]] >= 10 and tree.count[ROOT] == total
    tree.drop_primary(slots[:4])
    assert tree.count[ROOT] == total - 4 and (tree.primary[:4] == -1).all()


def test_split_then_remove_leaves_no_childless_node() -> None:
    """A split turns a leaf into an inner node with two leaves; removing both (after their
    members moved) removes the inner node too, and empty ancestors up the path."""
    tree, x = built(n=400, leaves=20)
    p = 3
    node = int(tree.leaf_of[p])
    members = np.flatnonzero(tree.primary == p)
    labels = np.arange(len(members)) % 2
    heads = np.vstack([tree.leaf_vectors(np.array([p])), x[:2]])  # 20 old heads + 2 new
    old_vectors = tree.leaf_vectors
    tree.leaf_vectors = lambda q: np.vstack([old_vectors(q[q < 20]), heads[-2:]])[: len(q)]
    old_head = tree.centroid(node)
    tree.split_leaf(p, (20, 21), old_head, members, labels)
    assert not tree.is_leaf(node) and len(tree.children(node)) == 2
    assert tree.count[node] == len(members) == tree.count[tree.children(node)].sum()
    np.testing.assert_array_equal(tree.centroid(node), old_head)
    for q in (20, 21):
        tree.set_primary(
            np.flatnonzero(tree.primary == q),
            np.zeros(1, np.int64).repeat(int((tree.primary == q).sum())),
        )
        tree.remove_leaf(q)
    assert not tree.alive(node) and tree.leaf_of[p] == -1
    assert all(len(tree.children(n)) or tree.is_leaf(n) for n in tree)


def test_removing_a_leaf_with_members_is_refused() -> None:
    """A leaf still holding primary members cannot be removed (counts would break)."""
    tree, _ = built(n=400, leaves=20)
    with pytest.raises(AssertionError):
        tree.remove_leaf(0)


def test_sections_round_trip() -> None:
    """The persisted arrays rebuild the same tree."""
    tree, _ = built()
    again = ClusterTree.from_sections(tree.dim, tree.to_sections())
    again.leaf_vectors = tree.leaf_vectors
    assert list(again) == list(tree)
    np.testing.assert_array_equal(again.count[: tree.n_nodes], tree.count[: tree.n_nodes])
    np.testing.assert_array_equal(again.primary, tree.primary)
    np.testing.assert_array_equal(again.leaf_postings(), tree.leaf_postings())
    np.testing.assert_array_equal(again.centroid(ROOT), tree.centroid(ROOT))


def test_tiny_inputs_build() -> None:
    """One row, or one leaf wanted: the root is that leaf."""
    x = np.ones((1, 3), np.float32)
    tree, heads = build_tree(x, 1, seed=0)
    assert list(tree) == [ROOT] and tree.is_leaf(ROOT) and list(heads) == [0]
    tree, heads = build_tree(clustered(50, 3, 2), 1, seed=0)
    assert tree.is_leaf(ROOT) and len(heads) == 1


def test_primary_is_int16_until_a_posting_id_needs_int32() -> None:
    """`primary` stays int16 while posting ids fit, widens (keeping every entry) at the first
    id past it, is saved as int32 either way and loads back as narrow as its ids allow."""
    from vecdb.index import heads as hmod

    tree, _ = built(n=500, d=4, leaves=20)
    assert tree.primary.dtype == np.int16
    before = tree.primary.copy()
    sections = tree.to_sections()
    assert len(sections[9]) == 4 * len(tree.primary)
    back = ClusterTree.from_sections(4, sections)
    assert back.primary.dtype == np.int16 and (back.primary == before).all()
    big = hmod.NARROW_POSTING + 5
    p = int(tree.leaf_postings()[0])
    members = np.flatnonzero(tree.primary == p)
    old_head = tree.centroid(int(tree.leaf_of[p]))
    tree.split_leaf(p, (big, big + 1), old_head, members, np.arange(len(members)) % 2)
    assert tree.primary.dtype == np.int32
    assert set(np.unique(tree.primary[members]).tolist()) <= {big, big + 1}
    keep = np.setdiff1d(np.arange(len(before)), members)
    assert (tree.primary[keep] == before[keep]).all()
    back = ClusterTree.from_sections(4, tree.to_sections())
    assert back.primary.dtype == np.int32 and (back.primary == tree.primary).all()


def test_threads_build_the_same_tree() -> None:
    """The parts of a level clustered on several threads give the tree one thread gives:
    same heads in the same posting order, same parents and centroids; a subtree's postings
    are consecutive."""
    x = clustered(6000, 8, seed=3)
    one, heads_one = build_tree(x, 600, seed=5, threads=1)
    many, heads_many = build_tree(x, 600, seed=5, threads=3)
    np.testing.assert_array_equal(heads_one, heads_many)
    assert one.n_nodes == many.n_nodes > 600 and len(one.children(ROOT)) > 1
    n = one.n_nodes
    np.testing.assert_array_equal(one.parent[:n], many.parent[:n])
    np.testing.assert_array_equal(one.centroids, many.centroids)
    for child in one.children(ROOT):
        postings = np.sort(one.posting[one.leaves_under(int(child))])
        assert (np.diff(postings) == 1).all()


def test_a_progress_report_stops_a_threaded_build() -> None:
    """Reports count leaves up to the target; an exception a report raises ends the build
    (how a closing database abandons it) and reaches the caller."""
    x = clustered(6000, 8, seed=3)
    seen: list[int] = []

    def report(phase: str, done: int, total: int) -> None:
        assert phase == "tree" and total == 600
        seen.append(done)

    build_tree(x, 600, seed=5, progress=report, threads=2)
    assert seen == sorted(seen) and seen[-1] == 600 and len(seen) > 2

    def stop(phase: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_tree(x, 600, seed=5, progress=stop, threads=2)
