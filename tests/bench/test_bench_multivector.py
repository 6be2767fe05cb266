"""The multi-vector benchmark harness: exact truth against brute force, the harness kernels
against numpy, the metrics on hand-made inputs, determinism of the tiers, the MiniLM token
outputs, and a CI-sized run through `vecdb bench --multivector` whose report has every row.

The tiers are built from the real standard-library docstrings; the GloVe table is replaced by
seeded random unit vectors for every corpus word (the GloVe package is a bench extra, and
nothing here depends on which vectors the words get)."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vecdb.bench import minilm
from vecdb.bench.multivector import corpus, embed, metrics, scoring
from vecdb.bench.multivector.embed import MVData, contextual, load_tier, parse_tier, projection
from vecdb.bench.multivector.truth import exact_ranking, exact_scores
from vecdb.errors import InvalidArgument

SMALL = "t1-ctx:300"


def fake_glove() -> tuple[np.ndarray, dict[str, int], str]:
    """Seeded unit vectors (50 d) for every word of the docstrings, in sorted word order."""
    vocab_words = sorted(
        {w for d in corpus.docstrings() for w in corpus.words(d.body + " " + d.first_line)}
    )
    g = np.random.default_rng(7).standard_normal((len(vocab_words), 50)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g, {w: i for i, w in enumerate(vocab_words)}, "synthetic"


@pytest.fixture(scope="module", autouse=True)
def synthetic_glove() -> Iterator[None]:
    table = fake_glove()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embed, "_glove", lambda: table)
        yield


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mvcache")


@pytest.fixture(scope="module")
def small(cache: Path) -> MVData:
    return load_tier(SMALL, cache, n_queries=50)


def brute_force(q: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    """MaxSim by the definition, one document and one query token at a time, in float64."""
    out = []
    for d in docs:
        total = 0.0
        for qa in q.astype(np.float64):
            total += max(float(qa @ t) for t in d.astype(np.float64))
        out.append(total)
    return np.asarray(out)


def test_truth_equals_brute_force_maxsim(small: MVData) -> None:
    """The cached exact scores are the definition of MaxSim, for every document."""
    scores = exact_scores(small)
    assert scores.shape == (small.n_queries, small.n_docs)
    docs = [small.doc(i) for i in range(small.n_docs)]
    for j in (0, 17, small.n_queries - 1):
        np.testing.assert_allclose(scores[j], brute_force(small.query(j), docs), atol=1e-9)
    again = exact_scores(small)  # from the cache
    np.testing.assert_array_equal(scores, again)


def test_numba_maxsim_matches_reference_on_subsets() -> None:
    """The harness kernel equals the float64 reference, on all and on chosen documents,
    with d=1, odd d and an empty document."""
    rng = np.random.default_rng(0)
    for d in (1, 7, 50):
        lengths = np.array([3, 0, 5, 1, 9])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = rng.standard_normal((offsets[-1], d)).astype(np.float32)
        q = rng.standard_normal((4, d)).astype(np.float32)
        ref = scoring.reference_scores(q, tokens, offsets)
        assert ref[1] == 0.0
        np.testing.assert_allclose(scoring.maxsim(q, tokens, offsets), ref, atol=1e-4)
        pick = np.array([4, 0, 2], dtype=np.int64)
        np.testing.assert_allclose(scoring.maxsim(q, tokens, offsets, pick), ref[pick], atol=1e-4)


def test_code_scores_equal_maxsim_of_decoded_tokens() -> None:
    """Codes-only scoring through the table equals exact MaxSim on centroid-decoded tokens."""
    rng = np.random.default_rng(1)
    centroids = rng.standard_normal((16, 6)).astype(np.float32)
    codes = rng.integers(0, 16, 40).astype(np.uint8)
    offsets = np.array([0, 10, 11, 25, 40], dtype=np.int64)
    q = rng.standard_normal((3, 6)).astype(np.float32)
    got = scoring.code_scores(q, centroids, *scoring.pack(codes, 16), offsets)
    want = scoring.reference_scores(q, centroids[codes], offsets)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_centroid_id_hamming_matches_a_loop() -> None:
    """The paper's binary mode: sum over query ids of max 1/(1+popcount(a xor b))."""
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, 30).astype(np.uint8)
    offsets = np.array([0, 4, 30], dtype=np.int64)
    qids = np.array([3, 200, 17], dtype=np.int64)
    got = scoring.id_hamming_scores(qids, codes, offsets)
    for d in range(2):
        seg = codes[offsets[d] : offsets[d + 1]]
        want = sum(max(1 / (1 + bin(int(a) ^ int(b)).count("1")) for b in seg) for a in qids)
        assert math.isclose(float(got[d]), want, rel_tol=1e-6)


def test_top_k_orders_by_score_then_id_and_pads() -> None:
    ids, s = scoring.top_k(np.array([0.5, 0.9, 0.9, 0.1]), 3)
    assert ids.tolist() == [1, 2, 0] and s.tolist() == pytest.approx([0.9, 0.9, 0.5])
    ids, s = scoring.top_k(np.array([0.2]), 3, np.array([7], dtype=np.int64))
    assert ids.tolist() == [7, -1, -1] and s[1] == -np.inf


def test_metrics_on_known_inputs() -> None:
    """Tie-aware recall, graded nDCG vs exact, mass ratio, label metrics, candidate recall."""
    scores = np.array([10.0, 9.0, 8.0, 8.0, 1.0])
    top = np.array([0, 1, 2, 3, 4])
    # k = 3: the 3rd exact score is 8.0, so doc 3 (a tie) counts; doc 4 does not.
    assert metrics.recall_vs_exact(scores, np.array([0, 3, 4]), k=3) == pytest.approx(2 / 3)
    assert metrics.recall_vs_exact(scores, np.array([1, 1, -1]), k=3) == pytest.approx(1 / 3)
    assert metrics.ndcg_vs_exact(scores, top, top, k=3) == pytest.approx(1.0)
    # found = [1, 0, 9]: gains 2, 3, 0 against the ideal 3, 2, 1
    dcg = 2 + 3 / math.log2(3)
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    assert metrics.ndcg_vs_exact(scores, top, np.array([1, 0, 4]), k=3) == pytest.approx(
        dcg / ideal
    )
    assert metrics.mass_ratio(scores, top, np.array([0, 1, 4]), k=3) == pytest.approx(20 / 27)
    assert metrics.label_metrics(np.array([5, 2, 7]), 2) == pytest.approx(
        (0.5, 1 / math.log2(3), 1.0)
    )
    assert metrics.label_metrics(np.array([5, 2, 7]), 9) == (0.0, 0.0, 0.0)
    assert metrics.candidate_recall(top, np.array([0, 2, 9]), k=3) == pytest.approx(2 / 3)
    assert metrics.candidate_recall(top, None) is None
    assert metrics.work_saved(40, 100) == pytest.approx(0.6)
    p = metrics.percentiles([0.001] * 19 + [0.1])
    assert p["p50_ms"] == pytest.approx(1.0) and p["p95_ms"] > 1.0


def test_tiers_are_deterministic_and_well_formed(small: MVData, tmp_path: Path) -> None:
    """A fresh preparation gives the same arrays; tokens are unit rows; labels are docs."""
    other = load_tier(SMALL, tmp_path, n_queries=50)
    for name in ("tokens", "offsets", "queries", "q_offsets", "labels"):
        np.testing.assert_array_equal(getattr(small, name), getattr(other, name))
    assert small.meta["inputs"] == other.meta["inputs"]
    assert small.n_docs == 300 and small.n_queries == 50 and small.dim == 50
    np.testing.assert_allclose(np.linalg.norm(small.tokens, axis=1), 1.0, atol=1e-5)
    lengths = np.diff(small.offsets)
    assert lengths.min() >= 12 and lengths.max() <= 64
    q_len = np.diff(small.q_offsets)
    assert q_len.min() >= 4 and q_len.max() <= 12
    assert len(set(small.labels.tolist())) == small.n_queries  # one query per document at most
    static = load_tier("t1-static:300", tmp_path, n_queries=50)
    np.testing.assert_array_equal(static.offsets, small.offsets)  # same documents, other vectors
    assert not np.allclose(static.tokens, small.tokens)
    ranking = exact_ranking(exact_scores(small), 10)
    assert ranking.shape == (50, 10)


def test_contextual_formula_and_projection() -> None:
    """ctx: v_t = normalize(g_t + 0.5 * mean of the neighbours within 2, t excluded)."""
    g = np.eye(4, dtype=np.float32)
    v = contextual(g)
    want = g[1] + 0.5 * (g[0] + g[2] + g[3]) / 3
    np.testing.assert_allclose(v[1], want / np.linalg.norm(want), atol=1e-6)
    p = projection(384, 128)
    np.testing.assert_allclose(p.T @ p, np.eye(128), atol=1e-5)
    np.testing.assert_array_equal(p, projection(384, 128))


def test_bad_tier_specs_are_rejected() -> None:
    assert parse_tier("t2:500") == ("t2", 500)
    for bad in ("t3", "t1-ctx:5", "t1-ctx:x"):
        with pytest.raises(InvalidArgument):
            parse_tier(bad)


def _tiny_bert(seed: int = 0) -> tuple[minilm.BertConfig, dict[str, np.ndarray]]:
    cfg = minilm.BertConfig(hidden=8, heads=2, layers=2, intermediate=12)
    rng = np.random.default_rng(seed)

    def r(*shape: int, s: float = 0.5) -> np.ndarray:
        return (rng.normal(size=shape) * s).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(30, 8),
        "embeddings.position_embeddings.weight": r(16, 8),
        "embeddings.token_type_embeddings.weight": r(2, 8),
        "embeddings.LayerNorm.weight": 1 + r(8, s=0.1),
        "embeddings.LayerNorm.bias": r(8, s=0.1),
    }
    for i in range(2):
        p = f"encoder.layer.{i}"
        for name, (o, n) in {
            "attention.self.query": (8, 8), "attention.self.key": (8, 8),
            "attention.self.value": (8, 8), "attention.output.dense": (8, 8),
            "intermediate.dense": (12, 8), "output.dense": (8, 12),
        }.items():  # fmt: skip
            w[f"{p}.{name}.weight"], w[f"{p}.{name}.bias"] = r(o, n), r(o, s=0.1)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}.{ln}.weight"], w[f"{p}.{ln}.bias"] = 1 + r(8, s=0.1), r(8, s=0.1)
    return cfg, w


def test_minilm_token_outputs_agree_with_the_pooled_forward() -> None:
    """Mean-pooling forward_tokens' hidden states gives forward's embedding; the [CLS]
    attention is a distribution over real tokens; encode_tokens ignores the batching."""
    cfg, w = _tiny_bert()
    rng = np.random.default_rng(4)
    seqs = [rng.integers(0, 30, n).tolist() for n in (5, 2, 9, 4)]
    ids = np.zeros((4, 9), dtype=np.int64)
    mask = np.zeros((4, 9), dtype=np.float32)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    hidden, att = minilm.forward_tokens(cfg, w, ids, mask)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, minilm.forward(cfg, w, ids, mask), atol=1e-5)
    np.testing.assert_allclose(att.sum(1), 1.0, atol=1e-5)
    assert np.all(att[mask == 0] < 1e-6) and np.all(att >= 0)
    one = minilm.encode_tokens(cfg, w, seqs, tokens_per_batch=1)
    big = minilm.encode_tokens(cfg, w, seqs, tokens_per_batch=1000)
    for (h1, a1), (h2, a2), s in zip(one, big, seqs):
        assert h1.shape == (len(s), 8) and a1.shape == (len(s),)
        np.testing.assert_allclose(h1, h2, atol=1e-5)
        np.testing.assert_allclose(a1, a2, atol=1e-6)


def test_cli_run_reports_every_system(cache: Path, tmp_path: Path) -> None:
    """`vecdb bench --multivector` on a CI-sized tier writes a JSONL row per setting and a
    RESULTS.md section with a line for every system, the targets block and both plots."""
    from vecdb.cli.bench import bench

    config = {
        "threads": [1, 2],
        "systems": [
            {"system": "exact-numba", "role": "reference"},
            {"system": "maxsim-cpu"},
            {"system": "token-knn-hnsw", "build": {"M": 16}, "sweep": {"k_prime": [8, 32]}},
            {"system": "codes-only", "builds": [{"K": 64}]},
            {"system": "centroid-id-hamming", "builds": [{"K": 64}]},
            {"system": "mvindex", "label": "default", "role": "default"},
            {"system": "mvindex-exact"},
            {
                "system": "mvindex",
                "label": "qprune",
                "role": "pruning",
                "sweep": [{"query_keep": 0.5}],
            },
        ],  # fmt: skip
    }
    cfg_path = tmp_path / "mv.json"
    cfg_path.write_text(json.dumps(config))
    out = tmp_path / "out"
    args = ["--multivector", SMALL, "--config", str(cfg_path), "--out", str(out),
            "--cache-dir", str(cache), "--queries", "50", "--latency-queries", "10"]  # fmt: skip
    res = CliRunner().invoke(bench, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "results-mv-t1-ctx-300.jsonl").read_text().splitlines()]
    assert [r["system"] for r in rows] == [
        "exact-numba", "maxsim-cpu", "token-knn-hnsw", "token-knn-hnsw", "codes-only",
        "centroid-id-hamming", "mvindex/default", "mvindex-exact", "mvindex/qprune",
    ]  # fmt: skip
    assert all("error" not in r for r in rows)
    exact = rows[0]
    assert exact["recall_at_10"] == 1.0 and exact["fully_scored_frac"] == 1.0
    assert exact["label_ndcg_at_10"] == pytest.approx(exact["exact_labels"]["ndcg_at_10"])
    assert rows[1]["recall_at_10"] == pytest.approx(1.0)  # maxsim-cpu is exact too
    assert rows[3]["recall_at_10"] >= rows[2]["recall_at_10"]  # a wider k' cannot lose
    assert rows[4]["recall_at_10"] < 0.95 and rows[4]["bytes_per_token_total"] == 0.75
    for r in rows:
        assert r["latency_p50_1t_ms"] > 0 and r["latency_p95_2t_ms"] > 0
    default, own_exact, qprune = rows[6:]
    assert own_exact["recall_at_10"] == pytest.approx(1.0)
    assert 0 < default["fully_scored_frac"] < 1 and default["bytes_per_token"]["codes"] > 0
    assert qprune["pruning_work_saved"] == pytest.approx(0.5)
    md = (out / "RESULTS.md").read_text()
    section = md[md.index("<!-- vecdb-bench:mv-t1-ctx-300:begin -->") :]
    table = [x for x in section.splitlines() if x.startswith("| ")]
    for r in rows:
        assert any(x.startswith(f"| {r['system']} |") for x in table), r["system"]
    targets = section[section.index("### Targets") : section.index("### Every setting")]
    assert "(mvindex/default -): recall@10 vs exact" in targets
    assert "faster than exact-numba at 2 thread(s)" in targets  # the reference
    assert "(pruning)" in targets
    for png in ("mv-t1-ctx-300-recall-vs-bytes.png", "mv-t1-ctx-300-recall-vs-latency.png"):
        assert (out / "plots" / png).stat().st_size > 1000


def test_mvindex_adapter_counts_the_tiers_each_setting_reads(small: MVData) -> None:
    """Bytes per token follow the rerank and the prefilter: residuals by default, sign bits
    only with hamming_keep, codes alone for rerank "codes", float32 for "exact", and float32
    beside the rerank's tier while `refine` is on (the default)."""
    from vecdb.bench.multivector.systems import MVIndex

    system = MVIndex()
    system.build(small, {"K": 64, "sign_bits": True})
    try:
        per = system.bytes_per_token({"refine": 0})
        assert set(per) == {"codes", "postings", "residuals"}
        assert per["codes"] == 0.75 and per["residuals"] == 13.0  # 6 bits; 2 bits x 50 dims
        assert "signs" in system.bytes_per_token({"hamming_keep": 8})
        assert set(system.bytes_per_token({"rerank": "codes"})) == {"codes", "postings"}
        assert "raw" in system.bytes_per_token({"rerank": "codes", "refine": 16})
        assert system.bytes_per_token({"rerank": "exact"})["raw"] == 200.0
        refined = system.bytes_per_token({})  # by default the residuals, then the raw store
        assert set(refined) == {"codes", "postings", "residuals", "raw"}
        assert refined["raw"] == 200.0
        hits = system.search(small.query(0), 10, {})
        assert len(hits.ids) == 10 and 0 < hits.fully_scored <= small.n_docs
        assert system.pruning_share({"query_keep": 0.5}) == pytest.approx(0.5)
    finally:
        system.close()


def test_fast_plaid_adapter_returns_the_exact_top_documents_at_full_width(
    tmp_path: Path,
) -> None:
    """fast-plaid (the `plaid` extra) probing every cell and scoring every document finds
    the exact top 10 almost always; its bytes per token are its files, residuals at 4 bits
    x 64 dimensions = 32 B."""
    pytest.importorskip("fast_plaid", reason="the optional `plaid` extra (torch) is not installed")
    from vecdb.bench.multivector.systems import FastPlaid
    from vecdb.bench.multivector.tenants import synthetic

    data = synthetic("200:10:64", tmp_path, 20)  # 200 documents of 64-d tokens, 20 queries
    system = FastPlaid()
    system.build(data, {"nbits": 4})
    try:
        per = system.bytes_per_token({})
        assert set(per) == {"codes", "residuals", "ivf"}
        assert per["residuals"] == pytest.approx(32.0, rel=0.02)  # (+ the .npy header)
        scores = exact_scores(data)
        wide = {"n_ivf_probe": 1024, "n_full_scores": data.n_docs}
        recalls = []
        for j in range(data.n_queries):
            hits = system.search(data.query(j), 10, wide)
            assert hits.ids.shape == (10,) and hits.fully_scored == -1
            recalls.append(metrics.recall_vs_exact(scores[j], hits.ids))
        assert np.mean(recalls) >= 0.9
    finally:
        system.close()


def test_fast_plaid_missing_is_a_clear_error(
    small: MVData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from vecdb.bench.multivector.systems import FastPlaid
    from vecdb.errors import FailedPrecondition

    monkeypatch.setitem(sys.modules, "fast_plaid", None)  # an import of it fails
    with pytest.raises(FailedPrecondition, match=r"\[plaid\]"):
        FastPlaid().build(small, {})
    monkeypatch.delitem(sys.modules, "fast_plaid")
    if importlib.util.find_spec("fast_plaid") is not None:  # installed: the width check
        with pytest.raises(InvalidArgument, match="divisible by 8, not 50"):
            FastPlaid().build(small, {})
