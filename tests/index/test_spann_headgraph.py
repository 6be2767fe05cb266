"""The compact head graph against hnswlib and the exact oracle: the same graph searched the
same way (results equal up to float16 rounding), deleted heads never returned, online
inserts found, the framed file round trip (and hnswlib's version-1 file and our version-2
file still read), links widened past uint16, threads giving the serial results, and the
kernel on a graph where the beam sees every node (exact); each for every vector form
(int8 with a scale per head, float16, float32) where the form does not decide the answer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from vecdb.errors import FormatError
from vecdb.index.params import HEAD_DTYPES
from vecdb.index.spann import headgraph as hg
from vecdb.index.spann.framing import write_sections
from vecdb.index.spann.headgraph import HeadGraph, to_int8
from vecdb.index.spann.persist import HEADS_MAGIC, load_heads, save_heads
from vecdb.kernels import headgraph as kern
from vecdb.kernels.half import half_bits, half_round


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered rows, rounded to float16 so both graphs hold the very same vectors."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(30, d)).astype(np.float32) * 2
    x = (c[rng.integers(0, 30, n)] + rng.normal(size=(n, d))).astype(np.float32)
    return half_round(x)


def hnsw(x: np.ndarray, labels: np.ndarray, space: str = "l2", m: int = 8) -> hnswlib.Index:
    g = hnswlib.Index(space=space, dim=x.shape[1])
    g.init_index(max_elements=len(x), M=m, ef_construction=60, random_seed=3)
    g.add_items(x, labels, num_threads=1)
    g.set_ef(1)
    return g


def raw_of(g: hnswlib.Index) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.bin")
        g.save_index(path)
        with open(path, "rb") as f:
            return f.read()


def exact_knn(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, 1, kind="stable")[:, :k]


@pytest.mark.parametrize(("space", "d"), [("l2", 12), ("ip", 7), ("l2", 1)])
def test_search_matches_hnswlib_on_the_same_graph(space: str, d: int) -> None:
    """Parsed from hnswlib's file, the graph answers as hnswlib does (same beam, same
    deleted-node rule): the k distances of every row agree to 1e-5 (tie-aware: at d=1 many
    rows tie, and equal distances may swap labels), and the labels too where d > 1."""
    x = clustered(2000, d, seed=1)
    labels = np.arange(2000) * 3 + 11
    g = hnsw(x, labels, space)
    for lab in labels[::17]:
        g.mark_deleted(int(lab))
    h = HeadGraph.from_hnswlib(raw_of(g), space, d, 60, "float16")
    assert h.get_current_count() == 2000 and h.n_deleted == len(labels[::17])
    q = clustered(300, d, seed=2)
    k = 10 if d > 1 else 3
    a, ad = g.knn_query(q, k=k)
    b, bd = h.knn_query(q, k=k)
    assert np.allclose(ad, bd, rtol=1e-5, atol=1e-5)
    if d > 1:
        assert np.mean(a.astype(np.int64) == b) >= 0.99
    assert not np.isin(b, labels[::17]).any(), "a deleted head was returned"
    assert np.allclose(h.get_items(labels[1:6]), x[1:6])
    with pytest.raises(RuntimeError):
        h.get_items(labels[:1])  # deleted


@pytest.mark.parametrize("share", [0, 3])
def test_a_wide_beam_matches_hnswlib_with_deleted_heads(share: int) -> None:
    """At ef = k = 96 (the build's candidate beam) over a graph with no head or every third
    one deleted, the sorted-list beam returns hnswlib's heads: the distances of every row
    agree and the labels do (up to equal distances swapping places)."""
    x = clustered(3000, 16, seed=7)
    labels = np.arange(3000)
    g = hnsw(x, labels, "l2", 12)
    gone = labels[::share] if share else labels[:0]
    for lab in gone.tolist():
        g.mark_deleted(lab)
    h = HeadGraph.from_hnswlib(raw_of(g), "l2", 16, 60, "float16")
    q = clustered(200, 16, seed=8)
    g.set_ef(96)
    a, ad = g.knn_query(q, k=96)
    b, bd = h.knn_query(q, k=96)
    assert np.allclose(ad, bd, rtol=1e-5, atol=1e-5)
    assert np.mean(a.astype(np.int64) == b) >= 0.999
    assert not np.isin(b, gone).any()


@pytest.mark.parametrize("dtype", HEAD_DTYPES)
def test_deleted_heads_route_but_are_never_returned(dtype: str) -> None:
    """mark_deleted hides a head from results and from get_items' label map; a second mark
    or an unknown label is an error; asking for more than the live heads raises."""
    x = clustered(300, 5, seed=3)
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(300))), "l2", 5, 60, dtype)
    gone = np.arange(0, 300, 2)
    for lab in gone.tolist():
        h.mark_deleted(lab)
    labels, _ = h.knn_query(x[gone], k=5)
    assert not np.isin(labels, gone).any()
    assert (h.live_labels() == np.arange(1, 300, 2)).all()
    with pytest.raises(RuntimeError):
        h.mark_deleted(0)
    with pytest.raises(RuntimeError):
        h.knn_query(x[:1], k=151)


@pytest.mark.parametrize("dtype", HEAD_DTYPES)
def test_online_inserts_are_found_with_hnswlib_recall(dtype: str) -> None:
    """Heads added by add_items (level-0 inserts, as a split adds them) are found by their
    own vectors, and top-10 recall against the exact oracle is within 0.02 of hnswlib's
    own graph after the same inserts (int8 heads included: their rounding moves no
    answer that much)."""
    x = clustered(3000, 16, seed=4)
    base, extra = x[:2000], x[2000:]
    g = hnsw(base, np.arange(2000))
    h = HeadGraph.from_hnswlib(raw_of(g), "l2", 16, 60, dtype)
    g.resize_index(3000)
    g.add_items(extra, np.arange(2000, 3000), num_threads=1)
    for lo in range(0, 1000, 64):  # a few per call, as a split publishes them
        h.add_items(extra[lo : lo + 64], np.arange(2000 + lo, 2000 + min(lo + 64, 1000)))
    assert h.get_current_count() == 3000 and h.get_max_elements() >= 3000
    found, _ = h.knn_query(extra, k=10)
    assert np.mean((found == np.arange(2000, 3000)[:, None]).any(1)) >= 0.99
    q = clustered(200, 16, seed=5)
    truth = exact_knn(x, q, 10)
    ours, _ = h.knn_query(q, k=32)
    theirs, _ = g.knn_query(q, k=32)

    def recall(got: np.ndarray) -> float:
        return float(np.mean([len(set(got[i, :10].tolist()) & set(truth[i].tolist())) / 10
                              for i in range(len(q))]))  # fmt: skip

    assert recall(ours) >= recall(theirs.astype(np.int64)) - 0.02
    assert recall(ours) >= 0.9


@pytest.mark.parametrize("dtype", HEAD_DTYPES)
def test_framed_file_round_trip_and_version_one_still_read(tmp_path: Path, dtype: str) -> None:
    """save_heads / load_heads give a graph answering exactly as the saved one (its vector
    form from the file, whatever the caller passes); a version-1 file (hnswlib's own
    serialisation inside our frame) loads into the same graph as from_hnswlib; a torn file
    is a FormatError naming it."""
    x = clustered(800, 9, seed=6)
    g = hnsw(x, np.arange(800) + 5)
    g.mark_deleted(7)
    h = HeadGraph.from_hnswlib(raw_of(g), "l2", 9, 60, dtype)
    h.add_items(clustered(40, 9, seed=7), np.arange(2000, 2040))
    h.mark_deleted(2003)
    q = clustered(100, 9, seed=8)
    want = h.knn_query(q, k=8)
    path = tmp_path / "heads.1.bin"
    save_heads(path, h)
    other = next(t for t in HEAD_DTYPES if t != dtype)
    back = load_heads(path, "l2", 9, 60, other)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.vecs[: back.n], h.vecs[: h.n])
    np.testing.assert_array_equal(back.scale[: back.n], h.scale[: h.n])
    got = back.knn_query(q, k=8)
    assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
    np.testing.assert_array_equal(back.get_items(h.live_labels()), h.get_items(h.live_labels()))
    assert back.n_deleted == 2 and (back.live_labels() == h.live_labels()).all()
    v1 = tmp_path / "heads.2.bin"
    write_sections(v1, HEADS_MAGIC, 1, [raw_of(g)])
    old = load_heads(v1, "l2", 9, 60, dtype)
    assert old.dtype == dtype
    ref = HeadGraph.from_hnswlib(raw_of(g), "l2", 9, 60, dtype)
    assert (old.knn_query(q, k=8)[0] == ref.knn_query(q, k=8)[0]).all()
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FormatError, match="heads.1.bin"):
        load_heads(path, "l2", 9, 60)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_version_two_file_still_loads(tmp_path: Path, dtype: str) -> None:
    """A head graph written before int8 heads (format 2: nine sections, the header's last
    field 1 for float16 and 0 for float32, no scales) loads into the same graph; a version-2
    header naming any other form is a FormatError."""
    x = clustered(500, 7, seed=14)
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(500))), "l2", 7, 60, dtype)
    sections = h.to_sections()
    head = np.frombuffer(sections[0], "<i8").copy()
    head[-1] = 1 if dtype == "float16" else 0
    path = tmp_path / "heads.3.bin"
    write_sections(path, HEADS_MAGIC, 2, [head.tobytes(), *sections[1:9]])
    back = load_heads(path, "l2", 7, 60)
    assert back.dtype == dtype
    q = clustered(50, 7, seed=15)
    got, want = back.knn_query(q, k=5), h.knn_query(q, k=5)
    assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
    head[-1] = 2
    write_sections(path, HEADS_MAGIC, 2, [head.tobytes(), *sections[1:9]])
    with pytest.raises(FormatError, match="unknown vector form 2"):
        load_heads(path, "l2", 7, 60)


def test_int8_rows_round_within_half_a_step() -> None:
    """`to_int8`: each component within half its row's scale of the original (the scale
    max |x| / 127), the largest at +-127, a zero row kept as zeros with scale 0; the graph
    returns scale x codes from get_items and spends 1 byte a component plus 4 a head."""
    rng = np.random.default_rng(16)
    x = rng.normal(size=(200, 33)).astype(np.float32) * rng.uniform(1e-3, 1e3, (200, 1))
    x[5] = 0
    codes, scale = to_int8(x)
    assert codes.dtype == np.int8 and scale.dtype == np.float32
    back = codes.astype(np.float32) * scale[:, None]
    assert (np.abs(back - x) <= scale[:, None] * 0.5 * (1 + 1e-5)).all()
    assert (np.abs(codes).max(1)[np.arange(200) != 5] == 127).all()
    assert scale[5] == 0 and (codes[5] == 0).all()
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(200))), "l2", 33, 60, "int8")
    np.testing.assert_allclose(h.get_items(np.arange(200)), back, rtol=1e-6)
    f16 = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(200))), "l2", 33, 60, "float16")
    assert h.vecs.nbytes + h.scale.nbytes == 200 * (33 + 4)
    assert f16.vecs.nbytes == 200 * 33 * 2 and f16.scale.nbytes == 0


def test_links_widen_past_uint16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past NARROW_NODES the level-0 links become int32, and search and inserts go on."""
    monkeypatch.setattr(hg, "NARROW_NODES", 500)
    x = clustered(700, 6, seed=9)
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x[:400], np.arange(400))), "l2", 6, 60)
    assert h.links.dtype == np.uint16
    h.add_items(x[400:], np.arange(400, 700))
    assert h.links.dtype == np.int32
    found, _ = h.knn_query(x, k=5)
    assert np.mean((found == np.arange(700)[:, None]).any(1)) >= 0.99


def test_threads_give_the_serial_results() -> None:
    """A threaded batch (chunks on numba's threads) returns the single-thread answer."""
    x = clustered(1500, 10, seed=10)
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(1500))), "l2", 10, 60)
    q = clustered(200, 10, seed=11)
    one = h.knn_query(q, k=12, num_threads=1)
    two = h.knn_query(q, k=12, num_threads=2)
    assert (one[0] == two[0]).all() and (one[1] == two[1]).all()


@pytest.mark.parametrize("ip", [False, True])
@pytest.mark.parametrize("dtype", HEAD_DTYPES)
@pytest.mark.parametrize("d", [1, 3, 8])
def test_kernel_is_exact_on_a_complete_graph(d: int, dtype: str, ip: bool) -> None:
    """With every node linked to every other, the beam sees all nodes: the kernel's top-k
    is the exact top-k of the stored vectors (tie-aware: the k-th distance matches), for
    float16 bits, float32 rows and int8 (codes, scales) pairs, in both spaces (squared L2,
    1 - dot); zero queries are fine."""
    rng = np.random.default_rng(d)
    n = 40
    raw = rng.normal(size=(n, d)).astype(np.float32)
    x: object
    if dtype == "int8":
        codes, scale = to_int8(raw)
        x, xf = (codes, scale), codes.astype(np.float32) * scale[:, None]
    elif dtype == "float16":
        x, xf = half_bits(raw), half_round(raw)
    else:
        x, xf = raw, raw
    links = np.array([[j for j in range(n) if j != i] for i in range(n)], np.uint16)
    nlinks = np.full(n, n - 1, np.uint8)
    deleted = np.zeros(n, np.bool_)
    up_off = np.full(n, -1, np.int32)
    up_links, up_cnt = np.zeros((0, 4), np.int32), np.zeros(0, np.uint8)
    q = rng.normal(size=(5, d)).astype(np.float32)
    k = 6
    out_i = np.empty((5, k), np.int64)
    out_d = np.empty((5, k), np.float32)
    args = (x, links, nlinks, deleted, up_off, up_links, up_cnt, 0, 0, n, k, k, ip)
    scratch = _scratch(n)
    kern.search_batch(q, 0, 5, *args, out_i, out_d, *scratch)

    def dist(rows: np.ndarray) -> np.ndarray:  # (5, m, d) rows -> (5, m)
        if ip:
            out: np.ndarray = 1 - (q[:, None, :] * rows).sum(-1)
            return out
        return ((q[:, None, :] - rows) ** 2).sum(-1)

    want = np.sort(dist(np.broadcast_to(xf[None], (5, n, d))), 1)[:, :k]
    assert np.allclose(out_d, want, rtol=1e-5, atol=1e-5)
    assert np.allclose(dist(xf[out_i]), out_d, rtol=1e-5, atol=1e-5)
    kern.search_batch(q[:0], 0, 0, *args, out_i[:0], out_d[:0], *scratch)
    assert scratch[1][0] == 5  # one visit mark per query


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros(n, np.uint16),
        np.zeros(1, np.int64),
        np.empty(n + 1, np.float32),
        np.empty(n + 1, np.int32),
    )


def test_reused_scratch_clears_its_marks_when_they_run_out() -> None:
    """A scratch reused across calls gives what a fresh one gives, also across the uint16
    marks' wrap: at mark 65,535 the next search clears `seen` (left holding old marks, here
    1, which the restarted count would otherwise take for this search's visits)."""
    rng = np.random.default_rng(5)
    n, d, k = 300, 8, 10
    x = rng.normal(size=(n, d)).astype(np.float32)
    g = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(n))), "l2", d, 60, "float16")
    q = rng.normal(size=(20, d)).astype(np.float32)
    want_i, want_d = g.knn_query(q, k=k)
    args = (g.kernel_vecs, g.links, g.nlinks, g.deleted, g.up_off, g.up_links, g.up_cnt, g.entry)
    args += (g.maxlevel, g.n, k, k, False)
    out_i = np.empty((20, k), np.int64)
    out_d = np.empty((20, k), np.float32)
    seen, mark, cd, ci = _scratch(g.n)
    seen[:] = 1
    mark[0] = 65_534
    kern.search_batch(q, 0, 20, *args, out_i, out_d, seen, mark, cd, ci)
    assert mark[0] == 19  # 65,535, then 1..19 after the clear
    np.testing.assert_array_equal(g.labels[out_i], want_i)
    np.testing.assert_array_equal(out_d, want_d)


def test_float32_storage_holds_what_float16_cannot(tmp_path: Path) -> None:
    """With dtype "float32" the graph keeps float32 vectors (indexes whose postings are float32 or
    int8 accept components past float16's range): components of 1e6 are found and returned
    exactly, and the file round trip keeps them."""
    x = clustered(500, 6, seed=12) * np.float32(1e6)
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(500))), "l2", 6, 60, "float32")
    assert h.vecs.dtype == np.float32
    assert (h.get_items(np.arange(5)) == x[:5]).all()
    extra = clustered(20, 6, seed=13) * np.float32(1e6)
    h.add_items(extra, np.arange(500, 520))
    found, d = h.knn_query(np.concatenate([x[:50], extra]), k=3)
    assert np.mean(found[:, 0] == np.r_[np.arange(50), np.arange(500, 520)]) >= 0.95
    assert np.isfinite(d).all()
    save_heads(tmp_path / "heads.1.bin", h)
    back = load_heads(tmp_path / "heads.1.bin", "l2", 6, 60, "float16")  # the file decides
    assert back.vecs.dtype == np.float32 and (back.get_items(np.arange(5)) == x[:5]).all()


def test_rows_the_beam_leaves_short_are_answered_over_every_live_head() -> None:
    """A live head no link reaches (as splits and deletions can leave one) is missing from
    the beam; asked for every live head, a query still gets all of them, nearest first, at
    the beam's own distances (hnswlib raised here, failing the whole search)."""
    x = clustered(300, 6, seed=8)
    h = HeadGraph.from_hnswlib(raw_of(hnsw(x, np.arange(300) + 1000)), "l2", 6, 60)
    lone = next(v for v in range(300) if h.up_off[v] < 0 and v != h.entry)
    for v in range(h.n):  # unlink it from every level-0 list
        row = [int(u) for u in h.links[v, : h.nlinks[v]] if u != lone]
        h.links[v, : len(row)] = row
        h.nlinks[v] = len(row)
    h.mark_deleted(1000 + (lone + 1) % 300)  # and one deleted head, never returned
    q = x[:4] + 0.01
    labels, dists = h.knn_query(q, k=299)
    want = np.setdiff1d(np.arange(300) + 1000, [1000 + (lone + 1) % 300])
    for r in range(len(q)):
        assert sorted(labels[r].tolist()) == want.tolist()  # every live head, once
        assert np.all(np.diff(dists[r]) >= 0)
        stored = h.get_items(labels[r])
        np.testing.assert_allclose(dists[r], ((stored - q[r]) ** 2).sum(1), rtol=1e-5, atol=1e-5)
    few, _ = h.knn_query(q, k=5)  # a short query is the beam's, as before
    assert few.shape == (4, 5) and (few >= 1000).all()


def test_head_dtype_is_checked_by_name() -> None:
    """`head_dtype` takes the three forms; "float16" only with float16 rows (postings or
    rerank store), which keep vectors inside float16's range; errors name the field."""
    from vecdb.errors import InvalidArgument
    from vecdb.index.params import BuildParams

    assert BuildParams.parse(None).head_dtype == "int8"
    ok = BuildParams.parse({"head_dtype": "float16", "vector_dtype": "int8", "rerank": "float16"})
    assert ok.head_dtype == "float16"
    for bad in ({"head_dtype": "int4"}, {"head_dtype": "float16", "vector_dtype": "float32"}):
        with pytest.raises(InvalidArgument) as e:
            BuildParams.parse(bad)
        assert e.value.field == "index_params.head_dtype"
    with pytest.raises(InvalidArgument, match='vector_dtype="float16" or rerank="float16"'):
        BuildParams.parse({"head_dtype": "float16", "vector_dtype": "int8", "rerank": "none"})
