"""The multi-tenant benchmark: the Zipf workload's invariants, its exact per-tenant ground
truth against brute force, recall and weights, and a CI-sized run of `vecdb bench --tenants`
writing every size bucket into its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from click.testing import CliRunner
from oracles import assert_topk, distances

from vecdb.bench.datasets import Dataset, load_dataset
from vecdb.bench.tenants import (
    MAX_EXTRA,
    TenantSpec,
    make_workload,
    parse_tenant_spec,
    zipf_sizes,
)
from vecdb.bench.tenants_main import tenant_options
from vecdb.bench.tenants_run import query_weights, summarize, tenant_recall
from vecdb.cli.bench import bench
from vecdb.errors import InvalidArgument

EDGES = (20, 40, 80)  # CI-sized buckets: <= 20, <= 40, <= 80, > 80
SPEC = {"edges": EDGES, "tenants_per_bucket": 2, "queries_per_tenant": 2}


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load_dataset("synthetic:600:8", tmp_path_factory.mktemp("cache"), "l2")


def _spec(**kw: Any) -> TenantSpec:
    return parse_tenant_spec("zipf:10", **{**SPEC, **kw})


def test_spec_parses_and_rejects_bad_input() -> None:
    """zipf:T[:s] parses; other forms, bounds and options are errors naming the option."""
    assert parse_tenant_spec("zipf:1000").exponent == 1.1
    assert parse_tenant_spec("zipf:50:0.8").tenants == 50
    for bad in ("zipf", "uniform:10", "zipf:x", "zipf:0", "zipf:10:9", "zipf:10:1:2"):
        with pytest.raises(InvalidArgument, match="--tenants"):
            parse_tenant_spec(bad)
    with pytest.raises(InvalidArgument, match="locality"):
        parse_tenant_spec("zipf:10", locality="nearby")
    with pytest.raises(InvalidArgument, match="edges"):
        parse_tenant_spec("zipf:10", edges=(100, 10))
    with pytest.raises(InvalidArgument, match="tenants.tiny_tenants"):
        tenant_options("zipf:10", {"tiny_tenants": 3})


def test_zipf_sizes_sum_to_n_fall_with_rank_and_respect_the_cap() -> None:
    """Owned sizes cover every vector once, are >= 1, non-increasing, the largest at most
    max_share of N; s=0 is flat; more tenants than vectors is an error."""
    for n, t, s in ((390_000, 1000, 1.1), (600, 10, 1.1), (1000, 7, 0.0), (50, 50, 2.0)):
        sizes = zipf_sizes(n, t, s, 0.075)
        assert sizes.sum() == n and len(sizes) == t and sizes.min() >= 1
        assert np.all(np.diff(sizes) <= 0)
        assert sizes[0] <= max(0.075, 2 / t, 1 / t) * n + 1
    big = zipf_sizes(390_000, 1000, 1.1, 0.075)
    assert big[0] <= 0.075 * 390_000 and big[-1] < 100  # a heavy head and a tail of small ones
    assert zipf_sizes(1000, 7, 0.0, 1.0).max() - zipf_sizes(1000, 7, 0.0, 1.0).min() <= 1
    with pytest.raises(InvalidArgument, match="at least as many vectors"):
        zipf_sizes(5, 10, 1.1, 0.1)


@pytest.mark.parametrize("locality", ["clustered", "random"])
def test_workload_owners_grants_and_determinism(ds: Dataset, locality: str) -> None:
    """One owner per vector; a tenant's set is what it owns plus its grants; 10% of the
    vectors are shared with 1-9 more tenants, never their owner; the same seed gives the
    same workload and another seed another."""
    wl = make_workload(ds, _spec(locality=locality))
    n, t = len(ds.base), 10
    assert wl.owner.shape == (n,) and wl.owner.min() >= 0 and wl.owner.max() < t
    np.testing.assert_array_equal(np.bincount(wl.owner), zipf_sizes(n, t, 1.1, 0.075))
    extra = np.zeros(n, dtype=np.int64)
    for i in range(t):
        owned = np.flatnonzero(wl.owner == i)
        assert not np.isin(wl.grants[i], owned).any()  # never granted to its owner
        np.testing.assert_array_equal(wl.members[i], np.union1d(owned, wl.grants[i]))
        extra[wl.grants[i]] += 1
    shared = extra > 0
    assert shared.sum() == round(0.1 * n)
    assert extra[shared].min() >= 1 and extra[shared].max() <= MAX_EXTRA
    np.testing.assert_array_equal(wl.sizes, [len(m) for m in wl.members])
    again = make_workload(ds, _spec(locality=locality))
    np.testing.assert_array_equal(again.owner, wl.owner)
    np.testing.assert_array_equal(again.queries, wl.queries)
    assert all(np.array_equal(a, b) for a, b in zip(again.grants, wl.grants, strict=True))
    other = make_workload(ds, _spec(locality=locality, seed=5))
    assert not np.array_equal(other.owner, wl.owner)


def test_clustered_tenants_are_tighter_than_random_ones(ds: Dataset) -> None:
    """Clustered owners are unions of nearest-neighbour balls: most vectors share their
    owner with their nearest neighbour, unlike a random split (about 1 in 10 tenants)."""
    d = distances(ds.base, ds.base, "l2")
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(axis=1)

    def same_owner(locality: str) -> float:
        owner = make_workload(ds, _spec(locality=locality, share=0.0)).owner
        return float((owner == owner[nearest]).mean())

    assert same_owner("clustered") > 0.5 > 0.3 > same_owner("random")


def test_queries_are_sampled_per_bucket_from_held_out_vectors(ds: Dataset) -> None:
    """At most tenants_per_bucket tenants per bucket (every tenant of a sparse one), each
    with queries_per_tenant distinct held-out vectors."""
    wl = make_workload(ds, _spec())
    b = np.searchsorted(np.asarray(EDGES), wl.sizes, side="left")
    sampled = wl.sampled_tenants()
    for i in range(len(EDGES) + 1):
        assert (b[sampled] == i).sum() == min(2, (b == i).sum())
    assert np.bincount(wl.query_tenant)[sampled].tolist() == [2] * len(sampled)
    held_out = {row.tobytes() for row in ds.queries}
    assert all(q.tobytes() in held_out for q in wl.queries)
    for t in sampled.tolist():
        qs = wl.queries[wl.query_tenant == t]
        assert len({q.tobytes() for q in qs}) == len(qs)


def test_ground_truth_is_the_exact_top10_over_the_tenants_vectors(ds: Dataset) -> None:
    """Brute force over exactly the tenant's set (owned + granted), tie-aware, padded when
    the tenant holds fewer than 10 vectors."""
    wl = make_workload(ds, _spec(edges=(5, 40, 80)))
    for i, t in enumerate(wl.query_tenant.tolist()):
        rows = wl.members[t]
        d = distances(ds.base[rows], wl.queries[i], "l2")[0]
        assert_topk(wl.gt_ids[i], wl.gt_dist[i].astype(np.float64), rows.tolist(), d, 10)


def test_recall_never_credits_ids_outside_the_tenant(ds: Dataset) -> None:
    """The ground truth scores 1.0; replacing a hit by another tenant's nearer vector costs
    that hit and counts one leak; padding counts nothing."""
    wl = make_workload(ds, _spec())
    recall, leaks = tenant_recall(ds, wl, wl.gt_ids.copy())
    assert np.all(recall == 1.0) and leaks.sum() == 0
    found = wl.gt_ids.copy()
    t = int(wl.query_tenant[0])
    outsider = int(np.setdiff1d(np.arange(len(ds.base)), wl.members[t])[0])
    found[0, 0] = outsider
    found[1, -1] = -1
    recall, leaks = tenant_recall(ds, wl, found)
    assert leaks.tolist() == [1] + [0] * (len(found) - 1)
    kk = min(10, int(wl.sizes[t]))
    assert recall[0] == pytest.approx((kk - 1) / kk)
    assert recall[1] < 1.0 and np.all(recall[2:] == 1.0)


def test_weights_make_a_sampled_tenant_stand_for_its_bucket(ds: Dataset) -> None:
    """Uniform weights of a bucket's queries sum to its tenant count; size-weighted ones to
    about its vectors; the summary lists every bucket."""
    wl = make_workload(ds, _spec())
    uniform, size = query_weights(wl)
    b_all = np.searchsorted(np.asarray(EDGES), wl.sizes, side="left")
    b = b_all[wl.query_tenant]
    for i in range(len(EDGES) + 1):
        assert uniform[b == i].sum() == pytest.approx((b_all == i).sum())
    assert size.sum() > 0
    s = summarize(wl, np.ones(len(wl.queries)), np.full(len(wl.queries), 2.0))
    assert [x["bucket"] for x in s["buckets"]] == ["<= 20", "<= 40", "<= 80", "> 80"]
    assert s["uniform"]["recall"] == 1.0 and s["size_weighted"]["p50_ms"] == 2.0


SYSTEMS = ("vecdb-tenants,vecdb-spann-per-tenant,vecdb-spann-filter,hnswlib-per-tenant,"
           "hnswlib-filter,faiss-ivf-filter,exact")  # fmt: skip
OPS = {"single_ops": 10, "batch_ids": 20, "tiny": 10, "memory": False}


def test_tenant_bench_runs_every_system_and_reports_every_bucket(tmp_path: Path) -> None:
    """A CI-sized `vecdb bench --tenants zipf:10` with every peer and vecdb baseline: no
    leaks, exact search at recall 1, every bucket in the JSONL, the summary and RESULTS.md."""
    config = tmp_path / "config.json"
    # Edges that put tenants in every bucket of this workload (sizes 44 to 155).
    config.write_text(json.dumps({"tenants": {**SPEC, **OPS, "edges": [50, 70, 120], "seed": 2},
                                  "systems": {"faiss-ivf-filter": {"build": {"nlist": 8}}}}))  # fmt: skip
    args = ["--dataset", "synthetic:600:8", "--metric", "l2", "--tenants", "zipf:10",
            "--systems", SYSTEMS, "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "c"), "--threads", "2", "--config", str(config), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    label = "synthetic-600-8-tenants-10-clustered"
    rows = [json.loads(x) for x in (tmp_path / "out" / f"results-{label}.jsonl").open()]
    assert {r["system"] for r in rows} == set(SYSTEMS.split(","))
    buckets = ["<= 50", "<= 70", "<= 120", "> 120"]
    for r in rows:
        assert "error" not in r and r["leaks"] == 0, r
        assert [b["bucket"] for b in r["buckets"]] == buckets
        assert all(b["queries"] > 0 and 0.0 <= b["recall"] <= 1.0 for b in r["buckets"])
        if r["system"].startswith("vecdb-"):  # I/O counted per bucket, from stats()
            io = [(b["bucket"], b["postings"], b["bytes"]) for b in r["buckets"]]
            if r["system"] == "vecdb-tenants":  # 600 x 8: every tenant is read from its copy
                assert all(p == 0 and n > 0 for _, p, n in io), io
            elif r["system"] == "vecdb-spann-per-tenant":  # a SPANN walk reads postings
                assert all(p >= 1 and n > 0 for _, p, n in io), io
            else:  # vecdb-spann-filter: a tenant is few points here: an exact scan of them
                assert all(p == 0 for _, p, _ in io), io
        if r["system"] in ("exact", "vecdb-tenants"):  # vecdb: small tenants are exact
            assert r["uniform"]["recall"] == 1.0
    ops = next(r["ops"] for r in rows if r["system"] == "vecdb-tenants" and "ops" in r)
    assert ops["grant_single_ms"]["n"] == 10 and ops["revoke_single_ms"]["p50_ms"] > 0
    assert ops["drop"]["final_state"] == "gone" and ops["drop"]["foreground_during"]["n"] > 0
    summary = json.loads((tmp_path / "out" / f"summary-{label}.json").read_text())
    assert [b["bucket"] for b in summary["0.95"]["exact"]["buckets"]] == buckets
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "--tenants zipf:10" in text and "drop_tenant of a tenant of" in text
    for name in buckets:
        assert f"| {name} |" in text
    png = tmp_path / "out" / "plots" / f"{label}-latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_memory_pass_compares_tenants_with_a_shared_index(ds: Dataset, tmp_path: Path) -> None:
    """vecdb-tenants' memory rows: fresh processes report the growth with tenants, of one
    shared collection without them, the ratio, and the marginal bytes of tiny tenants."""
    from vecdb.bench.run import RunConfig
    from vecdb.bench.tenants_ops import measure_ops
    from vecdb.bench.tenants_run import TenantOptions
    from vecdb.bench.tenants_vecdb import VecdbTenants

    wl = make_workload(ds, _spec())
    system = VecdbTenants("l2", 8, {})
    threads = numba.get_num_threads()  # the system sets its own (run_systems restores them)
    try:
        system.build(ds.base, wl, 1, tmp_path)
        system.close()
        opts = TenantOptions(ops=False, memory=True, extra={"tiny": 5})
        cfg = RunConfig(systems=["vecdb-tenants"], out_dir=tmp_path, threads=1)
        mem = measure_ops(system, ds, wl, cfg, opts, tmp_path, lambda _m: None)["memory"]
    finally:
        numba.set_num_threads(threads)
    for key in ("with_tenants", "shared_no_tenants", "with_tiny"):
        assert mem[key]["rss_anon_mib"] >= 0 and mem[key]["rss_anon_baseline_mib"] > 0
    assert mem["ratio"] > 0 and mem["tiny_tenants"] == 5
    assert "marginal_bytes_per_tiny_idle" in mem and "marginal_bytes_per_tiny_active" in mem
