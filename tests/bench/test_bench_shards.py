"""The scale-out benchmark: its options and their errors, the exact ground truth on a subset,
the report's arithmetic (fan-out slope, targets), a real loopback etcd, and a CI-sized
`vecdb bench --shards 1,2` through a real router writing its RESULTS.md section."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from vecdb.bench import shards_cluster
from vecdb.bench.shards_cluster import EtcdProcess
from vecdb.bench.shards_main import ShardOptions, parse_counts
from vecdb.bench.shards_report import fanout_per_shard, section_text, targets
from vecdb.bench.shards_run import (
    DIRECT,
    NODE,
    NOOP,
    ROUTER,
    SEARCH,
    SEARCH_EQ,
    TENANT,
    TENANT_ONE,
    exact_topk,
    recall,
)
from vecdb.cli.bench import bench
from vecdb.errors import InvalidArgument


def test_shard_counts_parse_and_bad_ones_name_the_option() -> None:
    """--shards takes distinct counts in [1, 16]; anything else is InvalidArgument."""
    assert parse_counts("1,2,3") == (1, 2, 3)
    assert parse_counts("3, 3,1") == (3, 1)
    for bad in ("", "0", "1,x", "17", "-1"):
        with pytest.raises(InvalidArgument, match="--shards") as err:
            parse_counts(bad)
        assert err.value.field == "shards"


def test_options_reject_unknown_keys_and_bounds() -> None:
    """The config's "shards" object: unknown keys and out-of-range values are named."""
    assert ShardOptions.from_config({"rounds": 5}, {"rounds": 2}).rounds == 2  # CLI wins
    with pytest.raises(InvalidArgument, match="shards.nope"):
        ShardOptions.from_config({"nope": 1}, {})
    with pytest.raises(InvalidArgument, match="shards.batch") as err:
        ShardOptions.from_config({"batch": 0}, {})
    assert err.value.field == "shards.batch"
    with pytest.raises(InvalidArgument, match="shards.base_limit"):
        ShardOptions.from_config({"base_limit": -1}, {})
    with pytest.raises(InvalidArgument, match="shards.tenants"):
        ShardOptions.from_config({"tenants": -1}, {})


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_topk_matches_brute_force(metric: str) -> None:
    """exact_topk's ids are the brute-force nearest, nearest first; recall of itself is 1."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((700, 9)).astype(np.float32)
    queries = rng.standard_normal((300, 9)).astype(np.float32)
    if metric == "cosine":
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        dist = -(queries @ base.T)
    else:
        dist = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    got = exact_topk(base, queries, 5, metric)
    want = np.argsort(dist, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(
        np.take_along_axis(dist, got, 1), np.take_along_axis(dist, want, 1), rtol=1e-5
    )
    assert recall(got, want) == pytest.approx(1.0)
    assert recall(np.full_like(got, -1), want) == 0.0


def _row(n: int, target: str, workload: str, p50: float, **kw: Any) -> dict[str, Any]:
    return {"shards": n, "target": target, "workload": workload, "p50_ms": p50,
            "p99_ms": 2 * p50, **kw}  # fmt: skip


def test_report_computes_the_fanout_slope_and_checks_the_targets() -> None:
    """Extra p50 of the no-op at 1, 2, 3 shards of 0.5, 1.0, 1.5 ms is 0.5 ms per shard;
    a 3-shard search adding 4 ms misses the 3 ms target; tenant ratio 1.1 meets it."""
    rows = []
    for n, extra in ((1, 0.5), (2, 1.0), (3, 1.5)):
        rows += [_row(n, NODE, NOOP, 0.2), _row(n, ROUTER, NOOP, 0.2 + extra)]
    rows += [_row(3, NODE, SEARCH, 1.0, qps=900.0, recall=0.95),
             _row(3, ROUTER, SEARCH, 5.0, qps=700.0, recall=0.96),
             _row(3, NODE, SEARCH_EQ, 1.0, qps=900.0, recall=0.95),
             _row(3, ROUTER, SEARCH_EQ, 2.5, qps=950.0, recall=0.951, shard_max_postings=16),
             _row(3, NODE, TENANT, 1.0), _row(3, ROUTER, TENANT, 1.1, shards_touched=1)]  # fmt: skip
    assert fanout_per_shard(rows) == pytest.approx(0.5)
    lines = "\n".join(targets(rows))
    assert "router adds +1.50 ms p50 (target <= 3 ms: met)" in lines
    assert "router adds +4.00 ms p50 (target <= 3 ms: NOT met)" in lines
    assert (
        "ANN search, shards at the node's recall: router adds +1.50 ms p50 (target <= 3 ms: met)"
        in lines
    )
    assert "router / node p50 = 1.10 (target: the same as one node, read as <= 1.2: met)" in lines
    assert "of its +0.10 ms, the router hop alone (no-op, fewest shards) is +0.50 ms." in lines
    text = section_text("shards-x", rows, {"command": "vecdb bench --shards 1,2,3", "seconds": 1})
    assert "| 3 | ANN search | 1.00 / 2.00 | 5.00 / 10.00 | +4.00 | 5.00 | 900 / 700 |" in text
    assert "| 3 | ANN search, shards at the node's recall (max_postings 16) | 1.00 / 2.00 |" in text
    assert "| 3 | tenant-scoped search |" in text and text.rstrip().endswith("+0.50 ms.")


def test_report_shows_the_direct_path_beside_the_router() -> None:
    """A DIRECT tenant row adds the three-way table and its own target line; the router's
    line stays."""
    routes = {"direct": 300, "lookups": 24, "stale": 0, "unreachable": 0}
    rows = [_row(2, NODE, TENANT, 1.0), _row(2, ROUTER, TENANT, 2.0, shards_touched=1),
            _row(2, DIRECT, TENANT, 1.1, routes=routes), _row(2, NODE, TENANT_ONE, 1.0),
            _row(2, ROUTER, TENANT_ONE, 2.0), _row(2, DIRECT, TENANT_ONE, 0.9, routes=routes)]  # fmt: skip
    lines = "\n".join(targets(rows))
    assert (
        "router / node p50 = 2.00 (target: the same as one node, read as <= 1.2: NOT met)" in lines
    )
    assert "(`direct_routing=True`), 2 shard(s): direct / node p50 = 1.10 (met; +0.10 ms)." in lines
    text = section_text("shards-x", rows, {"command": "vecdb bench --shards 2", "seconds": 1})
    assert (
        "| 2 | tenant-scoped search | 1.00 / 2.00 | 2.00 / 4.00 | 1.10 / 2.20 | 2.00 | 1.10 "
        "| 300 / 24 / 0 / 0 |" in text
    )
    assert "2 shard(s), shard 0's tenants only: direct / node p50 = 0.90 (met; -0.10 ms)." in lines
    assert (
        "| 2 | tenant-scoped search, shard 0's tenants only | 1.00 / 2.00 | 2.00 / 4.00 | 0.90 /"
        in text
    )


def test_etcd_process_serves_on_loopback_and_stops(tmp_path: Path) -> None:
    """The bench's etcd answers /health on its own free port and is gone after stop()."""
    etcd = EtcdProcess(tmp_path)
    try:
        with urllib.request.urlopen(f"http://{etcd.endpoint}/health", timeout=5) as resp:
            assert json.loads(resp.read())["health"] == "true"
    finally:
        etcd.stop()
    assert etcd.proc.poll() is not None


def test_bench_shards_runs_through_a_real_router(tmp_path: Path) -> None:
    """A CI-sized `vecdb bench --shards 1,2`: every (count, workload) has both targets, the
    router reaches the node's recall (with the shards' max_postings lowered to match, one of
    the candidates), a tenant's search touches one shard, and the RESULTS.md section names
    the command."""
    config = tmp_path / "shards.json"
    config.write_text(json.dumps({"shards": {
        "base_limit": 1200, "queries": 40, "latency_queries": 15, "rounds": 1, "batch": 20,
        "index": "spann", "tenants": 4, "tenant_vectors": 100, "upsert_batch": 500,
    }}))  # fmt: skip
    md = tmp_path / "RESULTS.md"
    md.write_text("# vecdb benchmark results\n\nkept\n")
    args = ["--dataset", "synthetic:1500:12", "--shards", "1,2", "--config", str(config),
            "--out", str(tmp_path / "out"), "--results-md", str(md),
            "--cache-dir", str(tmp_path / "cache"), "--metric", "l2"]  # fmt: skip
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [json.loads(line) for line in (tmp_path / "out").glob("results-*.jsonl")
            .__next__().read_text().splitlines()]  # fmt: skip
    keys = {(r["shards"], r["target"], r["workload"]) for r in rows}
    assert keys == {
        (n, t, w) for n in (1, 2) for t in (NODE, ROUTER) for w in (SEARCH, SEARCH_EQ, NOOP, TENANT)
    } | {(n, DIRECT, TENANT) for n in (1, 2)} | {
        (2, t, TENANT_ONE)
        for t in (NODE, ROUTER, DIRECT)  # shard 0's tenants, 2 shards only
    }
    by = {(r["shards"], r["target"], r["workload"]): r for r in rows}
    for n in (1, 2):
        routes = by[(n, DIRECT, TENANT)]["routes"]  # every tenant went direct, none refused
        assert routes["lookups"] == 4 and routes["direct"] > 0
        assert by[(n, DIRECT, TENANT)]["p50_ms"] > 0
        assert routes["stale"] == routes["unreachable"] == 0
        node = by[(n, NODE, SEARCH)]["recall"]
        assert node > 0.9
        assert by[(n, ROUTER, SEARCH)]["recall"] >= node - 0.05
        assert by[(n, ROUTER, TENANT)]["shards_touched"] == 1
        assert by[(n, ROUTER, SEARCH_EQ)]["shard_max_postings"] in (12, 16, 24, 32, 36, 48)
        assert by[(n, ROUTER, SEARCH_EQ)]["recall"] >= node
        assert all(by[(n, t, w)]["p50_ms"] > 0 for t in (NODE, ROUTER) for w in (SEARCH, NOOP))
    text = md.read_text()
    assert text.startswith("# vecdb benchmark results\n\nkept\n")
    assert "<!-- vecdb-bench:shards-synthetic-1500-12:begin -->" in text
    assert "--shards 1,2" in text and "| 2 | no-op fan-out (Count, empty) |" in text


def test_etcd_process_moves_on_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port picked is taken before etcd binds it, by another etcd (which answers /health
    under another member name) or by any socket (etcd exits): the start takes fresh ports and
    the endpoint reaches this etcd."""
    real = shards_cluster.free_port
    (tmp_path / "a").mkdir()
    first = EtcdProcess(tmp_path / "a")
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            for taken in (first.port, holder.getsockname()[1]):
                picks = iter([taken])  # the first client port; the rest real
                monkeypatch.setattr(shards_cluster, "free_port",
                                    lambda picks=picks: next(picks, None) or real())  # fmt: skip
                (tmp_path / f"b{taken}").mkdir()
                second = EtcdProcess(tmp_path / f"b{taken}")
                try:
                    assert second.port != taken and second.proc.poll() is None
                    req = urllib.request.Request(f"http://{second.endpoint}/v3/cluster/member/list",
                                                 data=b"{}", method="POST")  # fmt: skip
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        members = json.loads(resp.read())["members"]
                    assert [m["name"] for m in members] == [second.name] != [first.name]
                finally:
                    second.stop()
    finally:
        first.stop()
