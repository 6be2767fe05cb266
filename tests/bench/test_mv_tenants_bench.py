"""The multi-tenant documents benchmark (`vecdb.bench.multivector.tenants`) on a small synthetic
tier: owners and grants drawn as asked, both layouts built through the engine, every tenant
measured in both, recall against exact MaxSim over the tenant's own documents, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracles import clustered_documents, clustered_queries

from vecdb.bench.multivector import tenants as bench
from vecdb.bench.multivector.embed import MVData

DIM = 16


def _data(tmp_path: Path) -> MVData:
    docs = clustered_documents(300, DIM, seed=31, tokens=(4, 14))
    queries = clustered_queries(docs, 12, m=4, seed=32)
    return MVData(
        tier="synthetic", tokens=np.concatenate(docs),
        offsets=np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64),
        weights=None, queries=np.concatenate(queries).astype(np.float32),
        q_offsets=np.arange(0, 4 * 13, 4, dtype=np.int64),
        labels=np.zeros(12, np.int64), directory=tmp_path / "tier", meta={"checksum": "t"},
    )  # fmt: skip


def test_assign_draws_owners_by_share_and_grants_to_another_tenant() -> None:
    owner, grants = bench.assign(20_000, (0.5, 0.1), 0.05)
    counts = np.bincount(owner, minlength=3) / 20_000
    np.testing.assert_allclose(counts, [0.5, 0.1, 0.4], atol=0.02)
    assert len(grants) == 1000 and all(owner[d] != g for d, g in grants.items())
    assert set(grants.values()) == {0, 1, 2}
    vis = bench.visible_docs(owner, grants, 1)
    assert set(vis.tolist()) == set(np.flatnonzero(owner == 1).tolist()) | {
        d for d, g in grants.items() if g == 1}  # fmt: skip
    with pytest.raises(ValueError):
        bench.assign(10, (0.7, 0.4), 0.0)


@pytest.mark.usefixtures("pipeline_on_few_tokens")  # (300 small documents)
def test_the_run_measures_every_tenant_in_both_layouts(tmp_path: Path) -> None:
    data = _data(tmp_path)
    r = bench.run(data, (0.5, 0.3, 0.02), 0.1, n_queries=12, rounds=1, work=tmp_path / "w")
    owner, grants = bench.assign(data.n_docs, (0.5, 0.3, 0.02), 0.1)
    assert [t["tenant"] for t in r["tenants"]] == ["t0", "t1", "t2", "t3"]
    for t, row in enumerate(r["tenants"]):
        assert row["docs"] == len(bench.visible_docs(owner, grants, t))
        for layout in ("shared", "private"):
            m = row[layout]
            assert 0.0 <= m["recall"] <= 1.0 and 0 < m["p50_ms"] <= m["p95_ms"]
    small = r["tenants"][2]  # 2% of 300 documents: scored exactly, so recall 1
    assert small["docs"] < 96 and small["shared"]["exact_share"] == 1.0
    assert small["shared"]["recall"] == 1.0 == small["private"]["recall"]
    # optimize trained both layouts: the largest tenant goes through the pipeline
    assert r["tenants"][0]["shared"]["exact_share"] == 0.0
    assert (
        r["private"]["stored_tokens"]
        == sum(
            int(np.diff(data.offsets)[bench.visible_docs(owner, grants, t)].sum()) for t in range(4)
        )
        > r["shared"]["stored_tokens"]
        == len(data.tokens)
    )
    assert r["shared"]["disk_bytes"] > 0 and r["private"]["disk_bytes"] > 0
    assert 0 < r["shared"]["index_bytes"] < r["shared"]["disk_bytes"]
    text = bench.table(r)
    assert text.count("\n| t") == 4 and "Stored tokens: shared" in text


def test_the_synthetic_tier_is_seeded_unit_tokens_of_the_asked_size(tmp_path: Path) -> None:
    a = bench.synthetic("200:10:24", tmp_path, n_queries=7)
    b = bench.synthetic("200:10:24", tmp_path, n_queries=7)
    assert (a.n_docs, a.dim, a.n_queries) == (200, 24, 7)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(np.linalg.norm(a.tokens, axis=1), 1.0, rtol=1e-5)
    sizes = np.diff(a.offsets)
    assert sizes.min() >= 2 and sizes.max() <= 20 and len(a.query(6)) == 8
