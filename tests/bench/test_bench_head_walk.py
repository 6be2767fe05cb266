"""`vecdb.bench.head_walk`: the exact heads it scores against, and a small run over every
form of the head vectors on a synthetic set (recall near the exact heads, int8 the
smallest graph, a time per round for each form)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from vecdb.bench import head_walk as hw


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_heads_follow_the_metric(metric: str) -> None:
    rng = np.random.default_rng(1)
    heads = rng.normal(size=(50, 6)).astype(np.float32)
    q = rng.normal(size=(4, 6)).astype(np.float32)
    got = hw.exact_heads(heads, q, metric, 5)
    if metric == "l2":
        want = np.argsort(((q[:, None] - heads[None]) ** 2).sum(-1), 1)[:, :5]
    else:
        want = np.argsort(-(q @ heads.T), 1)[:, :5]
    np.testing.assert_array_equal(got, want)


def test_every_form_holds_the_same_graph() -> None:
    """The forms are copies of one hnswlib graph (built once, even on two threads, whose
    builds differ from run to run): the same links and entry, the vectors in each form."""
    rng = np.random.default_rng(2)
    heads = rng.normal(size=(800, 24)).astype(np.float32)
    gs = hw.graphs(heads, "l2", ["int8", "float16", "float32"], 2)
    ref = gs["float32"]
    for g in gs.values():
        np.testing.assert_array_equal(g.links[: g.n], ref.links[: ref.n])
        assert g.entry == ref.entry and g.maxlevel == ref.maxlevel
    assert [g.vecs.dtype for g in gs.values()] == [np.int8, np.uint16, np.float32]


def test_a_small_run_measures_every_form(tmp_path: Path) -> None:
    args = argparse.Namespace(
        dataset="synthetic:3000:32:5", heads=600, k=10, forms="int8,float16,float32",
        queries=40, rounds=2, flush_mib=1, threads=1, seed=0,
    )  # fmt: skip
    out = hw.run(args)
    forms = out["forms"]
    assert list(forms) == ["int8", "float16", "float32"]
    for r in forms.values():
        assert r["head_recall"] >= 0.85
        assert len(r["warm_us"]) == 2 and len(r["cold_us"]) == 2
        assert all(t > 0 for t in r["warm_us"] + r["cold_us"])
    b = {f: r["graph_bytes"] for f, r in forms.items()}
    assert b["int8"] < b["float16"] < b["float32"]
    assert b["float16"] - b["int8"] == 600 * (32 * 2 - 32 - 4)  # 1 byte a component + a scale
    text = hw.table(out)
    assert "| int8 |" in text and "| float32 |" in text
    (tmp_path / "o.json").write_text(json.dumps(out))  # plain JSON


def test_an_unknown_form_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        hw.main(["--forms", "int4"])
    assert "unknown form(s) ['int4']" in capsys.readouterr().err
