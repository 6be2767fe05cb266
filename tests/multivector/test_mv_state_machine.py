"""Document collections behave like a dict under any sequence of writes, optimize, snapshots
and reopen.

Hypothesis state machines drive a real Database (real RocksDB and index files under a tmp
dir, real numba kernels) with a multivector collection of 8-d documents next to a dict model
id -> (tokens as upserted, weights, payload), and after every step check count, get_documents
of every id of the pool (bit-identical tokens and weights, unchanged payloads, nothing for
absent ids), scroll, an exhaustive search (every cell probed, no candidate cut, exact rerank)
against the exact MaxSim top-k computed in numpy (tie-aware), and the default search: live
ids, none twice, min(k, n) of them, each at its exact MaxSim (the default `refine` rescores
what it returns from the raw tokens), the exact top-k whenever it reports an exact search;
both unfiltered and with a filter that leaves most documents.
Rules: upserts of 1-4 documents (1-12 tokens, weights and payloads sometimes, an existing id
with another token count often, a copy of another document's tokens for exact ties), a bulk
rewrite of a range of ids, deletes by id (present and absent) and by filter, set /
overwrite payload, optimize (waiting, and without waiting, so the checks run during a
training), snapshot and restore, close and reopen, and searches / scrolls / gets / counts
with random filters, k and parameters.

The codebook is small (K = 16) so a few hundred tokens train it, and `pipeline_on_few_tokens`
makes trained searches take the coded pipeline; it runs for a search only above 96 visible
documents at k <= 10 (below that, `search_one` scores every one exactly), so each example
starts with a bulk load of 100-140 documents. The worker never trains a first codebook on
its own (`idle_seconds` 3600: writes never pause that long; `optimize` trains); once trained
it retrains on its own when half of the encoded documents are dead (`DEAD_SHARE`, reached
by the bulk rewrite), at a moment of its choosing: the checks must hold while it runs.
Two machines: cosine with the default tiers; inner product with an int8 rerank tier and
sign bits (their files reopened, snapshotted and compacted too).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import strategies as gen
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from oracles import FLOAT32, assert_topk, matches, maxsim_scores, same_json

from vecdb.engine import Database
from vecdb.index.multivector.params import plaid_defaults

DIM = 8
MAX_ID = 179  # ids 0..MAX_ID: the bulk load holds most, so writes replace and delete often
MAX_TOKENS = 12  # tokens of a generated document
# K = 16 trains on the bulk load; nprobe 256 (its bound) then probes every cell, and no
# candidate cut or coded score is left: the exact top-k whatever the codebook
EXHAUSTIVE: dict[str, Any] = {
    "nprobe": 256,
    "ndocs": 1_000_000,
    "probe_keep": 1_000_000,
    "rerank": "exact",
}
# what the search rule asks for besides: the defaults (refined), a single cell per token
# (the widening), the residual rerank alone (no refine: its scores are not exact)
SEARCH_PARAMS: tuple[dict[str, Any] | None, ...] = (None, EXHAUSTIVE, {"nprobe": 1}, {"refine": 0})
# Filters of reads: none, narrow (an equality on `tag`, `n`) or broad (all but one `tag`:
# more documents than the exact cut-off, so a trained search takes the pipeline's restricted
# path); deletes by filter use the narrow ones only
READ_FILTERS = gen.filters() | st.sampled_from(gen.FILTER_TAGS).map(lambda t: {"tag": {"$ne": t}})
BROAD: dict[str, Any] = {"tag": {"$ne": "red"}}  # the invariant's filtered searches
# Each example opens RocksDB several times (reopen rule); on tmpfs that costs CPU only.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


@dataclass(frozen=True)
class Doc:
    """A document as the collection must hold it."""

    tokens: np.ndarray  # (n, DIM) float32 as upserted
    weights: np.ndarray | None  # (n,) float32, or None when not given
    payload: dict[str, Any] | None


class Documents:
    """The dict model of a document collection and its exact MaxSim oracle."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.docs: dict[int, Doc] = {}  # live documents

    def __len__(self) -> int:
        return len(self.docs)

    def copy(self) -> Documents:
        out = Documents(self.metric)
        out.docs = dict(self.docs)  # entries are replaced, never changed in place
        return out

    def upsert(self, ids: list[int], docs: list[Doc]) -> int:
        self.docs.update(zip(ids, docs, strict=True))
        return len(ids)

    def delete(self, ids: list[int]) -> int:
        return sum(self.docs.pop(pid, None) is not None for pid in ids)

    def matching(self, flt: dict[str, Any] | None) -> list[int]:
        return [pid for pid, d in self.docs.items() if matches(d.payload, flt)]

    def prepared(self, x: np.ndarray) -> np.ndarray:
        """Rows as MaxSim scores them: float64, unit rows for cosine."""
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True) if self.metric == "cosine" else x

    def distances(self, query: np.ndarray, ids: list[int]) -> np.ndarray:
        """-MaxSim of `query` against each of `ids` (the engine's distances)."""
        docs = [self.prepared(self.docs[pid].tokens) for pid in ids]
        return -maxsim_scores(self.prepared(query), docs)

    # -- checks ----------------------------------------------------------------------------

    def assert_documents(
        self, got: list[Any], asked: list[int], tokens: bool, payload: bool
    ) -> None:
        """get_documents(asked) answered the live ones in request order, tokens and weights
        bit-identical, payloads unchanged (or None where not asked)."""
        assert [d.id for d in got] == [p for p in asked if p in self.docs]
        for doc in got:
            want = self.docs[doc.id]
            if not tokens:
                assert doc.tokens is None and doc.weights is None
            else:
                assert doc.tokens is not None and doc.tokens.dtype == np.float32
                assert doc.tokens.shape == want.tokens.shape, f"id {doc.id}: token count"
                assert doc.tokens.tobytes() == want.tokens.tobytes(), f"id {doc.id}: tokens"
                if want.weights is None:
                    assert doc.weights is None, f"id {doc.id}: weights appeared"
                else:
                    assert doc.weights is not None, f"id {doc.id}: weights lost"
                    assert doc.weights.tobytes() == want.weights.tobytes(), f"id {doc.id}"
            shown = want.payload if payload else None
            assert same_json(doc.payload, shown), f"id {doc.id}: {doc.payload!r} != {shown!r}"

    def assert_search(
        self, res: Any, queries: list[np.ndarray], k: int, flt: dict[str, Any] | None,
        exact: bool, refined: bool, with_payload: bool,
    ) -> None:  # fmt: skip
        """Each row of `res` is the exact tie-aware top-k of its query among the matching
        documents (`exact`), or else: live matching ids, none twice, min(k, n) of them, then
        padding; ascending and each at its exact distance when `refined`."""
        ids = self.matching(flt)
        assert res.ids.shape == (len(queries), k) and res.distances.shape == (len(queries), k)
        assert res.distances.dtype == np.float32
        for i, q in enumerate(queries):
            dists = self.distances(q, ids)
            row, got = res.ids[i].tolist(), res.distances[i]
            if exact:
                assert_topk(row, got, ids, dists, k, FLOAT32)
            else:
                real = min(k, len(ids))
                assert all(p != -1 for p in row[:real]), f"fewer than {real} results: {row}"
                assert all(p == -1 for p in row[real:]) and np.all(np.isposinf(got[real:]))
                assert len(set(row[:real])) == real, f"an id twice: {row}"
                col = {pid: j for j, pid in enumerate(ids)}
                assert set(row[:real]) <= set(col), f"not live or not matching: {row}"
                if refined:  # the refine step's scores are exact MaxSim
                    tol = FLOAT32.of_row(dists)
                    want = np.array([dists[col[p]] for p in row[:real]])
                    np.testing.assert_allclose(got[:real], want, rtol=0, atol=tol)
                    assert np.all(np.diff(got[:real]) >= -tol), "not ascending"
            if with_payload:
                assert res.payloads is not None
                for pid, pay in zip(row, res.payloads[i], strict=True):
                    want_pay = None if pid == -1 else self.docs[pid].payload
                    assert same_json(pay, want_pay), f"id {pid}: payload {pay!r}"


class DocumentsVsDict(RuleBasedStateMachine):
    """The cosine machine; the subclass changes the metric and the tiers."""

    metric = "cosine"
    index_params: dict[str, Any] = {"K": 16, "min_train_tokens": 64}
    search_params = SEARCH_PARAMS

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vecdb-mvsm-", dir=SCRATCH))
        self.db = self.open()
        self.db.create_collection("c", dim=DIM, metric=self.metric, kind="multivector",
                                  index_params=self.index_params)  # fmt: skip
        self.model = Documents(self.metric)
        self.snapshots: dict[str, Documents] = {}  # snapshot name -> the model then
        self.generation = 0  # the highest codebook generation seen (retrainings reached)
        rng = np.random.default_rng([gen.QUERY_SALT, 1])
        self.fixed_queries = [self.vectors(rng, m) for m in (1, 5)]

    def open(self) -> Database:
        # sync=False: a reopen in one process sees every write either way (fsync is the
        # crash tests' subject); the worker never trains a first codebook on its own
        return Database(self.dir / "db", sync=False, settings={"idle_seconds": 3600})

    def teardown(self) -> None:
        event(f"trained at the end: {self.trained()}")
        event(f"codebook generations reached: {min(self.generation, 3)}")
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def index_stats(self) -> dict[str, Any]:
        return dict(self.db.stats("c")["index"])

    def trained(self) -> bool:
        st = self.index_stats()
        self.generation = max(self.generation, int(st["generation"]))
        return bool(st["trained"])

    def vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n tokens; for "ip" of varied norms (cosine ignores them)."""
        x = rng.standard_normal((n, DIM))
        if self.metric == "ip":
            x *= rng.uniform(0.25, 2.0, (n, 1))
        return x.astype(np.float32)

    def write(self, ids: list[int], docs: list[Doc]) -> None:
        weights = None
        if any(d.weights is not None for d in docs):
            weights = [d.weights for d in docs]
        n = self.db.upsert_documents("c", ids, [d.tokens for d in docs], weights=weights,
                                     payloads=[d.payload for d in docs])  # fmt: skip
        assert n == self.model.upsert(ids, docs)

    # -- writes ----------------------------------------------------------------------------

    @initialize(seed=gen.seeds(), n=st.integers(100, 140), train=st.booleans())
    def bulk_load(self, seed: int, n: int, train: bool) -> None:
        """Enough documents for the coded pipeline (over 96), trained at once or later."""
        rng = np.random.default_rng(seed)
        sizes = rng.integers(1, MAX_TOKENS + 1, n)
        docs = [
            Doc(self.vectors(rng, int(s)), None,
                None if i % 9 == 8 else {"tag": gen.TAGS[i % len(gen.TAGS)], "n": i % 11 - 5})
            for i, s in enumerate(sizes)
        ]  # fmt: skip
        self.write(list(range(n)), docs)
        if train:
            self.optimize()

    @rule(data=st.data(), seed=gen.seeds())
    def upsert(self, data: st.DataObject, seed: int) -> None:
        """1-4 documents: new ids, replacements (another token count), copies for ties."""
        ids = data.draw(gen.id_lists(gen.int_ids(MAX_ID), 1, 4), label="ids")
        rng = np.random.default_rng(seed)
        docs = []
        for _ in ids:
            kind = data.draw(st.sampled_from(("fresh", "weighted", "copy")), label="kind")
            pay = data.draw(gen.payloads(), label="payload")
            if kind == "copy" and self.model.docs:  # another document's tokens: exact ties
                src = self.model.docs[data.draw(st.sampled_from(sorted(self.model.docs)))]
                docs.append(Doc(src.tokens.copy(), None, pay))
                continue
            tokens = self.vectors(rng, int(rng.integers(1, MAX_TOKENS + 1)))
            w = None
            if kind == "weighted":
                w = rng.uniform(0.0, 2.0, len(tokens)).astype(np.float32)
            docs.append(Doc(tokens, w, pay))
        self.write(ids, docs)

    @rule(seed=gen.seeds(), lo=st.integers(0, 90), n=st.integers(40, 140))
    def rewrite_range(self, seed: int, lo: int, n: int) -> None:
        """Replace (or add) a range of ids at once: dead documents pile up, so a training
        compacts the raw file and the worker retrains on its own (DEAD_SHARE)."""
        ids = list(range(lo, min(MAX_ID, lo + n) + 1))
        rng = np.random.default_rng(seed)
        docs = [
            Doc(self.vectors(rng, int(rng.integers(1, MAX_TOKENS + 1))), None, {"tag": i % 3})
            for i in ids
        ]
        self.write(ids, docs)

    @rule(ids=gen.id_lists(gen.int_ids(MAX_ID), 1, 6))
    def delete(self, ids: list[int]) -> None:
        assert self.db.delete("c", ids) == self.model.delete(ids)

    @rule(flt=gen.filters().filter(lambda f: f is not None))
    def delete_by_filter(self, flt: dict[str, Any]) -> None:
        gone = self.model.matching(flt)
        assert self.db.delete("c", filter=flt) == self.model.delete(gone)

    @rule(
        ids=gen.id_lists(gen.int_ids(MAX_ID), 1, 6),
        payload=st.fixed_dictionaries({}, optional={"tag": st.sampled_from(gen.TAGS),
                                                    "n": st.integers(-5, 5)}),
        merge=st.booleans(),
    )  # fmt: skip
    def set_payload(self, ids: list[int], payload: dict[str, Any], merge: bool) -> None:
        call = self.db.set_payload if merge else self.db.overwrite_payload
        present = [pid for pid in ids if pid in self.model.docs]
        assert call("c", ids, payload) == len(present)
        for pid in present:
            d = self.model.docs[pid]
            after = {**(d.payload or {}), **payload} if merge else dict(payload)
            self.model.docs[pid] = Doc(d.tokens, d.weights, after)

    @rule()
    def optimize(self) -> None:
        """Train the first codebook, or retrain if due; checkpoint (folds the delta)."""
        self.db.optimize("c")
        assert not self.model.docs or self.trained()

    @rule()
    def optimize_in_background(self) -> None:
        """The same without waiting: the next steps run while the worker trains."""
        self.db.optimize("c", wait=False)

    @rule()
    def reopen(self) -> None:
        """Everything acknowledged survives a close (which abandons a training under way)."""
        self.db.close()
        self.db = self.open()

    @precondition(lambda self: len(self.snapshots) < 3)
    @rule()
    def snapshot(self) -> None:
        info = self.db.create_snapshot("c")
        self.snapshots[info.name] = self.model.copy()

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.snapshots)), label="snapshot")
        self.db.restore_snapshot("c", name)
        self.model = self.snapshots[name].copy()

    # -- reads -----------------------------------------------------------------------------

    @rule(ids=gen.id_lists(gen.int_ids(MAX_ID), 1, 8), tokens=st.booleans(), payload=st.booleans())
    def get(self, ids: list[int], tokens: bool, payload: bool) -> None:
        got = self.db.get_documents("c", ids, with_tokens=tokens, with_payload=payload)
        self.model.assert_documents(got, ids, tokens, payload)

    @rule(flt=READ_FILTERS)
    def count(self, flt: dict[str, Any] | None) -> None:
        assert self.db.count("c", filter=flt) == len(self.model.matching(flt))

    @rule(flt=READ_FILTERS, limit=st.integers(1, 40))
    def scroll(self, flt: dict[str, Any] | None, limit: int) -> None:
        """Page by page: every matching id once, ascending, with its payload."""
        got: list[Any] = []
        offset = None
        while True:
            page, offset = self.db.scroll("c", filter=flt, limit=limit, offset=offset)
            assert len(page) <= limit
            got += page
            if offset is None:
                break
        assert [r.id for r in got] == sorted(self.model.matching(flt))
        for r in got:
            assert same_json(r.payload, self.model.docs[r.id].payload), f"id {r.id}"

    @rule(
        seed=gen.seeds(),
        sizes=st.lists(st.integers(1, 6), min_size=1, max_size=2),
        k=st.integers(1, 30),
        flt=READ_FILTERS,
        data=st.data(),
        with_payload=st.booleans(),
    )
    def search(
        self, seed: int, sizes: list[int], k: int, flt: dict[str, Any] | None,
        data: st.DataObject, with_payload: bool,
    ) -> None:  # fmt: skip
        params = data.draw(st.sampled_from(self.search_params), label="params")
        rng = np.random.default_rng([gen.QUERY_SALT, seed])
        queries = [self.vectors(rng, m) for m in sizes]
        self.check_search(queries, k, flt, params, with_payload)

    def check_search(
        self, queries: list[np.ndarray], k: int, flt: dict[str, Any] | None,
        params: dict[str, Any] | None, with_payload: bool = False,
    ) -> None:  # fmt: skip
        trained = self.trained()  # (a training may publish during the search: not undone)
        res = self.db.search_documents("c", queries, k=k, filter=flt, params=params,
                                       with_payload=with_payload)  # fmt: skip
        exact = res.stats["exact"] == 1.0
        visible = len(self.model.matching(flt))
        if trained and visible > max(k, plaid_defaults(k)[2] // 4):
            assert res.stats["exact"] == 0.0, "a trained search of many documents was exact"
        event(f"search {'exact' if exact else 'pipeline'}{'' if flt is None else ', filtered'}")
        self.model.assert_search(
            res, queries, k, flt,
            exact=exact or params is EXHAUSTIVE,
            refined=params is None or "refine" not in params,
            with_payload=with_payload,
        )  # fmt: skip

    @invariant()
    def equals_model(self) -> None:
        """After every step: count, get of every id of the pool, scroll, and searches."""
        assert self.db.count("c") == len(self.model)
        pool = list(range(MAX_ID + 1))
        self.model.assert_documents(self.db.get_documents("c", pool), pool, True, True)
        page, nxt = self.db.scroll("c", limit=1000)
        assert nxt is None and [r.id for r in page] == sorted(self.model.docs)
        for flt in (None, BROAD):
            self.check_search(self.fixed_queries, 10, flt, EXHAUSTIVE)
            self.check_search(self.fixed_queries, 10, flt, None)


class IpDocumentsVsDict(DocumentsVsDict):
    """Inner product, with an int8 rerank tier (the default rerank) and sign bits."""

    metric = "ip"
    index_params = {**DocumentsVsDict.index_params, "rerank_tier": "int8", "sign_bits": True}
    search_params = (*SEARCH_PARAMS, {"hamming_keep": 40}, {"rerank": "residual"})


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_cosine_documents_behave_like_a_dict() -> None:
    """A cosine document collection holds and finds what the dict model does, step by step."""
    run_state_machine_as_test(DocumentsVsDict, settings=gen.machine_settings(12, 40))


@pytest.mark.usefixtures("pipeline_on_few_tokens")
def test_ip_documents_with_an_int8_tier_behave_like_a_dict() -> None:
    """So does an inner-product one with an int8 rerank tier and sign bits."""
    run_state_machine_as_test(IpDocumentsVsDict, settings=gen.machine_settings(8, 40))
