"""1-bit ("bits") postings as the default from BITS_MIN_DIM dimensions, and the rerank_k a bits index
calibrates for its data after a bulk build (`vecdb.index.spann.calibrate`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_spann_support import clustered, recall

from vecdb.engine import Database
from vecdb.errors import InvalidArgument
from vecdb.index.params import (
    BITS_MIN_DIM,
    DEFAULT_BITS_RERANK_K,
    NARROW_DEFAULT_DTYPE,
    BuildParams,
)
from vecdb.index.spann import calibrate, open_spann


def test_the_dimension_picks_the_default_dtype() -> None:
    """From BITS_MIN_DIM dimensions a new index given no vector_dtype gets 1-bit postings
    with a float16 rerank store; below, int8 postings with the same store; with a dtype or
    rerank "none" given, or with no dimension (an existing index's stored parameters),
    float16 as before."""
    p = BuildParams.parse(None, BITS_MIN_DIM)
    assert (p.vector_dtype, p.rerank) == ("bits", "float16")
    assert BuildParams.parse({"threads": 1}, 1024).vector_dtype == "bits"
    assert BuildParams.parse({"rerank": "float32"}, 384).rerank == "float32"
    narrow = BuildParams.parse(None, BITS_MIN_DIM - 1)
    assert (
        (narrow.vector_dtype, narrow.rerank)
        == (NARROW_DEFAULT_DTYPE, "float16")
        == ("int8", "float16")
    )
    assert BuildParams.parse({"rerank": "float32"}, 50).rerank == "float32"
    assert BuildParams.parse({"rerank": "none"}, 50).vector_dtype == "float16"
    assert BuildParams.parse({"vector_dtype": "float16"}, 384).vector_dtype == "float16"
    assert BuildParams.parse({"vector_dtype": "int8"}, 384).vector_dtype == "int8"
    none = BuildParams.parse({"rerank": "none"}, 384)
    assert (none.vector_dtype, none.rerank) == ("float16", "none")
    assert BuildParams.parse(None).vector_dtype == "float16"


def test_an_index_keeps_its_stored_dtype_when_opened_without_params(tmp_path: Path) -> None:
    """An index created with float16 postings at 384 dimensions (as every index was before
    the default moved) opens as float16 again when its collection passes no parameters."""
    x = clustered(500, 384, seed=1)
    idx, _ = open_spann(384, "l2", {"vector_dtype": "float16", "threads": 1}, tmp_path)
    idx.build(np.arange(len(x)), x)
    idx.checkpoint(1)
    idx.close()
    again, _ = open_spann(384, "l2", {}, tmp_path)
    assert again.state.params.vector_dtype == "float16"
    assert not again.state.is_bits
    again.close()


def test_a_collection_gets_its_dtype_from_its_dimension(tmp_path: Path) -> None:
    """Through the engine: a 300-d collection with no index_params is a bits index (and
    refuses float16-range overflows as its float16 store would, naming the component and
    storing nothing), a 128-d one int8 with a float16 rerank store."""
    with Database(tmp_path) as db:
        db.create_collection("wide", dim=300, metric="l2")
        db.create_collection("narrow", dim=128, metric="cosine")
        assert "vector_dtype=bits" in db.stats("wide")["index"]["spec"]
        assert "vector_dtype=int8, rerank=float16" in db.stats("narrow")["index"]["spec"]
        big = np.ones((2, 300), np.float32)
        big[1, 7] = 1e6
        with pytest.raises(InvalidArgument) as info:
            db.upsert("wide", ids=[1, 2], vectors=big)
        assert info.value.field == "vectors[1][7]" and "rerank rows" in info.value.message
        assert db.count("wide") == 0


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_structureless_data_calibrates_more_candidates(tmp_path: Path) -> None:
    """On random 512-d vectors 100 re-ranked 1-bit candidates miss true neighbours, so the
    build calibrates a larger rerank_k; the default search uses it (recall against exact
    search above the R = 100 search's), a request's rerank_k still overrides it, and the
    value survives a checkpoint and reopen. Gaussian clusters (structureless within each
    cluster) keep 100."""
    x = _random(6000, 512, seed=2)
    q = _random(60, 512, seed=3)
    idx, _ = open_spann(512, "l2", {"threads": 1}, tmp_path / "random")
    assert idx.state.is_bits  # the default at this width
    idx.build(np.arange(len(x)), x)
    chosen = idx.state.rerank_k
    assert chosen > DEFAULT_BITS_RERANK_K, (chosen, idx.state.rerank_k_agreement)
    assert idx.state.rerank_k_agreement >= calibrate.CALIBRATE_RECALL
    assert idx.stats()["rerank_k_default"] == chosen and idx.stats()["rerank_k_calibrated"]
    base = {i: x[i] for i in range(len(x))}
    default = recall(idx.search(q, 10).slots, base, q, 10, "l2")
    hundred = recall(idx.search(q, 10, {"rerank_k": 100}).slots, base, q, 10, "l2")
    assert default > hundred + 0.1, (default, hundred)
    idx.checkpoint(1)
    idx.close()
    again, _ = open_spann(512, "l2", {}, tmp_path / "random")
    assert again.state.rerank_k == chosen
    np.testing.assert_array_equal(
        again.search(q, 10).slots, again.search(q, 10, {"rerank_k": chosen}).slots
    )
    again.close()

    y = clustered(6000, 384, seed=4, spread=0.3)
    idx, _ = open_spann(384, "l2", {"threads": 1}, tmp_path / "clustered")
    idx.build(np.arange(len(y)), y)
    assert idx.state.rerank_k == DEFAULT_BITS_RERANK_K, idx.state.rerank_k_agreement
    idx.close()


def test_low_rank_data_calibrates_fewer_candidates(tmp_path: Path) -> None:
    """Data of low intrinsic dimension (16 latent dimensions in 384, as text embeddings
    have few) is ranked well by its 1-bit estimates: the build takes the smallest step,
    fewer candidates than the uncalibrated default (MiniLM-384 calibrates 50)."""
    rng = np.random.default_rng(6)
    z = rng.standard_normal((6000, 16)).astype(np.float32)
    w = (z @ rng.standard_normal((16, 384)) + 0.05 * rng.standard_normal((6000, 384))).astype(
        np.float32
    )
    idx, _ = open_spann(384, "l2", {"threads": 1}, tmp_path / "low-rank")
    idx.build(np.arange(len(w)), w)
    assert idx.state.rerank_k == calibrate.STEPS[0] < DEFAULT_BITS_RERANK_K
    assert idx.state.rerank_k_agreement >= calibrate.CALIBRATE_RECALL
    idx.close()


def test_small_builds_and_inserts_keep_the_default(tmp_path: Path) -> None:
    """Below MIN_VECTORS no calibration runs (every step would agree): the default 100, not
    marked calibrated; an index grown by inserts alone has none either."""
    x = _random(calibrate.MIN_VECTORS - 1, 256, seed=5)
    idx, _ = open_spann(256, "l2", {"threads": 1}, tmp_path / "small")
    idx.build(np.arange(len(x)), x)
    s = idx.stats()
    assert (s["rerank_k_default"], s["rerank_k_calibrated"]) == (DEFAULT_BITS_RERANK_K, False)
    assert s["rerank_k_calibration"] is None
    idx.close()
    grown, _ = open_spann(256, "l2", {"threads": 1}, tmp_path / "grown")
    grown.add(np.arange(len(x)), x)
    assert grown.stats()["rerank_k_default"] == DEFAULT_BITS_RERANK_K
    grown.close()


@pytest.mark.parametrize("d", [256, 384])
def test_a_float16_index_is_not_calibrated(d: int, tmp_path: Path) -> None:
    """The calibration leaves a float16 index alone, at any width: no rerank_k keys in its
    stats, and its searches re-rank nothing (no store)."""
    x = clustered(3000, d, seed=6)
    idx, _ = open_spann(d, "l2", {"vector_dtype": "float16", "threads": 1}, tmp_path)
    idx.build(np.arange(len(x)), x)
    assert "rerank_k_default" not in idx.stats() and idx.state.rerank_k == 0
    assert idx.search(x[:5], 10).stats.extra.get("rerank_rows", 0) == 0
    idx.close()
