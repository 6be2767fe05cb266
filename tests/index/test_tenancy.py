"""Tenant sub-trees on the SPANN tree: the derived (set -> nodes) directory against a
brute-force recomputation through inserts, removes, splits and merges (property test); the
cache's invalidation; restricted search recall per set-size bucket against brute force over
exactly the set; one posting read for a set inside one leaf; parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import FLOAT32, distances, recall_at_k
from test_spann_support import SMALL, clustered, posting_members

from vecdb.errors import InvalidArgument
from vecdb.index.base import Visible
from vecdb.index.spann import SpannIndex, open_spann, subtree
from vecdb.index.spann.subtree import rank_leaves
from vecdb.index.tenancy import SubTreeCache, derive, node_counts

TINY_POSTINGS = {**SMALL, "vector_dtype": "float32"}  # splits early at d=8
N, D, K = 20_000, 32, 10


def brute_directory(idx: SpannIndex, slots: set[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Per posting and per node: members of `slots` whose primary leaf is there / below,
    walked slot by slot from the tree's own parent links (no shared code with `derive`)."""
    tree = idx.state.tree
    leaves: dict[int, int] = {}
    nodes: dict[int, int] = {}
    for s in slots:
        if s >= len(tree.primary) or tree.primary[s] < 0:
            continue
        p = int(tree.primary[s])
        leaves[p] = leaves.get(p, 0) + 1
        node = int(tree.leaf_of[p])
        while node >= 0:
            nodes[node] = nodes.get(node, 0) + 1
            node = int(tree.parent[node])
    return leaves, nodes


def check_directory(idx: SpannIndex, members: set[int]) -> None:
    arr = np.fromiter(members, np.int64, len(members))
    sub = derive(idx.state.tree, arr)
    leaves, nodes = brute_directory(idx, members)
    assert dict(zip(sub.postings.tolist(), sub.counts.tolist(), strict=True)) == leaves
    got_nodes, got_counts = node_counts(idx.state.tree, arr)
    assert dict(zip(got_nodes.tolist(), got_counts.tolist(), strict=True)) == nodes
    assert sub.n_nodes == len(nodes) and sub.members == sum(leaves.values())
    assert all(idx.state.is_posting(p) for p in leaves)  # only live leaves


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 400)),
        st.tuples(st.just("remove"), st.integers(1, 300)),
        st.tuples(st.just("maintain"), st.just(0)),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=ops, seed=st.integers(0, 1000), share=st.sampled_from([0.02, 0.2, 0.7]))
def test_directory_matches_brute_force_under_any_update_sequence(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]], seed: int, share: float
) -> None:
    """After every insert, remove and maintenance step (splits, merges, reassignment), the
    directory derived for a random slot set equals the brute-force walk of the tree, and the
    cache never hands out a directory of an older tree version."""
    directory = tmp_path_factory.mktemp("tenancy")
    idx, _ = open_spann(8, "l2", TINY_POSTINGS, directory)
    rng = np.random.default_rng(seed)
    cache = SubTreeCache()
    token = Visible.from_slots([0])
    live: set[int] = set()
    nxt = 0
    for kind, n in ops:
        if kind == "add":
            idx.add(np.arange(nxt, nxt + n), clustered(n, 8, seed + nxt, spread=0.2))
            live |= set(range(nxt, nxt + n))
            nxt += n
        elif kind == "remove" and live:
            gone = rng.choice(sorted(live), size=min(n, len(live)), replace=False)
            idx.remove(gone)
            live -= set(gone.tolist())
        else:
            idx.maintain()
        # the set: a share of the slots ever used (removed ones included: they must vanish)
        members = {s for s in range(nxt) if rng.random() < share}
        check_directory(idx, members)
        fixed = np.arange(0, nxt, 3, dtype=np.int64)  # one set followed through the ops
        sub = cache.get("fixed", token, idx.state.tree, fixed)
        assert sub.fresh(idx.state.tree)
        leaves, _ = brute_directory(idx, set(fixed.tolist()))
        assert dict(zip(sub.postings.tolist(), sub.counts.tolist(), strict=True)) == leaves
    idx.close()


def test_directory_follows_splits_and_merges(tmp_path: Path) -> None:
    """A burst of inserts into one region (splits, LIRE moves), then removes that empty
    twenty postings (merges: leaves and childless inner nodes removed): the directories of
    a random set and of a clustered set equal the brute-force walk after each step. (A disk
    budget of 4x: at 3x the build trims to its budget, so the inserts are placed under disk
    pressure with one replica fewer and no posting grows past its limit: nothing splits; the
    build leaves postings at most 0.9 full, so the burst is 1,200 vectors.)"""
    idx, _ = open_spann(8, "l2", {**TINY_POSTINGS, "max_disk_ratio": 4.0}, tmp_path)
    x = clustered(3000, 8, 1)
    idx.build(np.arange(3000), x)
    sets = [set(range(0, 3000, 5)), set(np.argsort(((x - x[0]) ** 2).sum(1))[:300].tolist())]
    idx.add(np.arange(3000, 4200), clustered(1200, 8, 5, spread=0.2))
    sets[0] |= set(range(3000, 4200, 2))
    idx.maintain()
    assert idx.state.counters["splits"] > 0
    for members in sets:
        check_directory(idx, members)
    mem = posting_members(idx)
    gone: set[int] = set()
    for p in sorted(mem)[:20]:
        gone |= set(sorted(mem[p])[2:])
    idx.remove(np.array(sorted(gone)))
    idx.maintain()
    assert idx.state.counters["merges"] > 0
    for members in sets:
        check_directory(idx, members)
    idx.close()


def test_cache_reuses_until_the_tree_or_the_set_changes(tmp_path: Path) -> None:
    """Same key, same set object, same tree version: one derivation. An insert (tree
    version), a new set object or `forget` of a member makes the next get derive again."""
    idx, _ = open_spann(8, "l2", TINY_POSTINGS, tmp_path)
    idx.build(np.arange(2000), clustered(2000, 8, 1))
    cache = SubTreeCache()
    slots = np.arange(0, 2000, 7, dtype=np.int64)
    a, b = Visible.from_slots([1]), Visible.from_slots([1])
    key = (3, 4)
    first = cache.get(key, a, idx.state.tree, slots)
    assert cache.get(key, a, idx.state.tree, slots) is first and cache.derived == 1
    idx.add(np.arange(2000, 2100), clustered(100, 8, 2))
    assert cache.get(key, a, idx.state.tree, slots) is not first and cache.derived == 2
    cache.get(key, b, idx.state.tree, slots)
    assert cache.derived == 3
    cache.forget([4])
    assert len(cache) == 0
    cache.get(key, b, idx.state.tree, slots)
    assert cache.derived == 4 and cache.nbytes > 0
    idx.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """20,000 x 32 clustered vectors, float32 postings (shared, read-only)."""
    idx, _ = open_spann(
        D, "l2", {"threads": 2, "vector_dtype": "float32"}, tmp_path_factory.mktemp("t")
    )
    x = clustered(N, D, seed=1)
    idx.build(np.arange(N), x)
    yield idx, x
    idx.close()


def tenant(x: np.ndarray, size: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return np.sort(rng.choice(len(x), size, replace=False))
    centre = x[rng.integers(len(x))]
    return np.sort(np.argsort(((x - centre) ** 2).sum(1))[:size])


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("size", [3, 60, 600, 3000])
def test_restricted_search_recall_per_bucket(built, size: int, kind: str) -> None:  # type: ignore[no-untyped-def]
    """The sub-tree walk (forced: no share or density rule) reaches recall@10 >= 0.95
    against brute force over exactly the set's vectors in every size bucket, and nothing
    outside the set is ever returned."""
    idx, x = built
    slots = tenant(x, size, kind, seed=size)
    q = clustered(100, D, seed=7)
    walk = {"tenant_share": 1.0, "tenant_density": 0}
    res = idx.search_subset(q, K, walk, slots, Visible.from_slots(slots, N), (1,))
    found = res.slots[res.slots >= 0]
    assert np.isin(found, slots).all()
    assert ((res.slots >= 0).sum(1) == min(K, size)).all()
    r = recall_at_k(res.slots, slots.tolist(), distances(x[slots], q, "l2"), K, FLOAT32)
    assert r >= 0.95, (size, kind, r, res.stats.as_dict())
    extra = res.stats.extra
    assert extra["tenant_subtree"] == len(q) and extra["tenant_leaves"] > 0


def test_a_thinly_spread_set_takes_the_global_walk_unless_told(built) -> None:  # type: ignore[no-untyped-def]
    """A random set with about one member per leaf and more leaves than the walk may read
    goes to the global walk; with `tenant_density` 0 it walks its sub-tree, still >= 0.95."""
    idx, x = built
    slots = tenant(x, 1500, "random", seed=4)
    vis = Visible.from_slots(slots, N)
    q = clustered(50, D, seed=12)
    spread = {"tenant_postings": 64, "tenant_share": 1.0, "tenant_density": 3.0}
    res = idx.search_subset(q, K, spread, slots, vis, (5,))
    assert res.stats.extra["tenant_global"] == len(q)
    walk = {"tenant_share": 1.0, "tenant_density": 0}
    walked = idx.search_subset(q, K, walk, slots, vis, (5,))
    assert walked.stats.extra["tenant_subtree"] == len(q)
    r = recall_at_k(walked.slots, slots.tolist(), distances(x[slots], q, "l2"), K, FLOAT32)
    assert r >= 0.95


def test_a_set_inside_one_leaf_costs_one_posting_read_and_is_exact(built) -> None:  # type: ignore[no-untyped-def]
    """Members that all sit in one posting: each query reads that posting only, and the
    answer is the exact top-k of the set."""
    idx, x = built
    tree = idx.state.tree
    p = int(np.bincount(tree.primary[:N]).argmax())
    slots = np.flatnonzero(tree.primary[:N] == p)[:40].astype(np.int64)
    q = clustered(30, D, seed=9)
    vis = Visible.from_slots(slots, N)
    res = idx.search_subset(q, K, None, slots, vis, (2,))
    assert res.stats.extra["tenant_subtree"] == len(q)
    assert res.stats.postings_read == len(q)  # one per query
    want = slots[np.argsort(distances(x[slots], q, "l2"), axis=1, kind="stable")[:, :K]]
    r = recall_at_k(res.slots, slots.tolist(), distances(x[slots], q, "l2"), K, FLOAT32)
    assert r == 1.0, (res.slots[:2], want[:2])


def test_a_large_share_takes_the_global_walk(built) -> None:  # type: ignore[no-untyped-def]
    """A set above `tenant_share` of the points is searched by the global walk with the
    bitmap: the same answer as `search(..., visible)`."""
    idx, x = built
    slots = np.arange(0, N, 2, dtype=np.int64)
    vis = Visible.from_slots(slots, N)
    q = clustered(20, D, seed=11)
    res = idx.search_subset(q, K, {"tenant_share": 0.1}, slots, vis, (3,))
    ref = idx.search(q, K, None, vis)
    assert res.stats.extra["tenant_global"] == len(q)
    np.testing.assert_array_equal(res.slots, ref.slots)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"tenant_round": 0}, "tenant_round"),
        ({"tenant_share": 1.5}, "tenant_share"),
        ({"tenant_postings": "x"}, "tenant_postings"),
        ({"tenant_bogus": 1}, "tenant_bogus"),
        ({"max_postings": 0}, "max_postings"),
    ],
)
def test_bad_tenant_params_are_rejected_by_name(built, params, name) -> None:  # type: ignore[no-untyped-def]
    idx, _ = built
    slots = np.arange(10, dtype=np.int64)
    with pytest.raises(InvalidArgument, match=name):
        idx.search_subset(
            np.zeros((1, D), np.float32), K, params, slots, Visible.from_slots(slots), 1
        )


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_partial_ranking_is_the_prefix_of_the_full_one(metric: str) -> None:
    """Ranking only the m best leaves gives the first m of the full ranking (a leaf tied
    with another may take its place), with the same scores, and bounds that still cover
    every unranked leaf."""
    rng = np.random.default_rng(3)
    c = rng.normal(size=(300, 8)).astype(np.float32)
    c[7] = c[3]  # a tie
    q = rng.normal(size=(5, 8)).astype(np.float32)
    if metric == "cosine":
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    radius = rng.uniform(0, 1, 300).astype(np.float32)
    full = rank_leaves(metric, q, c, radius, 0.0, 300)
    part = rank_leaves(metric, q, c, radius, 0.0, 40)
    same = part[0] == full[0][:, :40]
    assert same.mean() > 0.95
    np.testing.assert_array_equal(part[1], full[1][:, :40])  # ties swap equal scores only
    np.testing.assert_allclose(part[2], full[2][:, :40])


def test_the_walk_ranks_leaves_by_the_centroids_their_radii_bound(  # type: ignore[no-untyped-def]
    built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The centroids a set walk ranks its leaves by are the head graph's own (int8 heads
    here): every member lies within its leaf's radius of them, so the walk's radius stop
    rule is exact. A float16 copy of the int8 heads (the earlier centroid cache) moved the
    farthest members past their radius by about 2^-11 of the centroid's norm."""
    idx, x = built
    slots = tenant(x, 3000, "clustered", seed=21)
    seen: dict[str, np.ndarray] = {}

    def spy(metric, q, c, radius, boost, m):  # type: ignore[no-untyped-def]
        seen["c"], seen["r"] = c.copy(), radius.copy()
        return rank_leaves(metric, q, c, radius, boost, m)

    monkeypatch.setattr(subtree, "rank_leaves", spy)
    walk = {"tenant_share": 1.0, "tenant_density": 0}
    q = clustered(5, D, seed=22)
    res = idx.search_subset(q, K, walk, slots, Visible.from_slots(slots, N), (21,))
    assert res.stats.extra["tenant_subtree"] == len(q)
    assert idx.stats()["head_vectors"] == "int8"
    sub = derive(idx.state.tree, slots)
    assert len(seen["c"]) == len(sub.postings) > 20
    at = np.searchsorted(sub.postings, idx.state.tree.primary[slots])
    dist = np.linalg.norm(x[slots].astype(np.float64) - seen["c"][at], axis=1)
    assert (dist <= seen["r"][at].astype(np.float64) * (1 + 1e-6) + 1e-6).all()
