"""The bulk build's candidate heads (`assign.ExactHeads.knn`, `build.EXACT_HEADS`): the exact
path returns each row's m nearest heads as a brute-force sort does, and a build picks it only
for few heads of few dimensions (many heads, or wide rows, go through the head graph, which is
faster there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracles import exact_topk

from vecdb.index.params import BuildParams
from vecdb.index.spann import assign, build, open_spann
from vecdb.index.spann.assign import ExactHeads


@pytest.mark.parametrize("space", ["l2", "ip"])
@pytest.mark.parametrize("m", [1, 7, 40])
def test_exact_knn_equals_a_brute_force_sort(space: str, m: int) -> None:
    rng = np.random.default_rng(3)
    heads = rng.standard_normal((40, 9)).astype(np.float32)
    rows = rng.standard_normal((300, 9)).astype(np.float32)
    ids, dist = ExactHeads(heads, space).knn(rows, m)
    order, want = exact_topk(heads, rows, space, m)  # (hnswlib's space names: "l2", "ip")
    assert ids.shape == (300, m) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, order)
    if space == "l2":
        assert dist is not None
        np.testing.assert_allclose(dist, want, rtol=1e-4, atol=1e-4)
    else:
        assert dist is None


@pytest.mark.parametrize("n_heads", [40, 120])
def test_a_build_takes_exact_candidates_only_for_few_heads(
    n_heads: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "EXACT_HEADS", 80)
    exact_calls: list[int] = []
    knn = ExactHeads.knn

    def counted(self: ExactHeads, x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray | None]:
        exact_calls.append(len(x))
        return knn(self, x, m)

    monkeypatch.setattr(assign.ExactHeads, "knn", counted)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2_000, 8)).astype(np.float32)
    idx, _ = open_spann(8, "l2", {"head_fraction": n_heads / 2_000}, tmp_path / "i")
    idx.build(np.arange(2_000), x)  # 64 KB: built in this process (a child past 64 MiB)
    assert (sum(exact_calls) == 2_000) == (n_heads <= 80)
    got = idx.search(x[:50], 1, {"max_postings": 8})
    assert (got.slots[:, 0] == np.arange(50)).mean() >= 0.95
    idx.close()


@pytest.mark.parametrize("wins", [True, False])
def test_wide_rows_take_the_candidates_the_probe_picks(
    wins: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few heads of wide rows: the probe decides between the graph and the exact product,
    and the build finds every row either way; narrow rows are never probed."""
    monkeypatch.setattr(build, "PROBE_MIN_DIM", 20)
    probes: list[int] = []
    exact_calls: list[int] = []
    knn = ExactHeads.knn

    def probe(graph: object, exact: ExactHeads, x: np.ndarray, p: object, t: int) -> bool:
        probes.append(len(x))
        return wins

    def counted(self: ExactHeads, x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray | None]:
        exact_calls.append(len(x))
        return knn(self, x, m)

    monkeypatch.setattr(build, "graph_wins", probe)
    monkeypatch.setattr(assign.ExactHeads, "knn", counted)
    for dim in (16, 24):
        x = np.random.default_rng(5).standard_normal((2_000, dim)).astype(np.float32)
        idx, _ = open_spann(dim, "l2", {"head_fraction": 0.02}, tmp_path / f"i{dim}")
        idx.build(np.arange(2_000), x)
        exact_rows, exact_calls[:] = sum(exact_calls), []
        assert exact_rows == (0 if wins and dim >= 20 else 2_000)
        got = idx.search(x[:50], 1, {"max_postings": 8})
        assert (got.slots[:, 0] == np.arange(50)).mean() >= 0.95
        idx.close()
    assert probes == [2_000]


def test_the_probe_wants_the_nearest_heads_found_and_time_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`graph_wins` is false when the graph misses any of a probe row's nearest heads (a
    required share above 1) or is not fast enough (no time allowed), true on easy clustered
    rows with both bars lowered to what any graph passes."""
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((30, 32)).astype(np.float32) * 4
    x = (centres[rng.integers(0, 30, 3_000)] + rng.standard_normal((3_000, 32))).astype(np.float32)
    heads = x[:60]
    p = BuildParams.parse(None, 32)
    graph = assign.make_head_graph(heads, "l2", p, 1)
    exact = ExactHeads(heads, "l2")
    monkeypatch.setattr(assign, "GRAPH_MAX_TIME", np.inf)
    monkeypatch.setattr(assign, "GRAPH_MIN_FOUND", 0.9)
    assert assign.graph_wins(graph, exact, x, p, 1)
    monkeypatch.setattr(assign, "GRAPH_MIN_FOUND", 1.01)
    assert not assign.graph_wins(graph, exact, x, p, 1)
    monkeypatch.setattr(assign, "GRAPH_MIN_FOUND", 0.0)
    monkeypatch.setattr(assign, "GRAPH_MAX_TIME", 0.0)
    assert not assign.graph_wins(graph, exact, x, p, 1)
