"""Shared helpers of the SPANN tests: seeded clustered data, the exact oracle, tie-aware recall,
the orphan and tree checks, the float16 rerank rows' oracle and a deterministic op log replayed
like the engine does. No tests here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vecdb.index.spann import SpannIndex, open_spann
from vecdb.kernels.posting import entries_visible
from vecdb.kernels.postscan import half_to_float

SMALL = {"posting_pages": 1, "head_fraction": 0.05, "threads": 1}  # 1-page postings split early


def clustered(n: int, d: int, seed: int, centres: int = 64, spread: float = 0.6) -> np.ndarray:
    """Gaussian clusters around seeded centres (overlapping enough that ANN is not trivial)."""
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(1234).normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, d)).astype(np.float32)
    return x.astype(np.float32)


def stored(x: np.ndarray) -> np.ndarray:
    """What a float16 rerank-store row holds, widened (subnormals flushed as the writer does)."""
    bits = np.asarray(x, np.float32).astype(np.float16).view(np.uint16).copy()
    bits[(bits & 0x7C00) == 0] = 0
    return half_to_float(bits.ravel()).reshape(np.shape(x))


def store_rows(idx: SpannIndex, slots: np.ndarray) -> np.ndarray:
    """The float16 rerank store's rows of `slots` through the index's own store object (its
    mmap, and its slot -> row map in row order "head"), widened."""
    store = idx.state.store
    assert store is not None
    bits = np.asarray(store.rows()[store.rows_of(slots)])
    return half_to_float(bits.ravel()).reshape(len(slots), -1)


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x


def exact_dists(base: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """The oracle's distance matrix (nq, n) in float64."""
    q, b = queries.astype(np.float64), base.astype(np.float64)
    if metric == "l2":
        return ((q[:, None, :] - b[None, :, :]) ** 2).sum(2)
    dots = q @ b.T
    return -dots if metric == "ip" else 1.0 - dots


def recall(
    found: np.ndarray, base: dict[int, np.ndarray], queries: np.ndarray, k: int, metric: str
) -> float:
    """Tie-aware recall@k of returned slots against exact search over the live `base`."""
    slots = np.fromiter(base, dtype=np.int64)
    vecs = np.stack([base[int(s)] for s in slots])
    d = exact_dists(vecs, queries, metric)
    kth = np.sort(d, axis=1)[:, k - 1]
    pos = {int(s): i for i, s in enumerate(slots)}
    hits = 0
    for qi, row in enumerate(found):
        for s in row:
            if s >= 0 and int(s) in pos and d[qi, pos[int(s)]] <= kth[qi] + 1e-5:
                hits += 1
    return hits / (len(found) * k)


def posting_members(idx: SpannIndex) -> dict[int, set[int]]:
    """Visible slots of every posting, read block by block from the file."""
    st = idx.state
    out: dict[int, set[int]] = {}
    for p in range(st.next_posting):
        seen: set[int] = set()
        for off, _ in st.table.chain(p):
            _, s, ver, _ = st.file.read_block(off)
            seen.update(s[entries_visible(s, ver, st.slot_version)].tolist())
        if seen:
            out[p] = seen
    return out


def posting_slots(idx: SpannIndex) -> dict[int, int]:
    """Live copies per slot found by reading every posting (current version only)."""
    copies: dict[int, int] = {}
    for seen in posting_members(idx).values():
        for slot in seen:
            copies[slot] = copies.get(slot, 0) + 1
    return copies


def assert_no_orphans(idx: SpannIndex, live: set[int]) -> None:
    """Every live slot has at least one current copy, and no removed slot has one."""
    copies = posting_slots(idx)
    assert set(copies) == live, (len(set(copies) - live), len(live - set(copies)))
    assert len(idx) == len(live)


def assert_tree_consistent(idx: SpannIndex, live: set[int]) -> None:
    """The clustering tree: every leaf reachable from the root and standing for a live head,
    counts add up (a node's count = its children's sum = live slots whose primary leaf is
    below it), every live slot sits under exactly one primary leaf whose posting holds a
    current copy of it, removed slots under none, and no inner node is childless."""
    st = idx.state
    tree = st.tree
    if st.graph is None:  # never built: no tree
        assert tree.n_nodes == 0 and not live
        return
    nodes = list(tree)
    assert len(nodes) == len(set(nodes)) == len(tree)
    leaves = {n for n in nodes if tree.is_leaf(n)}
    postings = {int(tree.posting[n]) for n in leaves}
    assert postings == set(tree.leaf_postings().tolist())
    assert len(postings) == st.live_heads
    assert postings == set(st.heads().live_labels().tolist()), "graph heads != tree leaves"
    primary = tree.primary
    live_arr = np.fromiter(live, np.int64, len(live))
    assert (primary[live_arr] >= 0).all(), "a live slot without a primary leaf"
    dead = np.setdiff1d(np.flatnonzero(primary >= 0), live_arr)
    assert len(dead) == 0, f"removed slots {dead[:5]} still have a primary leaf"
    members = posting_members(idx)
    for s in live_arr.tolist():
        assert s in members.get(int(primary[s]), set()), f"slot {s}: primary holds no copy"
    per_leaf = np.bincount(primary[live_arr], minlength=st.next_posting)
    for n in reversed(nodes):  # children before parents
        kids = tree.children(n)
        if tree.is_leaf(n):
            assert len(kids) == 0
            assert tree.count[n] == per_leaf[tree.posting[n]], n
        else:
            assert len(kids) > 0, f"inner node {n} has no children"
            assert tree.count[n] == tree.count[kids].sum(), n
            assert (tree.level[kids] == tree.level[n] + 1).all()
    assert tree.count[0] == len(live)


def op_log(seed: int, d: int = 16) -> list[tuple[str, Any, Any]]:
    """A deterministic engine-style op log: build, inserts that force splits (each followed
    by maintenance, as the engine's worker does), a mass remove (merges, clean-ups,
    compaction), more inserts. Entry i has sequence number i + 1."""
    ops: list[tuple[str, Any, Any]] = [("build", np.arange(3000), clustered(3000, d, seed))]
    nxt = 3000
    for i in range(6):
        x = clustered(400, d, seed + 10 + i, spread=0.3)
        ops.append(("add", np.arange(nxt, nxt + 400), x))
        ops.append(("maintain", None, None))
        nxt += 400
    ops.append(("remove", np.flatnonzero(np.arange(nxt) % 8 != 0), None))  # most of them
    ops.append(("maintain", None, None))
    ops.append(("add", np.arange(nxt, nxt + 400), clustered(400, d, seed + 99)))
    ops.append(("maintain", None, None))
    return ops


def apply(idx: SpannIndex, op: tuple[str, Any, Any]) -> None:
    kind, slots, x = op
    if kind == "build":
        idx.build(slots, x)
    elif kind == "add":
        idx.add(slots, x)
    elif kind == "remove":
        idx.remove(slots)
    else:
        idx.maintain()


def live_after(ops: list[tuple[str, Any, Any]]) -> dict[int, np.ndarray]:
    live: dict[int, np.ndarray] = {}
    for kind, slots, x in ops:
        if kind == "build":
            live = {}
        if kind in ("build", "add"):
            live.update({int(s): v for s, v in zip(slots, x, strict=True)})
        elif kind == "remove":
            for s in slots:
                live.pop(int(s), None)
    return live


def run_log(directory: Path, seed: int, params: dict[str, Any]) -> SpannIndex:
    """Open, replay the log after the durable sequence, checkpointing after every op."""
    ops = op_log(seed)
    idx, applied = open_spann(16, "l2", params, directory)
    for seq, op in enumerate(ops, start=1):
        if seq > applied:
            apply(idx, op)
            idx.checkpoint(seq)
    return idx
