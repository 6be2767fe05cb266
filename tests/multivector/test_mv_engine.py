"""The document engine: background training by the worker, writes during a training, op-log
replay after an unclean stop, unreadable index files rebuilt from RocksDB."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from oracles import clustered_documents, clustered_queries, maxsim_recall

from vecdb.engine import Database
from vecdb.engine.doc_jobs import first_train_bytes
from vecdb.engine.settings import EngineSettings
from vecdb.index.multivector import MultiVectorIndex
from vecdb.index.multivector.params import MVSearchParams

DIM = 16
DOCS = clustered_documents(400, DIM, seed=11, tokens=(4, 16))
QUERIES = clustered_queries(DOCS, 6, m=5, seed=12)
FAST = {"idle_seconds": 0.05}


def _wait(pred, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_stats_count_the_document_searches_made(tmp_path: Path) -> None:
    """The collection's cumulative search statistics count document searches as they count
    dense ones: queries, bytes read (and per query), documents and tokens scored, documents
    rescored exactly: the sums of what each call reported."""
    with Database(tmp_path / "db", settings=FAST) as db:
        db.create_collection("p", DIM, "cosine", kind="multivector")
        db.upsert_documents("p", list(range(100)), DOCS[:100])
        assert db.stats("p")["index"]["queries"] == 0
        calls = [db.search_documents("p", q, k=5).stats for q in QUERIES[:3]]
        calls.append(db.search_documents("p", QUERIES[3:5], k=5).stats)
        got = db.stats("p")["index"]
        assert got["queries"] == 5 == sum(c["queries"] for c in calls)
        assert got["bytes_read"] == sum(c["bytes_read"] for c in calls) > 0
        assert got["bytes_read_per_query"] == got["bytes_read"] / 5
        assert got["docs_scored"] == sum(c["docs_scored"] for c in calls)
        assert got["tokens_scored"] == sum(c["tokens_scored"] for c in calls)
        assert got["docs_refined"] == 0  # exact searches (untrained) rescore nothing
        db.optimize("p")  # trained: each search rescores the best of its rerank
        more = db.search_documents("p", QUERIES[:4], k=5).stats
        assert more["docs_refined"] == 4 * 16
        assert db.stats("p")["index"]["docs_refined"] == more["docs_refined"]


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_worker_trains_once_enough_tokens_and_checkpoints(tmp_path: Path) -> None:
    """Below min_train_tokens searches stay exact; past it the worker trains on its own and
    checkpoints (the op log is truncated)."""
    with Database(tmp_path / "db", settings=FAST) as db:
        db.create_collection("p", DIM, "cosine", kind="multivector",
                             index_params={"min_train_tokens": 2000, "K": 64})  # fmt: skip
        db.upsert_documents("p", list(range(50)), DOCS[:50])
        time.sleep(0.5)
        assert not db.stats("p")["index"]["trained"]
        assert db.search_documents("p", QUERIES, k=5).stats["exact"] == 1.0
        db.upsert_documents("p", list(range(50, 400)), DOCS[50:])
        _wait(lambda: db.stats("p")["index"]["trained"])
        _wait(lambda: db.stats("p")["applied_seq"] == db.seq.value)
        res = db.search_documents("p", QUERIES, k=10, params={"ndocs": 1024, "rerank": "exact"})
        assert res.stats["exact"] == 0.0
        rec = np.mean(
            [maxsim_recall(r, q, DOCS, 10) for r, q in zip(res.ids, QUERIES, strict=True)]
        )
        assert rec >= 0.9


@pytest.mark.parametrize(
    ("settings", "trains"),
    [
        ({"idle_seconds": 3600, "bulk_build_bytes": 1 << 30}, False),  # a load streaming in
        ({"idle_seconds": 3600, "bulk_build_bytes": 64 << 10}, True),  # ... past the bulk size
        ({"idle_seconds": 0.3, "bulk_build_bytes": 1 << 30}, True),  # ... that paused
    ],
)
@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_the_first_training_waits_for_a_pause_or_the_bulk_size(
    tmp_path: Path, settings: dict, trains: bool
) -> None:
    """Past min_train_tokens the worker trains the first codebook only once the writes pause
    for idle_seconds or the documents hold bulk_build_bytes of float32 tokens (~250 KB here),
    as a dense collection's first build; until then searches stay exact. optimize() trains
    at once either way."""
    with Database(tmp_path / "db", settings=settings) as db:
        db.create_collection("p", DIM, "cosine", kind="multivector",
                             index_params={"min_train_tokens": 2000, "K": 64})  # fmt: skip
        db.upsert_documents("p", list(range(400)), DOCS)
        if trains:
            _wait(lambda: db.stats("p")["index"]["trained"])
        else:
            time.sleep(1.5)
            assert not db.stats("p")["index"]["trained"]
            assert db.get_collection("p").index_state == "idle"  # a training waits
            assert db.search_documents("p", QUERIES, k=5).stats["exact"] == 1.0
            db.optimize("p")
            assert db.stats("p")["index"]["trained"]
        assert db.search_documents("p", QUERIES, k=5).stats["exact"] == 0.0
        db.optimize("p")  # (the checkpoint after a training of its own)
        assert db.get_collection("p").index_state == "ready"


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_a_streaming_load_is_first_trained_at_the_spilled_build_size(tmp_path: Path) -> None:
    """With the auto bulk_build_bytes a document load still streaming in is first trained once
    its tokens reach rebuild_max_bytes (2 GiB by default, where a spilling dense buffer's first
    build starts), not half the buffer cap (512 MiB): its tokens are on file from the start.
    The collection's size in bytes is stood in for; everything else is the real worker."""
    gib = 1 << 30
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as db:
        db.create_collection("p", DIM, "cosine", kind="multivector",
                             index_params={"min_train_tokens": 2000, "K": 64})  # fmt: skip
        mv = db.collections["p"].core.index.mv
        mv.live_bytes = lambda: gib  # past first_build_bytes, short of rebuild_max_bytes
        db.upsert_documents("p", list(range(400)), DOCS)
        time.sleep(1.5)
        assert not db.stats("p")["index"]["trained"]
        assert db.search_documents("p", QUERIES, k=5).stats["exact"] == 1.0
        mv.live_bytes = lambda: 2 * gib
        db.upsert_documents("p", [400], DOCS[:1])  # the worker looks again after a write
        _wait(lambda: db.stats("p")["index"]["trained"])
        assert db.search_documents("p", QUERIES, k=5).stats["exact"] == 0.0


def test_first_train_bytes_follows_the_spilled_build() -> None:
    """The auto setting waits for rebuild_max_bytes; an explicit bulk_build_bytes, or a
    rebuild limit at or below half the buffer cap, keeps the first build's size."""
    parse = EngineSettings.parse
    assert first_train_bytes(parse({})) == 2 << 30
    assert first_train_bytes(parse({"rebuild_max_bytes": 3 << 30})) == 3 << 30
    assert first_train_bytes(parse({"bulk_build_bytes": 64 << 20})) == 64 << 20
    assert first_train_bytes(parse({"rebuild_max_bytes": 256 << 20})) == 512 << 20


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_documents_added_during_a_training_are_encoded_with_the_new_codebook() -> None:
    """A training runs outside the mutation lock; documents added and removed meanwhile are
    in the swapped-in index (encoded) and removals hold."""
    idx = MultiVectorIndex(DIM, params={"K": 64, "rerank_tier": "int8"})
    tokens = np.concatenate(DOCS[:300])
    offs = np.concatenate([[0], np.cumsum([len(d) for d in DOCS[:300]])])
    idx.add(np.arange(300), tokens, offs)
    started = threading.Event()
    orig = idx._pooled

    def slow_pooled(*args):  # type: ignore[no-untyped-def]
        started.set()
        time.sleep(0.3)
        return orig(*args)

    idx._pooled = slow_pooled  # type: ignore[method-assign]
    t = threading.Thread(target=idx.train)
    t.start()
    assert started.wait(10)
    late = np.concatenate(DOCS[300:])
    late_off = np.concatenate([[0], np.cumsum([len(d) for d in DOCS[300:]])])
    idx._pooled = orig  # type: ignore[method-assign]
    idx.add(np.arange(300, 400), late, late_off)
    idx.remove([0, 350])
    t.join()
    st = idx.stats()
    assert st["trained"] and st["docs"] == 398 and st["encoded_tokens"] == st["tokens"]
    ids, _, stats = idx.search(QUERIES, 10, {"ndocs": 2048, "nprobe": 8})
    assert stats["exact"] == 0.0 and not np.isin(ids, [0, 350]).any()
    alive = [d if i not in (0, 350) else -np.ones((1, DIM), np.float32) for i, d in enumerate(DOCS)]
    rec = np.mean([maxsim_recall(r, q, alive, 10) for r, q in zip(ids, QUERIES, strict=True)])
    assert rec >= 0.9


def test_unclean_stop_replays_the_op_log(tmp_path: Path) -> None:
    """Writes after the last checkpoint (worker stopped, index files not closed) come back
    from the op log on open; unreadable index files are rebuilt from the stored documents."""
    path = tmp_path / "db"
    db = Database(path, settings={"idle_seconds": 3600})
    db.create_collection("p", DIM, "ip", kind="multivector", index_params={"K": 64})
    db.upsert_documents("p", list(range(200)), DOCS[:200])
    db.optimize("p")  # trained + checkpointed
    db.upsert_documents("p", list(range(200, 400)), DOCS[200:])
    db.delete("p", [1, 2])
    want = db.search_documents("p", QUERIES, k=10, params={"rerank": "exact", "ndocs": 4096})
    db.worker.stop()
    db.kv.close()  # no checkpoint of the index: the last writes are only in RocksDB
    db._lock.release()
    db2 = Database(path)
    assert db2.count("p") == 398
    got = db2.search_documents("p", QUERIES, k=10, params={"rerank": "exact", "ndocs": 4096})
    np.testing.assert_array_equal(got.ids, want.ids)
    coll_dir = db2.collections["p"].core.directory
    db2.close()
    for f in coll_dir.glob("state.*.bin"):
        f.write_bytes(b"garbage")
    with Database(path) as db3:
        assert db3.count("p") == 398 and len(db3.collections["p"].core.index) == 398
        again = db3.search_documents("p", QUERIES, k=10)
        assert again.stats["exact"] == 1.0  # rebuilt untrained: exact until trained
        rows = [set(r.tolist()) for r in again.ids]
        assert all(len(r & set(w.tolist())) >= 8 for r, w in zip(rows, want.ids, strict=True))


def test_search_parameters_are_parsed_once_and_the_metric_reaches_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """search_documents checks its params before any work and hands the parsed object to
    the index (one parse per call); the collection's metric is the index's."""
    calls: list[object] = []
    real = MVSearchParams.parse.__func__  # type: ignore[attr-defined]

    def counting(cls, given, prefix="params"):  # type: ignore[no-untyped-def]
        calls.append(given)
        return real(cls, given, prefix)

    with Database(tmp_path / "db", settings=FAST) as db:
        db.create_collection("p", DIM, "ip", kind="multivector", index_params={"K": 64})
        db.create_collection("c", DIM, "cosine", kind="multivector", index_params={"K": 64})
        db.upsert_documents("p", list(range(50)), DOCS[:50])
        assert not db.collections["p"].core.index.mv.unit
        assert db.collections["c"].core.index.mv.unit
        monkeypatch.setattr(MVSearchParams, "parse", classmethod(counting))
        db.search_documents("p", QUERIES[:2], k=5, params={"nprobe": 2})
        assert calls == [{"nprobe": 2}]


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_close_during_a_codebook_training_stops_its_k_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() does not wait for a codebook's k-means: the worker's progress report raises
    once the database closes and the k-means calls it after each step. Here the k-means
    would tick for 60 s before clustering; close() returns long before, and on reopening
    the collection is untrained (searched exactly), holds every document, and trains."""
    import vecdb.index.multivector.codec as codec

    real = codec.kmeans
    entered = threading.Event()

    def long_kmeans(*args, tick=None, **kwargs):  # type: ignore[no-untyped-def]
        for i in range(600):  # 60 s of steps, each reported as a real k-means would
            entered.set()
            if tick:
                tick(i, 600)
            time.sleep(0.1)
        return real(*args, tick=tick, **kwargs)

    monkeypatch.setattr(codec, "kmeans", long_kmeans)
    db = Database(tmp_path / "db", settings={"idle_seconds": 3600})
    db.create_collection("p", DIM, "cosine", kind="multivector", index_params={"K": 64})
    db.upsert_documents("p", list(range(400)), DOCS)
    db.optimize("p", wait=False)
    assert entered.wait(30)
    t0 = time.monotonic()
    db.close()
    assert time.monotonic() - t0 < 20  # (the k-means had ~60 s of steps left)
    monkeypatch.setattr(codec, "kmeans", real)
    with Database(tmp_path / "db", settings={"idle_seconds": 3600}) as again:
        assert again.count("p") == 400 and not again.stats("p")["index"]["trained"]
        assert again.search_documents("p", QUERIES, k=5).stats["exact"] == 1.0
        again.optimize("p")
        assert again.stats("p")["index"]["trained"]
        assert again.search_documents("p", QUERIES, k=5).stats["exact"] == 0.0


def test_deleting_every_document_of_a_trained_collection_empties_it(tmp_path: Path) -> None:
    """Once every document of a trained collection is deleted, one training lets them go:
    the index is empty and untrained (its files retired) and the worker stays idle (the
    dead documents' share asked for a training again and again, each a no-op plus a
    checkpoint: ~100 a second); documents written after are found, and after a reopen."""
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((5, DIM)).astype(np.float32) for _ in range(50)]
    with Database(tmp_path / "db", sync=False, settings={"idle_seconds": 3600}) as db:
        db.create_collection("c", dim=DIM, kind="multivector", index_params={"K": 16})
        db.upsert_documents("c", list(range(50)), docs)
        db.optimize("c")
        full = db.stats("c")["index"]
        assert full["trained"]
        db.delete("c", list(range(50)))
        _wait(lambda: db.stats("c")["index_status"]["state"] == "ready")
        before = db.stats("c")["index_status"]["builds"]
        time.sleep(1.0)
        st = db.stats("c")
        assert st["index_status"]["builds"] == before
        assert not st["index"]["trained"] and st["index"]["raw_bytes"] < full["raw_bytes"]
        db.upsert_documents("c", [7, 100], [docs[3], docs[4]])
        assert db.search_documents("c", docs[4][:2], k=1).ids[0][0] == 100
    with Database(tmp_path / "db", sync=False, settings={"idle_seconds": 3600}) as db:
        assert db.count("c") == 2
        assert db.search_documents("c", docs[3][:2], k=1).ids[0][0] == 7
