"""The exact rerank of SPANN (issue 12): the kernel against brute force, the store's rows
against what was added, recall with and without the rerank, visible sets, cold reads, and
bad parameters (real files in tmp_path, real numba kernels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from test_spann_support import clustered, exact_dists, prepare, recall, stored

from vecdb.errors import InvalidArgument
from vecdb.index.base import Visible
from vecdb.index.spann import SpannIndex, open_spann
from vecdb.kernels.posting import METRIC_COSINE, METRIC_IP, METRIC_L2
from vecdb.kernels.postscan import half_to_float
from vecdb.kernels.rerank import exact_topk

D = 16
RERANK = {"vector_dtype": "int8", "rerank": "float16", "threads": 1}
CODES = {"l2": METRIC_L2, "ip": METRIC_IP, "cosine": METRIC_COSINE}


def brute(q: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """The metric's distances in float64 (squared L2, -dot, 1 - dot)."""
    return exact_dists(rows, q[None, :], metric)[0]


@settings(max_examples=40, deadline=None)
@given(
    seed=hs.integers(0, 2**31 - 1),
    metric=hs.sampled_from(["l2", "ip", "cosine"]),
    half=hs.booleans(),
    c=hs.integers(1, 40),
    k=hs.integers(1, 12),
)
def test_kernel_equals_brute_force_on_the_candidates(
    seed: int, metric: str, half: bool, c: int, k: int
) -> None:
    """rerank_topk keeps the k smallest exact distances of the candidates (padding skipped,
    ties by slot), computed from the rows it is given."""
    rng = np.random.default_rng(seed)
    rows = prepare(rng.normal(size=(60, D)).astype(np.float32), metric)
    q = prepare(rng.normal(size=(3, D)).astype(np.float32), metric)
    cand = np.array([rng.permutation(60)[:c] for _ in range(3)], np.int64)
    cand[:, rng.random(c) < 0.2] = -1  # padding
    if half:
        table = rows.astype(np.float16).view(np.uint16)
        widened = stored(rows)
    else:
        table, widened = rows, rows
    ids, dist, scored = exact_topk(q, cand, cand, table, CODES[metric], k)
    assert scored == (cand >= 0).sum()
    for i in range(3):
        live = cand[i][cand[i] >= 0]
        want_d = brute(q[i], widened[live], metric)
        order = np.lexsort((live, want_d))[:k]
        got = ids[i][ids[i] >= 0]
        assert len(got) == min(k, len(live))
        np.testing.assert_allclose(dist[i][: len(got)], want_d[order], rtol=1e-4, atol=1e-4)
        # same set up to ties at the boundary distance
        assert set(got.tolist()) <= set(live.tolist())
        assert np.all(np.diff(dist[i][: len(got)]) >= 0)
        assert np.all(ids[i][len(got) :] == -1) and np.all(np.isinf(dist[i][len(got) :]))


def build(
    tmp_path: Path, metric: str, params: dict, n: int = 4000, seed: int = 3
) -> tuple[SpannIndex, np.ndarray]:
    x = prepare(clustered(n, D, seed=seed), metric)
    idx, _ = open_spann(D, metric, params, tmp_path)
    idx.build(np.arange(n), x)
    return idx, x


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_search_reranks_the_scan_candidates_exactly(metric: str, tmp_path: Path) -> None:
    """A rerank search returns the k nearest of the scan's rerank_k candidates by exact
    distance to the stored (float16) vectors, with those distances."""
    idx, x = build(tmp_path, metric, RERANK)
    q = prepare(clustered(30, D, seed=9), metric)
    p = {"max_postings": 6}
    cand = idx.search(q, 20, dict(p, rerank_k=0)).slots  # the compact codes' top 20
    got = idx.search(q, 5, dict(p, rerank_k=20))
    for i in range(len(q)):
        live = cand[i][cand[i] >= 0]
        d = brute(q[i], stored(x[live]), metric)
        order = np.lexsort((live, d))[:5]
        np.testing.assert_allclose(got.distances[i], d[order], rtol=1e-4, atol=1e-4)
        assert set(got.slots[i].tolist()) <= set(live.tolist())
    extra = got.stats.extra
    assert extra["rerank_rows"] == (cand >= 0).sum()
    assert extra["rerank_bytes"] == extra["rerank_rows"] * 2 * D
    idx.close()


def test_recall_with_rerank_at_least_without(tmp_path: Path) -> None:
    """int8 postings: re-ranking 16 candidates exactly beats the codes' own top 10 at the
    same postings read."""
    idx, x = build(tmp_path, "l2", RERANK, n=6000)
    q = clustered(200, D, seed=21)
    base = dict(enumerate(x))
    for m in (2, 4, 8):
        plain = recall(
            idx.search(q, 10, {"max_postings": m, "rerank_k": 0}).slots, base, q, 10, "l2"
        )
        exact = recall(
            idx.search(q, 10, {"max_postings": m, "rerank_k": 16}).slots, base, q, 10, "l2"
        )
        assert exact >= plain, (m, exact, plain)
    assert exact > 0.9
    idx.close()


def test_visible_batches_and_single_queries(tmp_path: Path) -> None:
    """With `visible`, only its members come back; a batch equals its queries one by one."""
    idx, x = build(tmp_path, "cosine", RERANK)
    q = prepare(clustered(20, D, seed=5), "cosine")
    members = np.arange(0, len(x), 3)
    vis = Visible.from_slots(members, len(x))
    p = {"max_postings": 8}
    got = idx.search(q, 10, p, vis)
    assert np.isin(got.slots, members).all()
    batch = idx.search(q, 10, p)
    for i in range(len(q)):
        one = idx.search(q[i : i + 1], 10, p)
        np.testing.assert_array_equal(one.slots[0], batch.slots[i])
    idx.close()


@pytest.mark.parametrize("aio", [True, False])
def test_direct_reads_equal_mapped_reads(
    aio: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """io=direct reads the candidates' rows with O_DIRECT (native AIO, or preadv where it
    is off): same results as the map, and the call counts the device bytes."""
    if not aio:
        monkeypatch.setenv("VECDB_NO_AIO", "1")
    idx, _ = build(tmp_path, "l2", dict(RERANK, io="mmap"))
    idx.checkpoint(1)
    q = clustered(25, D, seed=8)
    warm = idx.search(q, 10, {"max_postings": 6})
    idx.close()
    idx, _ = open_spann(D, "l2", dict(RERANK, io="direct"), tmp_path)
    cold = idx.search(q, 10, {"max_postings": 6})
    np.testing.assert_array_equal(cold.slots, warm.slots)
    np.testing.assert_array_equal(cold.distances, warm.distances)
    store = idx.state.store
    assert store is not None and (store._aio is not None) == aio
    one = idx.search(q[:1], 10, {"max_postings": 6})  # (distinct slots: disjoint row bytes)
    nbytes = one.stats.extra["rerank_bytes"]
    assert nbytes % 512 == 0 and nbytes >= store.row * one.stats.extra["rerank_rows"] > 0
    slots = np.random.default_rng(2).integers(0, 4000, 300)  # more than one submit's depth
    rows, _ = store.read_rows(slots)
    np.testing.assert_array_equal(rows, store.rows()[slots])
    none, nbytes = store.read_rows(np.zeros(0, np.int64))  # (a window over an empty buffer failed)
    assert none.shape == (0, D) and none.dtype == rows.dtype and nbytes == 0
    idx.close()


def test_reopen_keeps_rows_and_a_reupserted_vector_wins(tmp_path: Path) -> None:
    """Delete a slot, upsert its id again (a new slot, a new vector), checkpoint, reopen:
    searching the new vector finds the new slot at distance ~0 and never the old one."""
    idx, x = build(tmp_path, "l2", RERANK)
    rng = np.random.default_rng(4)
    new = (x[:50] + rng.normal(scale=3.0, size=x[:50].shape)).astype(np.float32)
    idx.remove(np.arange(50))
    idx.add(np.arange(4000, 4050), new)
    idx.checkpoint(2)
    idx.close()
    idx, seq = open_spann(D, "l2", RERANK, tmp_path)
    assert seq == 2
    got = idx.search(new, 1, {"max_postings": 16})
    np.testing.assert_array_equal(got.slots[:, 0], np.arange(4000, 4050))
    want = ((stored(new) - new) ** 2).sum(1)
    np.testing.assert_allclose(got.distances[:, 0], want, rtol=1e-3, atol=1e-5)
    old = idx.search(x[:50], 10, {"max_postings": 16}).slots
    assert not np.isin(old, np.arange(50)).any()
    idx.close()


def test_disk_stays_bounded_under_churn(tmp_path: Path) -> None:
    """Rounds of delete-all-but-a-few and insert as many new slots (slots are never
    reused): the store's apparent size grows with the slot numbers, its allocated bytes stay
    near the live rows (dead pages punched at checkpoints), inside bytes_on_disk."""
    n = 3000
    idx, _ = build(tmp_path, "l2", RERANK, n=n)
    idx.checkpoint(1)
    top, live = n, np.arange(n)
    store = idx.state.store
    assert store is not None
    for r in range(6):
        idx.remove(live)
        live = np.arange(top, top + n)
        idx.add(live, clustered(n, D, seed=100 + r))
        top += n
        idx.maintain()
        idx.checkpoint(2 + r)
    st = idx.stats()
    live_bytes = n * 2 * D
    assert store.path.stat().st_size > 6 * live_bytes  # apparent: every slot ever used
    assert st["vector_store_bytes"] <= 2 * live_bytes + 64 * 1024, st["vector_store_bytes"]
    assert st["vector_store_bytes"] <= st["bytes_on_disk"]
    q = clustered(20, D, seed=100 + 5)
    assert np.isin(idx.search(q, 5, {"max_postings": 8}).slots, live).all()
    idx.close()


def test_store_counts_in_the_disk_budget(tmp_path: Path) -> None:
    """The posting file's budget is the ratio's bytes less the store's rows."""
    idx, _ = build(tmp_path, "l2", RERANK)
    st = idx.state
    raw = 4 * D * st.n_live
    assert st.budget_bytes() == int(st.params.max_disk_ratio * raw) - 2 * D * st.n_live
    assert idx.stats()["posting_file_bytes"] + idx.stats()["vector_store_bytes"] <= 3.0 * raw
    idx.close()


def test_float32_rows_and_no_store_with_rerank_none(tmp_path: Path) -> None:
    """rerank=float32 keeps exact float32 rows (distance 0 to itself); rerank "none" (float16
    postings, given no vector_dtype) has no store file."""
    idx, x = build(tmp_path / "a", "l2", dict(RERANK, rerank="float32"))
    got = idx.search(x[:20], 1, {"max_postings": 8})
    np.testing.assert_array_equal(got.slots[:, 0], np.arange(20))
    assert np.all(got.distances[:, 0] == 0.0)
    idx.close()
    plain, _ = build(tmp_path / "b", "l2", {"threads": 1, "rerank": "none"})
    assert plain.state.store is None and not (tmp_path / "b" / "vectors.bin").exists()
    assert plain.stats()["rerank"] == "none" and plain.state.params.vector_dtype == "float16"
    plain.close()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"rerank": "int4"}, "index_params.rerank"),
        ({"rerank": 1}, "index_params.rerank"),
    ],
)
def test_bad_index_params_are_rejected(params: dict, field: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as e:
        open_spann(D, "l2", params, tmp_path)
    assert e.value.field == field


@pytest.mark.parametrize("value", [-1, 4097, 2.5, "16", True])
def test_bad_rerank_k_is_rejected(value: object, tmp_path: Path) -> None:
    idx, _ = build(tmp_path, "l2", RERANK, n=500)
    with pytest.raises(InvalidArgument) as e:
        idx.search(clustered(2, D, seed=1), 5, {"rerank_k": value})
    assert e.value.field == "params.rerank_k"
    idx.close()


def test_float16_store_rejects_huge_components(tmp_path: Path) -> None:
    """Rows beyond float16's range are refused (int8 postings alone would take them)."""
    idx, _ = open_spann(D, "l2", RERANK, tmp_path)
    x = np.zeros((2, D), np.float32)
    x[1, 3] = 1e6
    with pytest.raises(InvalidArgument):
        idx.add(np.arange(2), x)
    assert len(idx) == 0
    idx.close()


def test_child_process_build_writes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build whose passes run in a child process: the parent writes the rows, and the
    results equal an in-process build's."""
    from vecdb.index.spann import child

    x = clustered(3000, D, seed=12)
    q = clustered(20, D, seed=13)
    out = []
    for name, setting in (("here", "off"), ("child", "0")):
        monkeypatch.setenv(child.ENV, setting)
        idx, _ = open_spann(D, "l2", RERANK, tmp_path / name)
        idx.build(np.arange(len(x)), x)
        out.append(idx.search(q, 10, {"max_postings": 6}))
        rows = idx.state.store.rows()[: len(x)]  # type: ignore[union-attr]
        np.testing.assert_array_equal(half_to_float(rows.ravel()), stored(x).ravel())
        idx.close()
    np.testing.assert_array_equal(out[0].slots, out[1].slots)
    np.testing.assert_array_equal(out[0].distances, out[1].distances)


def test_sdk_delete_reupsert_reopen(tmp_path: Path) -> None:
    """Through the embedded SDK (engine, op log, RocksDB): an id deleted and upserted again
    with a new vector is found at its new vector's exact distance after a reopen; the index
    stats name the store; a bad rerank_k is an InvalidArgument naming the field."""
    import vecdb

    x = clustered(3000, D, seed=30)
    rng = np.random.default_rng(31)
    with vecdb.connect(tmp_path / "db") as c:
        c.create_collection("c", dim=D, metric="l2", index="spann", index_params=RERANK)
        c.upsert("c", list(range(3000)), x)
        c.optimize("c")
        c.delete("c", list(range(20)))
        new = (x[:20] + rng.normal(scale=2.0, size=(20, D))).astype(np.float32)
        c.upsert("c", list(range(20)), new)
        with pytest.raises(InvalidArgument) as e:
            c.search("c", new[:1], k=3, params={"rerank_k": -2})
        assert e.value.field == "params.rerank_k"
    with vecdb.connect(tmp_path / "db") as c:
        st = c.stats("c")["index"]
        assert st["rerank"] == "float16" and st["vector_store_bytes"] > 0
        got = c.search("c", new, k=1, params={"max_postings": 16})
        assert [int(r[0]) for r in got.ids] == list(range(20))
        want = ((stored(new) - new) ** 2).sum(1)
        np.testing.assert_allclose(np.asarray(got.distances)[:, 0], want, rtol=1e-3, atol=1e-5)


def test_verify_files_checks_the_store_header(tmp_path: Path) -> None:
    """`verify_files` (vecdb inspect --verify) reports the store, read-only; a damaged
    header is a finding naming the file."""
    from vecdb.index.spann.persist import verify_files

    idx, _ = build(tmp_path, "l2", RERANK, n=600)
    idx.checkpoint(1)
    idx.close()
    path = tmp_path / "vectors.bin"
    report = {r["file"]: r for r in verify_files(tmp_path)}
    assert report[str(path)]["ok"], report[str(path)]
    before = path.read_bytes()
    with open(path, "r+b") as f:
        f.write(b"NOTAVDB!")
    report = {r["file"]: r for r in verify_files(tmp_path)}
    assert not report[str(path)]["ok"] and "magic" in report[str(path)]["detail"]
    assert path.read_bytes()[8:] == before[8:]  # nothing written by the check


@pytest.mark.parametrize("walk", [True, False])
def test_tenant_search_reranks_exactly(walk: bool, tmp_path: Path) -> None:
    """A slot-set (tenant) search on int8 postings with a store returns its members at their
    exact distances to the stored vectors, by the sub-tree walk and by the global walk, and
    with rerank_k=0 the codes' own (different) distances."""
    idx, x = build(tmp_path, "l2", RERANK)
    slots = np.sort(np.random.default_rng(5).permutation(len(x))[:700]).astype(np.int64)
    vis = Visible.from_slots(slots, len(x))
    q = prepare(clustered(20, D, seed=11), "l2")
    tp = {"tenant_share": 1.0, "tenant_density": 0} if walk else {"tenant_share": 0.0}
    got = idx.search_subset(q, 5, dict(tp, rerank_k=16), slots, vis, (1,))
    codes = idx.search_subset(q, 5, dict(tp, rerank_k=0), slots, vis, (1,))
    assert ("tenant_subtree" if walk else "tenant_global") in got.stats.extra
    assert got.stats.extra["rerank_rows"] > 0
    for i in range(len(q)):
        found = got.slots[i][got.slots[i] >= 0]
        assert len(found) == 5 and np.isin(found, slots).all()
        want = brute(q[i], stored(x[found]), "l2")
        np.testing.assert_allclose(got.distances[i][:5], want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(got.distances, codes.distances, rtol=1e-6, atol=1e-6)
    idx.close()
