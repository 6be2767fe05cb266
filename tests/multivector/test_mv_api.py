"""Multivector collections through the SDK: embedded, remote and async remote give the same
answers, which match exact MaxSim before training and reach the recall bar after it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracles import clustered_documents, clustered_queries, maxsim_recall, maxsim_topk

import vecdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_modes import Trio  # noqa: E402

DIM = 16
DOCS = clustered_documents(300, DIM, seed=5, tokens=(4, 20))
QUERIES = clustered_queries(DOCS, 8, m=6, seed=6)
PARAMS = {"K": 256, "min_train_tokens": 1_000_000, "rerank_tier": "int8"}  # trained by optimize


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    t = Trio(tmp_path_factory.mktemp("mv"))
    yield t
    t.close()


def _scenario(c: Any) -> dict[str, Any]:
    """Create, upsert with weights and payloads, search (single, batch, filtered), get,
    delete, count, scroll, optimize (trains the codebook), search again."""
    out: dict[str, Any] = {}
    info = c.create_collection("pages", DIM, "cosine", kind="multivector", index_params=PARAMS)
    out["info"] = (info.kind.value, info.index.value, info.metric.value)
    ids = list(range(len(DOCS)))
    weights = [None if i % 2 else np.linspace(0, 1, len(d)) for i, d in enumerate(DOCS)]
    pays = [{"group": i % 3} for i in ids]
    out["upserted"] = c.upsert_documents("pages", ids, DOCS, weights=weights, payloads=pays)
    one = c.search_documents("pages", QUERIES[0], k=5, with_payload=True)
    out["one"] = (one.ids.tolist(), one.distances.tolist(), one.payloads)
    batch = c.search_documents("pages", QUERIES, k=10)
    out["batch"] = (batch.ids.tolist(), np.round(batch.distances, 5).tolist())
    out["exact_stats"] = batch.stats
    flt = c.search_documents("pages", QUERIES, k=10, filter={"group": 1})
    out["filtered"] = flt.ids.tolist()
    got = c.get_documents("pages", [4, 999, 3], with_payload=True)
    out["get"] = [(d.id, d.tokens.tobytes(), None if d.weights is None else d.weights.tolist(),
                   d.payload) for d in got]  # fmt: skip
    out["get_no_tokens"] = [
        (d.id, d.tokens) for d in c.get_documents("pages", [4], with_tokens=False)
    ]
    out["deleted"] = c.delete("pages", [7, 8])
    out["count"] = (c.count("pages"), c.count("pages", filter={"group": 2}))
    recs, nxt = c.scroll("pages", limit=3)
    out["scroll"] = ([(r.id, r.payload) for r in recs], nxt)
    c.optimize("pages")
    st = c.stats("pages")["index"]
    out["trained"] = (st["trained"], st["K"], st["bytes_per_token"]["tier"])
    after = c.search_documents("pages", QUERIES, k=10, params={"ndocs": 1024, "nprobe": 2})
    out["after"] = after.ids.tolist()
    out["after_stats"] = {k: after.stats[k] for k in ("candidates", "docs_scored", "exact")}
    plain = c.search_documents("pages", QUERIES, k=10, params={"ndocs": 1024, "refine": 0})
    out["refined"] = (after.stats["docs_refined"], plain.stats["docs_refined"])
    c.drop_collection("pages")
    return out


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_documents_are_identical_in_every_mode_and_match_exact_maxsim(trio: Trio) -> None:
    """The three modes answer every document call identically; untrained search is exact
    MaxSim (ids and scores), trained search keeps recall@10 >= 0.9 vs exact."""
    res = trio.run(_scenario)
    local = res["local"]
    for mode in ("remote", "aio"):
        for key, value in local.items():
            assert res[mode][key] == value, (mode, key)
    assert local["info"] == ("multivector", "multivector", "cosine")
    ids, dists = local["one"][0], local["one"][1]
    want, scores = maxsim_topk(QUERIES[0] / np.linalg.norm(QUERIES[0], axis=1, keepdims=True),
                               DOCS, 5)  # fmt: skip
    np.testing.assert_allclose(-np.array(dists[0]), scores, rtol=1e-4, atol=1e-4)
    assert ids[0] == want.tolist() or set(ids[0]) == set(want.tolist())
    assert all(
        p is not None and p["group"] == i % 3
        for i, p in zip(ids[0], local["one"][2][0], strict=True)
    )
    assert local["exact_stats"]["exact"] == 1.0
    assert all(i % 3 == 1 for row in local["filtered"] for i in row if i >= 0)
    assert all(any(i >= 0 for i in row) for row in local["filtered"])  # not empty
    (i4, t4, w4, p4), (i3, t3, w3, _) = local["get"]
    assert (i4, i3) == (4, 3) and t4 == DOCS[4].tobytes() and t3 == DOCS[3].tobytes()
    assert w3 is None and np.allclose(w4, np.linspace(0, 1, len(DOCS[4])))
    assert p4 == {"group": 1} and local["get_no_tokens"] == [(4, None)]
    assert local["deleted"] == 2 and local["count"][0] == len(DOCS) - 2
    assert local["trained"] == (True, 256, float(DIM))
    assert local["after_stats"]["exact"] == 0.0
    assert local["refined"] == (16.0 * len(QUERIES), 0.0)  # by default 16 a query at k = 10
    alive = [
        d if i not in (7, 8) else np.zeros((1, DIM), np.float32) - 9 for i, d in enumerate(DOCS)
    ]
    rec = np.mean(
        [maxsim_recall(row, q, alive, 10) for row, q in zip(local["after"], QUERIES, strict=True)]
    )
    assert rec >= 0.9


def _empty(c: Any) -> dict[str, Any]:
    """A document collection that never held a document: searched, counted, scrolled."""
    c.create_collection("blank", DIM, "ip", kind="multivector")
    res = c.search_documents("blank", [QUERIES[0], QUERIES[1]], k=3)
    return {
        "ids": np.asarray(res.ids).tolist(),
        "dist": np.isinf(np.asarray(res.distances)).all(),
        "count": c.count("blank"),
    }


def test_a_document_collection_that_never_held_one_answers_with_padding(trio: Trio) -> None:
    """Searching it gave IndexError (INTERNAL over gRPC) before; now k padding rows (-1,
    +inf), the same in every mode."""
    res = trio.run(_empty)
    for mode in ("local", "remote", "aio"):
        assert res[mode] == {"ids": [[-1] * 3] * 2, "dist": True, "count": 0}, mode


def test_dense_calls_on_a_document_collection_are_refused(tmp_path: Path) -> None:
    """upsert / search / get with vectors on documents, and document calls on a dense
    collection, are InvalidArgument WRONG_KIND naming the call to use."""
    with vecdb.connect(str(tmp_path / "db")) as c:
        c.create_collection("m", DIM, "ip", kind="multivector")
        c.create_collection("d", DIM, "ip", index="flat")
        for call in (
            lambda: c.upsert("m", [1], np.ones((1, DIM))),
            lambda: c.search("m", np.ones(DIM)),
            lambda: c.get("m", [1]),
            lambda: c.upsert_documents("d", [1], [np.ones((2, DIM))]),
            lambda: c.search_documents("d", np.ones((2, DIM))),
        ):
            with pytest.raises(vecdb.InvalidArgument) as e:
                call()
            assert e.value.reason == "WRONG_KIND" and e.value.field == "collection"
        assert c.count("m") == 0 and c.count("d") == 0


def test_documents_survive_reopen_before_and_after_training(tmp_path: Path) -> None:
    """Documents written before and after a training come back after a reopen, with the
    same search answers (op-log replay past the index checkpoint)."""
    path = str(tmp_path / "db")
    with vecdb.connect(path) as c:
        c.create_collection("p", DIM, "cosine", kind="multivector", index_params=PARAMS)
        c.upsert_documents("p", list(range(200)), DOCS[:200])
        c.optimize("p")
        c.upsert_documents("p", list(range(200, 300)), DOCS[200:])
        c.delete("p", [5])
        before = c.search_documents("p", QUERIES, k=10)
    with vecdb.connect(path) as c:
        assert c.count("p") == len(DOCS) - 1
        after = c.search_documents("p", QUERIES, k=10)
        assert c.stats("p")["index"]["trained"]
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.distances, before.distances, rtol=1e-5)
