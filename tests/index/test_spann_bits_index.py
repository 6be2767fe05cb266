"""SPANN with 1-bit posting codes (`vector_dtype="bits"`, issue 12): recall against the exact
oracle and against float16 postings of the same data, estimates in the metric's units, codes
independent of their posting, churn (splits, merges, clean-ups), compaction, checkpoint and
reopen, crash recovery, cold reads, visible sets that need widening, batches on two threads,
and bad parameters (real files in tmp_path, real numba kernels)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from test_spann_support import (
    SMALL,
    clustered,
    exact_dists,
    live_after,
    op_log,
    prepare,
    recall,
    run_log,
    stored,
)

from vecdb.errors import InvalidArgument
from vecdb.index.base import Visible
from vecdb.index.params import BuildParams, SearchParams, rerank_candidates
from vecdb.index.spann import SpannIndex, open_spann
from vecdb.index.spann.bitcodes import BitCoder, load_codec
from vecdb.index.spann.persist import load_state, read_manifest

BITS = {"vector_dtype": "bits", "threads": 1}
SEED = 13


def build(path: Path, x: np.ndarray, metric: str, params: dict) -> SpannIndex:  # type: ignore[type-arg]
    idx, _ = open_spann(x.shape[1], metric, params, path)
    idx.build(np.arange(len(x)), x)
    return idx


def entries_by_slot(idx: SpannIndex) -> dict[int, set[bytes]]:
    """Every visible entry's bytes, by slot, read block by block from the posting file."""
    st = idx.state
    out: dict[int, set[bytes]] = {}
    for p in st.tree.leaf_postings().tolist():
        for off, _ in st.table.chain(int(p)):
            _, slots, vers, ent = st.file.read_block(off)
            for s, v, e in zip(slots.tolist(), vers.tolist(), ent, strict=True):
                if st.slot_version[s] == v:
                    out.setdefault(s, set()).add(e.tobytes())
    return out


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("d", [384, 50])
def test_recall_is_close_to_float16_postings(metric: str, d: int, tmp_path: Path) -> None:
    """At the same max_postings, the default bits search (R = 100 candidates re-ranked from
    float16 rows) finds what float16 postings find, and its distances are the exact ones of
    the float16 rows."""
    x = prepare(clustered(4000, d, seed=1, centres=32, spread=1.0), metric)
    q = prepare(clustered(60, d, seed=2, centres=32, spread=1.0), metric)
    base = dict(enumerate(x))
    f16 = build(tmp_path / "f", x, metric, {"threads": 1})
    bits = build(tmp_path / "b", x, metric, BITS)
    assert bits.state.bits is not None and bits.state.store is not None
    for m in (4, 16):
        want = recall(f16.search(q, 10, {"max_postings": m}).slots, base, q, 10, metric)
        got = bits.search(q, 10, {"max_postings": m})
        r = recall(got.slots, base, q, 10, metric)
        assert r >= want - 0.02, (m, r, want)
        exact = exact_dists(stored(x[got.slots[:, 0]]), q, metric).diagonal()
        np.testing.assert_allclose(got.distances[:, 0], exact, rtol=1e-4, atol=1e-4)
    assert recall(bits.search(q, 10, {"max_postings": 64}).slots, base, q, 10, metric) > 0.97


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_estimates_are_in_the_metric_units(metric: str, tmp_path: Path) -> None:
    """rerank_k=0 returns the codes' own top k with their estimates. With k = every point
    (no selection), they are unbiased estimates of the metric's distance (squared L2,
    -dot, 1 - dot) that order the points about as the exact distances do."""
    x = prepare(clustered(1500, 256, seed=3, centres=16, spread=1.0), metric)
    q = prepare(clustered(20, 256, seed=4, centres=16, spread=1.0), metric)
    idx = build(tmp_path, x, metric, BITS)
    got = idx.search(q, len(x), {"max_postings": 2, "rerank_k": 0})  # pass 5 reads them all
    assert (got.slots >= 0).all()
    exact = np.take_along_axis(exact_dists(stored(x), q, metric), got.slots, 1)
    err = got.distances - exact
    spread = exact.std(1).mean()
    assert abs(err.mean()) < 0.02 * spread, (err.mean(), spread)
    assert np.abs(err).mean() < 0.35 * spread, (np.abs(err).mean(), spread)  # 1 bit: ~0.26
    for i in range(len(q)):
        assert np.corrcoef(got.distances[i], exact[i])[0, 1] > 0.8


def test_codes_do_not_depend_on_their_posting(tmp_path: Path) -> None:
    """Every copy of a slot (replicas, split halves, reassigned entries) holds the same
    bytes: the coder's entry of the store's row."""
    idx = run_log(tmp_path, SEED, dict(SMALL, vector_dtype="bits"))
    st = idx.state
    assert st.counters["splits"] > 0 and st.counters["merges"] > 0
    coder = st.bits
    assert coder is not None
    by_slot = entries_by_slot(idx)
    live = live_after(op_log(SEED))
    assert set(by_slot) == set(live)
    slots = np.fromiter(by_slot, np.int64)
    want = coder.encode(np.stack([live[int(s)] for s in slots]))
    replicas = 0
    for s, w in zip(slots.tolist(), want, strict=True):
        assert by_slot[s] == {w.tobytes()}, s
        replicas += 1
    assert replicas == len(live)
    idx.close()


@pytest.mark.parametrize("half", [True, False])
def test_fit_and_encode_in_chunks_equal_the_whole_matrix(
    half: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coder converts a build's rows a chunk at a time (no float32 copy of the whole
    matrix): the centroid and every entry as if converted at once."""
    from vecdb.index.spann import bitcodes

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((1000, 96)) * 3 + 1).astype(np.float32)
    rerank = "float16" if half else "float32"
    whole = BitCoder.fit(x, "l2", rerank, 7)
    monkeypatch.setattr(bitcodes, "CHUNK_BYTES", 4 * 96 * 64)  # 64 rows a chunk
    chunked = BitCoder.fit(x, "l2", rerank, 7)
    ref = bitcodes.store_rows(x, half).mean(0, dtype=np.float64).astype(np.float32)
    np.testing.assert_allclose(chunked.centroid, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(whole.centroid, ref, rtol=1e-6, atol=1e-6)
    coder = BitCoder(ref, chunked.rot, "l2", half)
    got = coder.encode(x)  # 16 chunks
    monkeypatch.setattr(bitcodes, "CHUNK_BYTES", 16 << 20)
    want = coder.encode(x)  # one call
    np.testing.assert_array_equal(got, want)


def test_queries_are_rotated_with_the_float16_bits_of_the_rotation(tmp_path: Path) -> None:
    """The coder keeps rot's float16 bits for queries (`qrot`), also when read back from its
    bytes, and searches rotate with them: with qrot zeroed every query's estimates lose
    their dot products and the answers change; the float32 rot alone is not what they read.
    (A dense rotation: an index created before the structured one was the default.)"""
    x = clustered(3000, 70, seed=5)
    idx = build(tmp_path, x, "l2", dict(BITS, rotation="dense"))
    coder = idx.state.bits
    assert coder is not None
    np.testing.assert_array_equal(coder.qrot.view(np.float16), coder.rot.astype(np.float16))
    back = BitCoder.from_bytes(coder.to_bytes(), coder.dim)
    np.testing.assert_array_equal(back.qrot, coder.qrot)
    q = clustered(50, 70, seed=6)
    params = {"max_postings": 8}

    def answers() -> tuple[np.ndarray, np.ndarray]:
        one = np.stack([idx.search(q[i : i + 1], 10, params).slots[0] for i in range(10)])
        return one, idx.search(q, 10, params).slots  # the one-kernel path, the batch scan

    before = answers()
    keep = coder.qrot
    coder.qrot = np.zeros_like(keep)
    try:
        changed = answers()
    finally:
        coder.qrot = keep
    for a, b in zip(changed, before, strict=True):
        assert (a != b).any()
    for a, b in zip(answers(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    idx.close()


def test_churn_keeps_every_live_vector_findable(tmp_path: Path) -> None:
    """After inserts that split postings, a mass remove (merges, clean-ups) and more
    inserts, an exhaustive search by every live vector finds itself at distance 0 (float16
    rows), and ordinary recall holds."""
    idx = run_log(tmp_path, SEED, dict(SMALL, vector_dtype="bits"))
    live = live_after(op_log(SEED))
    slots = np.fromiter(live, np.int64)
    vecs = np.stack([live[int(s)] for s in slots])
    assert len(idx) == len(live)
    got = idx.search(vecs, 1, {"max_postings": 4096})
    np.testing.assert_array_equal(got.slots[:, 0], slots)
    want = ((stored(vecs) - vecs) ** 2).sum(1)
    np.testing.assert_allclose(got.distances[:, 0], want, rtol=1e-3, atol=1e-6)
    q = clustered(100, 16, seed=77)
    assert recall(idx.search(q, 10, {"max_postings": 8}).slots, live, q, 10, "l2") > 0.9
    idx.close()


def test_compaction_copies_the_entries(tmp_path: Path) -> None:
    """A compaction rewrites every live entry byte for byte into the new file generation;
    searches answer as before."""
    x = clustered(3000, 70, seed=5)
    idx = build(tmp_path, x, "l2", BITS)
    idx.remove(np.arange(0, 3000, 3))
    before = entries_by_slot(idx)
    q = clustered(50, 70, seed=6)
    res = idx.search(q, 10, {"max_postings": 8})
    gen = idx.state.file_gen
    idx.compact()
    assert idx.state.file_gen == gen + 1
    assert entries_by_slot(idx) == before
    after = idx.search(q, 10, {"max_postings": 8})
    np.testing.assert_array_equal(after.slots, res.slots)
    idx.close()


@pytest.mark.parametrize("rotation", ["hadamard", "dense"])
def test_checkpoint_and_reopen_keep_the_coder_and_the_answers(
    tmp_path: Path, rotation: str
) -> None:
    """The rotation (structured signs, the default of a new index, or the dense matrix of
    an index created before) and centroid are persisted in the state file as they are (not
    drawn again on open: a reopen with another seed keeps them) and a reopened index
    answers as before, warm and cold."""
    x = clustered(3000, 100, seed=7)
    q = clustered(40, 100, seed=8)
    given = BITS if rotation == "hadamard" else dict(BITS, rotation="dense")
    idx = build(tmp_path, x, "ip", given)
    idx.add(np.arange(3000, 3400), clustered(400, 100, seed=9, spread=0.3))
    while idx.maintain():
        pass
    res = idx.search(q, 10, {"max_postings": 8})
    coder = idx.state.bits
    assert coder is not None
    idx.checkpoint(5)
    idx.close()
    m = read_manifest(tmp_path)
    assert m is not None
    p = BuildParams.parse(m["params"])
    assert p.vector_dtype == "bits" and p.rerank == "float16" and p.rotation == rotation
    qbytes = load_state(tmp_path / m["state"], 100, p.width, p.block_dim(100))[4]
    saved = load_codec(qbytes, 100, "bits")
    assert isinstance(saved, BitCoder)
    assert saved.structured == coder.structured == (rotation == "hadamard")
    assert saved.rot.dtype == (np.int8 if rotation == "hadamard" else np.float32)
    np.testing.assert_array_equal(saved.rot, coder.rot)
    np.testing.assert_array_equal(saved.centroid, coder.centroid)
    for io in ("mmap", "direct"):
        again, seq = SpannIndex.open(100, "ip", dict(BITS, io=io, seed=99), tmp_path)
        assert seq == 5
        np.testing.assert_array_equal(again.state.bits.rot, coder.rot)  # type: ignore[union-attr]
        got = again.search(q, 10, {"max_postings": 8})
        np.testing.assert_array_equal(got.slots, res.slots)
        np.testing.assert_allclose(got.distances, res.distances, rtol=1e-6)
        if io == "direct":
            assert got.stats.extra["rerank_rows"] > 0
        again.close()


def test_cold_reads_equal_warm(tmp_path: Path) -> None:
    """io="direct" reads the same blocks with O_DIRECT and re-ranks from O_DIRECT reads of
    the store: the answers are the warm ones, batch and single, with and without a
    visible set."""
    x = clustered(3000, 130, seed=10)
    q = clustered(30, 130, seed=11)
    build(tmp_path, x, "l2", BITS).checkpoint(1)
    warm, _ = SpannIndex.open(130, "l2", dict(BITS, io="mmap"), tmp_path)
    cold, _ = SpannIndex.open(130, "l2", dict(BITS, io="direct"), tmp_path)
    vis = Visible.from_slots(np.arange(0, 3000, 5), 3000)
    for v in (None, vis):
        a = warm.search(q, 10, {"max_postings": 8}, v)
        b = cold.search(q, 10, {"max_postings": 8}, v)
        np.testing.assert_array_equal(a.slots, b.slots)
        one = cold.search(q[:1], 10, {"max_postings": 8}, v)
        np.testing.assert_array_equal(one.slots, a.slots[:1])
    warm.close()
    cold.close()


def test_a_visible_set_that_needs_widening(tmp_path: Path) -> None:
    """A visible set of 7 slots spread over the data: every query gets exactly those 7
    (pass 5 widens until it has them), nearest first, with exact distances."""
    x = clustered(4000, 96, seed=12)
    idx = build(tmp_path, x, "l2", BITS)
    keep = np.array([3, 500, 1111, 2047, 2999, 3500, 3998])
    vis = Visible.from_slots(keep, 4000)
    q = clustered(20, 96, seed=13)
    got = idx.search(q, 10, {"max_postings": 2}, vis)
    d = exact_dists(stored(x[keep]), q, "l2")
    for i in range(len(q)):
        assert got.slots[i, :7].tolist() == keep[np.argsort(d[i], kind="stable")].tolist()
        assert (got.slots[i, 7:] == -1).all()
        np.testing.assert_allclose(got.distances[i, :7], np.sort(d[i]), rtol=1e-4)


def test_a_batch_on_two_threads_equals_one_by_one(tmp_path: Path) -> None:
    """A batch split over two threads (scan and rerank) answers each query as it is
    answered alone."""
    x = clustered(4000, 200, seed=14)
    q = clustered(50, 200, seed=15)
    idx = build(tmp_path, x, "cosine", BITS)
    was = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        batch = idx.search(q, 10, {"max_postings": 8})
    finally:
        numba.set_num_threads(was)
    for i in range(len(q)):
        one = idx.search(q[i : i + 1], 10, {"max_postings": 8})
        np.testing.assert_array_equal(one.slots[0], batch.slots[i])
        np.testing.assert_array_equal(one.distances[0], batch.distances[i])


def test_rerank_none_is_refused_naming_both(tmp_path: Path) -> None:
    """bits without the store cannot rank anything exactly: rerank="none" is an error that
    names both parameters; rerank not given means float16 rows, float32 is kept."""
    with pytest.raises(InvalidArgument, match="vector_dtype.*rerank") as e:
        BuildParams.parse({"vector_dtype": "bits", "rerank": "none"})
    assert e.value.field == "index_params.rerank"
    assert BuildParams.parse({"vector_dtype": "bits"}).rerank == "float16"
    assert BuildParams.parse({"vector_dtype": "bits", "rerank": "float32"}).rerank == "float32"
    with pytest.raises(InvalidArgument):
        SpannIndex.open(8, "l2", {"vector_dtype": "bits", "rerank": "none"}, tmp_path)


def test_rerank_k_left_to_the_index_is_still_checked() -> None:
    """`rerank_k` not given stays None for the index to resolve (for bits its calibrated
    value, else 100; 16 for the others, whatever a calibration said); given, it wins, and
    it is checked as the integer its bounds make it (1.5 names the field)."""
    sp = SearchParams.parse({})
    assert sp.rerank_k is None
    assert rerank_candidates(sp, "bits") == 100 and rerank_candidates(sp, "int8") == 16
    assert rerank_candidates(sp, "bits", 500) == 500 and rerank_candidates(sp, "int8", 500) == 16
    assert rerank_candidates(SearchParams.parse({"rerank_k": 7}), "bits", 500) == 7
    for bad in (1.5, -1, True):
        with pytest.raises(InvalidArgument) as e:
            SearchParams.parse({"rerank_k": bad})
        assert e.value.field == "params.rerank_k"


def test_float32_rows_rank_exactly(tmp_path: Path) -> None:
    """With rerank="float32" the distances are those of the exact rows (0 to itself)."""
    x = clustered(2000, 64, seed=16)
    idx = build(tmp_path, x, "l2", dict(BITS, rerank="float32"))
    got = idx.search(x[:50], 1, {"max_postings": 8})
    np.testing.assert_array_equal(got.slots[:, 0], np.arange(50))
    assert (got.distances[:, 0] == 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["split:1", "merge:1", "checkpoint:4", "checkpoint:9"])
def test_crash_then_replay_recovers(point: str, tmp_path: Path) -> None:
    """Killed at a SPANN kill point and replayed from the last checkpoint (as the engine
    does), a bits index finds every live vector exactly and its codes are the coder's."""
    params = dict(SMALL, vector_dtype="bits")
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\nfrom test_spann_support import run_log\n"
        f"run_log(Path({str(tmp_path)!r}), {SEED}, {params!r})\n"
    )
    env = dict(os.environ, VECDB_KILL_AT=point)
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    if child.returncode == 0:
        pytest.skip(f"{point} not reached by this log")
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    idx = run_log(tmp_path, SEED, params)
    live = live_after(op_log(SEED))
    slots = np.fromiter(live, np.int64)
    vecs = np.stack([live[int(s)] for s in slots])
    got = idx.search(vecs, 1, {"max_postings": 4096})
    np.testing.assert_array_equal(got.slots[:, 0], slots)
    coder = idx.state.bits
    assert coder is not None
    by_slot = entries_by_slot(idx)
    want = coder.encode(vecs)
    for s, w in zip(slots.tolist(), want, strict=True):
        assert by_slot[s] == {w.tobytes()}, s
    idx.close()


def test_child_build_and_child_drain_equal_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk build run in a child process and a drain run in a child write the same
    entries (the coder travels in the state file) and answer as in process; the files
    verify (`verify_files` reads the coder back)."""
    from test_spann_drain_child_rerank import _maintain_in_process

    from vecdb.index.spann import child, drain_child
    from vecdb.index.spann.persist import verify_files

    x = clustered(4000, 40, seed=17)
    tail = (np.arange(3000, 4000), x[3000:])
    idx = {}
    for name, mib in (("here", "off"), ("there", "0")):  # "0": every build goes to a child
        monkeypatch.setenv(child.ENV, mib)
        idx[name], _ = open_spann(40, "l2", dict(BITS, head_fraction=0.05), tmp_path / name)
        idx[name].build(np.arange(3000), x[:3000])
        idx[name].checkpoint(1)
    assert entries_by_slot(idx["here"]) == entries_by_slot(idx["there"])
    idx["here"].add(*tail)
    _maintain_in_process(idx["here"], 2)
    monkeypatch.setenv(drain_child.ENV, "0")
    drain_child.add_in_child(idx["there"].state, iter([tail]), 2, 1, None)
    wide = {"max_postings": 4096, "prune_ratio": 1e9, "rerank_k": 200}
    q = x[2900:3100] + 0.01
    want, got = idx["here"].search(q, 10, wide), idx["there"].search(q, 10, wide)
    np.testing.assert_array_equal(got.slots, want.slots)
    np.testing.assert_array_equal(got.distances, want.distances)
    coder = idx["there"].state.bits
    assert coder is not None
    by_slot = entries_by_slot(idx["there"])
    assert {s: {e.tobytes()} for s, e in enumerate(coder.encode(x))} == by_slot
    for name in ("here", "there"):
        idx[name].checkpoint(2)
        idx[name].close()
        bad = [r for r in verify_files(tmp_path / name) if not r["ok"]]
        assert not bad, bad


def test_a_garbage_slot_in_a_verified_block_is_skipped_not_read_past_the_bitmap(
    tmp_path: Path,
) -> None:
    """A block's bytes changed after its check (as a writer bug once did: a drain child
    overwrote blocks the parent's searches held): a slot number far past the index is
    skipped by the bit scan, never used to index its candidate bitmap (which read, and
    could fault, hundreds of MB past it). In a child process, so a fault fails the test
    rather than killing the run."""
    code = f"""
import os, numpy as np
from test_spann_support import clustered
from vecdb.index.spann import open_spann
x = clustered(3000, 32, seed=1, centres=16, spread=1.0)
idx, _ = open_spann(32, "l2", {{"vector_dtype": "bits", "threads": 1}}, {str(tmp_path)!r})
idx.build(np.arange(len(x)), x)
wide = {{"max_postings": 4096, "prune_ratio": 1e9}}
q = x[:40] + 0.01
before = idx.search(q, 10, wide).slots  # every block read, so checked once
st = idx.state
ext = st.table.extents()
fd = os.open(st.file.path, os.O_WRONLY)
for off in ext.offset.tolist():  # each block's first entry now names slot 0xFFFFFFF0
    os.pwrite(fd, np.array([0xFFFFFFF0], np.uint32).tobytes(), off + 64)
os.close(fd)
after = idx.search(q, 10, wide).slots
assert (after < len(x)).all() and (after >= -1).all()
assert (after == before).mean() > 0.5
print("ok")
"""
    tests = Path(__file__).resolve().parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tests, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parents[1])])},
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_row_is_coded_once_however_many_postings_it_is_written_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An insert codes each row once for all its replicas, and a split or a LIRE move
    copies the entries it rewrites instead of coding them again (before: once per copy and
    again at every split, 74% of a 1,536-d drain's time); the entries stay the coder's."""
    from vecdb.index.spann import bitcodes

    coded: list[int] = []
    real = bitcodes.encode_rows

    def counting(x: np.ndarray, *args: object) -> np.ndarray:
        coded.append(len(x))
        return real(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bitcodes, "encode_rows", counting)
    ops = [op for op in op_log(SEED) if op[0] in ("build", "add", "maintain")][:13]
    assert [op[0] for op in ops[:3]] == ["build", "add", "maintain"] and len(ops) == 13
    idx, _ = open_spann(16, "l2", dict(SMALL, vector_dtype="bits"), tmp_path)
    idx.build(ops[0][1], ops[0][2])
    coded.clear()
    added = 0
    for kind, slots, x in ops[1:]:
        if kind == "add":
            idx.add(slots, x)
            added += len(slots)
        else:
            idx.maintain()
    st = idx.state
    assert st.counters["splits"] > 0 and st.counters["reassigned"] > 0
    assert sum(coded) == added  # 2,400 rows, written to ~8 postings each, then split
    by_slot = entries_by_slot(idx)
    slots = np.fromiter(by_slot, np.int64)
    x_all = np.concatenate([op[2] for op in ops if op[0] in ("build", "add")])
    assert st.bits is not None
    want = st.bits.encode(x_all[slots])
    for s, w in zip(slots.tolist(), want, strict=True):
        assert by_slot[s] == {w.tobytes()}, s
    idx.close()


def test_a_coder_that_cannot_be_read_is_refused() -> None:
    """Either rotation's bytes round-trip; damaged ones are a FormatError naming why."""
    from vecdb.errors import FormatError

    x = clustered(200, 40, seed=3)
    for kind in ("hadamard", "dense"):
        coder = BitCoder.fit(x, "l2", "float16", 5, kind)
        back = BitCoder.from_bytes(coder.to_bytes(), 40)
        np.testing.assert_array_equal(back.rot, coder.rot)
        np.testing.assert_array_equal(back.encode(x), coder.encode(x))
        with pytest.raises(FormatError, match="bits coder"):
            BitCoder.from_bytes(coder.to_bytes()[:-1], 40)
        with pytest.raises(FormatError, match="bits coder"):
            BitCoder.from_bytes(coder.to_bytes(), 41)
    data = bytearray(BitCoder.fit(x, "l2", "float16", 5, "hadamard").to_bytes())
    data[-1] = 0  # a sign that is neither +1 nor -1
    with pytest.raises(FormatError, match="signs"):
        BitCoder.from_bytes(bytes(data), 40)
