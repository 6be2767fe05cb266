"""Random sequences of SDK calls answer the same embedded, remote and async remote.

A hypothesis `RuleBasedStateMachine` draws one sequence of calls (collections dense flat /
SPANN and multivector, int and str ids, multi-tenant; upsert, get, delete by ids and by filter,
count, scroll to the end, set / overwrite payload, search, payload indexes, optimize, drop,
documents; valid and invalid arguments, on live, dropped and unknown collections) and sends
each call, with the same arguments, to the three clients of the module's `Trio` (each over a
database of its own). Every answer is compared value for value in a canonical form (ids,
vector / distance / token bytes, payloads as sorted JSON text so 1 and 1.0 differ, counts,
CollectionInfo fields, scroll pages and offsets); every error by class, message, field and
reason. Collections of one example carry its own prefix and are dropped at its end. Fixed
scenarios: test_day_one_congruence.py, test_search_congruence.py, test_bad_input_table.py.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import strategies as gen
from api_modes import AioAdapter, Trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import vecdb
from vecdb import config
from vecdb.types import Document

DIM = 4
EXAMPLES = itertools.count()
TENANTS = ("a", "b")
INT_IDS = [0, 1, 2, 3, 5, 8, 13, 21, 2**62, 2**63 - 1]
BAD_INT_IDS: list[Any] = [-1, 2**63, 2**64, "x", True, 1.5, None]
STR_IDS = ["a", "b", "c", "日本", "é", "a b", "k1", "Z", "x" * 256]
BAD_STR_IDS: list[Any] = ["", "a\x00", "x" * 257, 1, "\ud800"]
KEYS = ["year", "tag", "n", "meta.x"]
FILTERS: list[Any] = [
    {},
    {"tag": "a"},
    {"year": {"$gte": 5}},
    {"year": {"$lt": 3}, "tag": {"$ne": "b"}},
    {"n": {"$in": [1, 2, 2**70]}},
    {"meta.x": {"$exists": True}},
    {"$or": [{"tag": "b"}, {"year": {"$lte": 1.5}}]},
    {"$not": {"tag": {"$nin": ["a", "c"]}}},
    {"$and": [{"year": {"$gt": -1}}, {"meta.x": 0}]},
    {"tag": "日本"},
    {"year": {"$foo": 1}},  # unknown operator
    {"year": {"$gt": None}},  # bad operand
    {"$or": []},  # empty combinator
    {"year": float("nan")},
    "year > 3",
]
PARAMS: list[Any] = [
    None,
    {},
    {"max_postings": 1},
    {"max_postings": 4096},
    {"max_postings": -1},
    {"max_posting": 8},
    {"prune_ratio": 1e9},
    {"head_ef": 1},
    {"rerank_k": 0},
    {"refine": 0},
    {"nprobe": -1},
    [1],
]
KS: list[Any] = [0, 1, 2, 3, 10, config.MAX_K, config.MAX_K + 1, -1, 2**70, True, 2.5]
COMPONENTS = [0.0, 1.0, -1.0, 0.5, 2.0, 1e-3, -3.25, 7.0]
ODD_COMPONENTS = [float("nan"), float("inf"), -float("inf"), 1e30, 1e-45]

text = st.text(alphabet=st.sampled_from("ab$.日é \x00\u2028"), max_size=4)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 2**53 + 1, 2**63, -(2**63), 1.0, -0.0, 1e300, 5e-324])
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
structured = st.fixed_dictionaries(
    {},
    optional={
        "year": st.integers(-2, 9) | st.sampled_from(["3", 2.5]),
        "tag": st.sampled_from(["a", "b", "c", "日本"]),
        "n": st.integers(0, 3) | st.just(2**70),
        "meta": st.fixed_dictionaries({"x": st.integers(0, 2)}) | st.just({}),
    },
)
payloads = st.none() | structured | st.dictionaries(text, json_values, max_size=3)
odd_payloads = st.sampled_from(
    [{"x": float("nan")}, {"s": "\ud800"}, {"n": 10**4100}, [1], "s", {"b": b"raw"}]
)


@dataclass
class Spec:
    """What a collection was created with (as the embedded client accepted it)."""

    id_type: str
    kind: str
    multi_tenant: bool
    live: bool = True


# -- canonical forms ------------------------------------------------------------------------


def js(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def arr(a: Any) -> Any:
    return None if a is None else (str(a.dtype), a.shape, a.tobytes())


def canon(v: Any) -> Any:
    """`v` as plain values compared exactly (bytes of every float array)."""
    if isinstance(v, vecdb.SearchResult):
        vecs = None if v.vectors is None else [[arr(x) for x in row] for row in v.vectors]
        pays = None if v.payloads is None else [[js(p) for p in row] for row in v.payloads]
        return ("SearchResult", v.ids.tolist(), arr(v.distances), pays, vecs, js(v.stats),
                v.degraded)  # fmt: skip
    if isinstance(v, vecdb.Record):
        return "Record", v.id, arr(v.vector), js(v.payload)
    if isinstance(v, Document):
        return "Document", v.id, arr(v.tokens), js(v.payload), arr(v.weights)
    if isinstance(v, vecdb.CollectionInfo):
        # last_build_seconds and index_progress measure time, and indexed, buffered and
        # index_state follow each database's own background worker (a document training
        # was "maintaining" in one mode, "building" in another); the rest is state
        return ("CollectionInfo", v.name, v.dim, str(v.metric), str(v.kind), str(v.id_type),
                str(v.index), v.count, v.multi_tenant, js(v.index_params),
                sorted(v.payload_indexes.items()))  # fmt: skip
    if isinstance(v, vecdb.TenantInfo):
        return "TenantInfo", js({k: x for k, x in v.__dict__.items() if k != "created"})
    if isinstance(v, vecdb.Count):
        return "Count", int(v), list(v.missing_shards)
    if isinstance(v, list | tuple):
        return type(v).__name__, [canon(x) for x in v]
    if v is None or isinstance(v, bool | int | str):
        return type(v).__name__, v
    raise AssertionError(f"no canonical form for {type(v).__name__}: {v!r}")


def attempt(c: Any, call: Callable[[Any], Any], args: Any) -> Any:
    """("ok", answer) or ("err", class, message, field, reason); anything that is not a
    VecdbError (a crash) propagates and fails the example."""
    try:
        return "ok", canon(call(c, *copy.deepcopy(args)))
    except vecdb.VecdbError as err:
        return "err", type(err).__name__, err.message, err.field, err.reason


def compare(trio: Trio, what: str, call: Callable[..., Any], *args: Any) -> Any:
    """`call(client, *args)` in every mode (fresh copies of `args` each); assert the
    outcomes are equal; return the embedded one."""
    got = {mode: attempt(c, call, args) for mode, c in trio.clients.items()}
    for mode in ("remote", "aio"):
        assert got[mode] == got["local"], f"{what}: {mode} differs from local\n" \
            f"args={args!r}\nlocal={got['local']!r}\n{mode}={got[mode]!r}"  # fmt: skip
    return got["local"]


# -- the machine ----------------------------------------------------------------------------


class CallSequences(RuleBasedStateMachine):
    """Each rule draws one call, sends it to the three clients and compares the answers.
    The state is only what is needed to aim calls at something: the collections this
    example created (and dropped) and the ids it has tried to write."""

    trio: Trio  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"sm{next(EXAMPLES)}_"
        self.specs: dict[str, Spec] = {}
        self.names = itertools.count()

    # -- helpers ----------------------------------------------------------------------------

    def run(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        return compare(self.trio, what, call, *args)

    def target(self, data: st.DataObject, kind: str | None = None) -> tuple[str, Spec | None]:
        """A collection to aim at: usually a live one (of `kind` if given), sometimes a
        dropped, an unknown or a live one of another kind."""
        live = [n for n, s in self.specs.items() if s.live and kind in (None, s.kind)]
        others = [n for n, s in self.specs.items() if not s.live or kind not in (None, s.kind)]
        pool = live * 6 + others + [self.prefix + "nope"]
        name = data.draw(st.sampled_from(pool), label="collection")
        return name, self.specs.get(name)

    def ids(self, data: st.DataObject, spec: Spec | None, min_size: int = 0) -> list[Any]:
        good = STR_IDS if spec is not None and spec.id_type == "str" else INT_IDS
        bad = BAD_STR_IDS if spec is not None and spec.id_type == "str" else BAD_INT_IDS
        pool = good * 8 + bad
        unique = data.draw(st.integers(0, 9), label="unique?") > 0
        return data.draw(
            st.lists(st.sampled_from(pool), min_size=min_size, max_size=6, unique=unique),
            label="ids",
        )

    def vectors(self, data: st.DataObject, n: int) -> Any:
        odd = data.draw(st.integers(0, 11), label="odd vectors?")
        comp = st.sampled_from(COMPONENTS) | st.floats(-4, 4, width=32)
        if odd == 0:
            comp = comp | st.sampled_from(ODD_COMPONENTS)
        widths = st.just(DIM) if odd != 1 else st.sampled_from([0, DIM - 1, DIM + 1])
        rows = data.draw(
            st.lists(st.lists(comp, min_size=1, max_size=1).flatmap(
                lambda _: widths.flatmap(lambda w: st.lists(comp, min_size=w, max_size=w))
            ), min_size=n, max_size=n),
            label="vectors",
        )  # fmt: skip
        if odd == 2 and rows:
            rows = rows[:-1]  # a count that does not match the ids
        if odd != 1 and data.draw(st.booleans(), label="as numpy?"):
            return np.array(rows, dtype=np.float32).reshape(len(rows), DIM)
        return rows

    def payload_list(self, data: st.DataObject, n: int) -> Any:
        choice = data.draw(st.integers(0, 9), label="payloads?")
        if choice == 0:
            return None
        pays = data.draw(st.lists(payloads, min_size=n, max_size=n), label="payloads")
        if choice == 1 and pays:
            pays[-1] = data.draw(odd_payloads, label="odd payload")
        return pays

    def tenant(self, data: st.DataObject, spec: Spec | None) -> dict[str, Any]:
        """tenant= for a multi-tenant collection (sometimes missing or unknown); rarely one
        for a plain collection."""
        if spec is not None and spec.multi_tenant:
            return {"tenant": data.draw(st.sampled_from([*TENANTS, *TENANTS, None, "zz"]))}
        if data.draw(st.integers(0, 19), label="tenant on plain?") == 0:
            return {"tenant": "a"}
        return {}

    # -- collections ------------------------------------------------------------------------

    @rule(data=st.data())
    def create_collection(self, data: st.DataObject) -> None:
        fresh = self.prefix + f"c{next(self.names)}"
        name = data.draw(st.sampled_from([fresh, fresh, *self.specs]), label="name")
        kind = data.draw(st.sampled_from(["dense", "dense", "multivector"]), label="kind")
        metrics = ["l2", "ip", "cosine"] if kind == "dense" else ["cosine", "ip"]
        kw: dict[str, Any] = {
            "metric": data.draw(st.sampled_from(metrics), label="metric"),
            "id_type": data.draw(st.sampled_from(["int", "str"]), label="id_type"),
            "kind": kind,
            "multi_tenant": data.draw(st.integers(0, 4), label="mt") == 0,
            "exist_ok": data.draw(st.booleans(), label="exist_ok"),
        }
        if kind == "dense":
            kw["index"] = data.draw(st.sampled_from(["flat", "spann", None]), label="index")
        if data.draw(st.integers(0, 9), label="odd setting?") == 0:
            kw.update(data.draw(st.sampled_from([{"index": "hnsw"}, {"metric": "hamming"},
                                                 {"index_params": {"max_postings": 0}},
                                                 {"index_params": {"replicas": 2}}])))  # fmt: skip
        dim = data.draw(st.sampled_from([DIM, DIM, DIM, DIM + 1, 0]), label="dim")
        got = self.run("create_collection", lambda c, *a: c.create_collection(*a, **kw), name, dim)
        if got[0] == "ok" and dim == DIM and (name not in self.specs or not self.specs[name].live):
            self.specs[name] = Spec(kw["id_type"], kind, kw["multi_tenant"])
            if kw["multi_tenant"]:
                for t in TENANTS:
                    self.run("create_tenant", lambda c, n, t: c.create_tenant(n, t), name, t)

    @rule(data=st.data())
    def drop_collection(self, data: st.DataObject) -> None:
        name, spec = self.target(data)
        got = self.run("drop_collection", lambda c, n: c.drop_collection(n), name)
        if got[0] == "ok" and spec is not None:
            spec.live = False

    @rule(data=st.data())
    def describe(self, data: st.DataObject) -> None:
        name, _ = self.target(data)
        self.run("get_collection", lambda c, n: c.get_collection(n), name)
        self.run("collection_exists", lambda c, n: c.collection_exists(n), name)

    @rule(data=st.data())
    def optimize(self, data: st.DataObject) -> None:
        name, _ = self.target(data)
        self.run("optimize", lambda c, n: c.optimize(n), name)
        self.run("get_collection", lambda c, n: c.get_collection(n), name)

    # -- points -----------------------------------------------------------------------------

    @rule(data=st.data())
    def upsert(self, data: st.DataObject) -> None:
        name, spec = self.target(data, "dense")
        ids = self.ids(data, spec)
        kw = self.tenant(data, spec)
        if spec is not None and spec.multi_tenant and data.draw(st.booleans(), label="grant?"):
            kw["grant_to"] = data.draw(st.sampled_from([["b"], ["a"], ["zz"], []]))
        vectors, pays = (
            self.vectors(data, len(ids)),
            self.payload_list(data, len(ids)),
        )
        self.run("upsert", lambda c, *a: c.upsert(*a, **kw), name, ids, vectors, pays)

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        name, spec = self.target(data)
        kw = self.tenant(data, spec)
        kw["with_vectors"] = data.draw(st.booleans(), label="with_vectors")
        ids = self.ids(data, spec)
        self.run("get", lambda c, n, i: c.get(n, i, **kw), name, ids)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name, spec = self.target(data)
        kw = self.tenant(data, spec)
        how = data.draw(st.sampled_from(["ids", "ids", "filter", "both", "neither"]))
        ids = self.ids(data, spec) if how in ("ids", "both") else None
        if how in ("filter", "both"):
            kw["filter"] = data.draw(st.sampled_from(FILTERS), label="filter")
        self.run("delete", lambda c, n, i: c.delete(n, i, **kw), name, ids)

    @rule(data=st.data())
    def count(self, data: st.DataObject) -> None:
        name, spec = self.target(data)
        kw = self.tenant(data, spec)
        flt = data.draw(st.sampled_from([None, *FILTERS]), label="filter")
        self.run("count", lambda c, n, f: c.count(n, f, **kw), name, flt)

    @rule(data=st.data())
    def scroll_to_the_end(self, data: st.DataObject) -> None:
        name, spec = self.target(data)
        kw = self.tenant(data, spec)
        kw["filter"] = data.draw(st.sampled_from([None, *FILTERS]), label="filter")
        kw["with_vectors"] = data.draw(st.booleans(), label="with_vectors")
        kw["with_payload"] = data.draw(st.booleans(), label="with_payload")
        kw["limit"] = data.draw(st.sampled_from([1, 2, 3, 7, 10_000, 0, 10_001]), label="limit")
        start = data.draw(st.sampled_from([None, None, *self.ids(data, spec, min_size=1)]))
        if spec is not None and spec.kind == "multivector":
            kw["with_vectors"] = False  # refused with WRONG_KIND: one such case suffices
        self.run("scroll", scroll_all, name, start, kw)

    @rule(data=st.data())
    def set_or_overwrite_payload(self, data: st.DataObject) -> None:
        name, spec = self.target(data)
        kw = self.tenant(data, spec)
        method = data.draw(st.sampled_from(["set_payload", "overwrite_payload"]))
        ids = self.ids(data, spec)
        pay = data.draw(payloads | odd_payloads if data.draw(st.integers(0, 9)) == 0
                        else structured | st.dictionaries(text, json_values, max_size=3))  # fmt: skip
        self.run(method, lambda c, *a: getattr(c, method)(*a, **kw), name, ids, pay)

    @rule(data=st.data())
    def payload_index(self, data: st.DataObject) -> None:
        name, _ = self.target(data)
        key = data.draw(st.sampled_from([*KEYS, *KEYS, "", "a..b", "$and"]), label="key")
        if data.draw(st.booleans(), label="create?"):
            kind = data.draw(st.sampled_from(["int", "str", "float", "bool", "date"]))
            self.run("create_payload_index", lambda c, *a: c.create_payload_index(*a),
                     name, key, kind)  # fmt: skip
        else:
            self.run("drop_payload_index", lambda c, *a: c.drop_payload_index(*a), name, key)

    @rule(data=st.data())
    def search(self, data: st.DataObject) -> None:
        name, spec = self.target(data, "dense")
        kw = self.tenant(data, spec)
        if spec is not None and spec.multi_tenant and data.draw(st.integers(0, 3)) == 0:
            lists = [["a", "b"], ["b"], ["a", "zz"], []]
            kw = {"tenants": data.draw(st.sampled_from(lists))}
        nq = data.draw(st.integers(1, 3), label="nq")
        queries = self.vectors(data, nq)
        if isinstance(queries, np.ndarray) and len(queries) == 1 and data.draw(st.booleans()):
            queries = queries[0]  # one query as a vector
        kw["filter"] = data.draw(st.sampled_from([None, None, *FILTERS]), label="filter")
        kw["params"] = data.draw(st.sampled_from(PARAMS), label="params")
        kw["with_payload"] = data.draw(st.booleans(), label="with_payload")
        kw["with_vectors"] = data.draw(st.booleans(), label="with_vectors")
        k = data.draw(st.sampled_from(KS))
        self.run("search", lambda c, n, q, k: c.search(n, q, k, **kw), name, queries, k)

    # -- documents --------------------------------------------------------------------------

    def documents(self, data: st.DataObject, n: int) -> list[Any]:
        return [self.vectors(data, data.draw(st.integers(1, 3), label="tokens"))
                for _ in range(n)]  # fmt: skip

    @rule(data=st.data())
    def upsert_documents(self, data: st.DataObject) -> None:
        name, spec = self.target(data, "multivector")
        kw = self.tenant(data, spec)
        ids = self.ids(data, spec)
        docs = self.documents(data, len(ids))
        weights = None
        if docs and data.draw(st.booleans(), label="weights?"):
            weights = [None if data.draw(st.booleans()) else
                       [data.draw(st.sampled_from([0.5, 1.0, 2.0, float("nan")]))
                        for _ in range(len(d))] for d in docs]  # fmt: skip
        pays = self.payload_list(data, len(ids))
        self.run("upsert_documents", lambda c, *a: c.upsert_documents(*a, **kw),
                 name, ids, docs, weights, pays)  # fmt: skip

    @rule(data=st.data())
    def search_documents(self, data: st.DataObject) -> None:
        name, spec = self.target(data, "multivector")
        kw = self.tenant(data, spec)
        query = self.vectors(data, data.draw(st.integers(1, 3), label="query tokens"))
        kw["filter"] = data.draw(st.sampled_from([None, None, *FILTERS]), label="filter")
        kw["params"] = data.draw(st.sampled_from(PARAMS), label="params")
        kw["with_payload"] = data.draw(st.booleans(), label="with_payload")
        k = data.draw(st.sampled_from(KS[:6]))
        self.run("search_documents", lambda c, n, q, k: c.search_documents(n, q, k, **kw),
                 name, query, k)  # fmt: skip

    @rule(data=st.data())
    def get_documents(self, data: st.DataObject) -> None:
        name, spec = self.target(data, "multivector")
        kw = self.tenant(data, spec)
        kw["with_tokens"] = data.draw(st.booleans(), label="with_tokens")
        ids = self.ids(data, spec)
        self.run("get_documents", lambda c, n, i: c.get_documents(n, i, **kw), name, ids)

    # -- every step -------------------------------------------------------------------------

    @invariant()
    def collections_listed_alike(self) -> None:
        """list_collections (this example's) agrees after every step."""
        self.run("list_collections", lambda c: [
            i for i in c.list_collections() if i.name.startswith(self.prefix)
        ])  # fmt: skip

    def teardown(self) -> None:
        for c in self.trio.clients.values():
            for name, spec in self.specs.items():
                if spec.live:
                    c.drop_collection(name)


def scroll_all(c: Any, name: str, offset: Any, kw: dict[str, Any]) -> list[Any]:
    """Every page of a scroll from `offset` until next_offset is None (at most 40 pages)."""
    pages = []
    for _ in range(40):
        records, offset = c.scroll(name, offset=offset, **kw)
        pages.append((records, offset))
        if offset is None:
            break
    return pages


SETTINGS = settings(
    max_examples=gen.machine_examples(20),
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],  # fmt: skip
)


def test_random_call_sequences_agree_in_every_mode(trio: Trio) -> None:
    """The same random sequence of calls gives the same answers and the same errors
    embedded, remote and async remote."""
    CallSequences.trio = trio
    run_state_machine_as_test(CallSequences, settings=SETTINGS)


PLAIN, DOCS, MT_DOCS, MT = "sm_plain", "sm_docs", "sm_mt_docs", "sm_mt"


def test_uncarried_arguments_are_judged_after_the_collection_in_every_mode(trio: Trio) -> None:
    """Calls with an argument the wire cannot carry (k=2**70 / 2.5 / True, queries=[],
    tenants=[], vectors=[], a 4,100-digit payload int, a bytes payload) and a fault the engine
    judges first (an unknown collection, the wrong kind, a tenant on a plain collection, no
    owner, a vector count, NaN weights): the same error in every mode (the remote SDK asks the
    server for the collection before it raises its own, `vecdb.client.prejudge`)."""
    q = np.ones(DIM, np.float32)
    for c in trio.clients.values():
        c.create_collection(PLAIN, DIM, "l2", index="flat", exist_ok=True)
        c.create_collection(DOCS, DIM, "cosine", kind="multivector", exist_ok=True)
        c.create_collection(MT_DOCS, DIM, kind="multivector", multi_tenant=True, exist_ok=True)
        c.create_collection(MT, DIM, "l2", multi_tenant=True, exist_ok=True)
    big = [{"n": 10**4100}]
    cases: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = [
        *((lambda c, *a: c.search("sm_nope", *a), args, "NOT_FOUND")
          for args in ((q, 2**70), (q, 2.5), (q, True), ([], 3), ([], 0))),
        (lambda c, *a: c.search("sm_nope", *a, tenants=[]), (q, 3), "NOT_FOUND"),
        (lambda c, *a: c.search(DOCS, *a), (q, 2.5), "WRONG_KIND"),
        (lambda c, *a: c.search(PLAIN, *a, tenant="a"), (q, 2**70), "NOT_MULTI_TENANT"),
        (lambda c, *a: c.search(PLAIN, *a, tenant="a"), ([], 0), "NOT_MULTI_TENANT"),
        (lambda c, *a: c.search(MT, *a, tenant="a", tenants=[]), (q, 3), "INVALID_ARGUMENT"),
        (lambda c, *a: c.search(MT, *a, tenants=[]), (q, 2.5), "EMPTY"),
        (lambda c, *a: c.upsert("sm_nope", *a), ([], []), "NOT_FOUND"),
        (lambda c, *a: c.upsert("sm_nope", *a), ([1], []), "NOT_FOUND"),
        (lambda c, *a: c.upsert("sm_nope", *a), ([1], [[1.0] * DIM], big), "NOT_FOUND"),
        (lambda c, *a: c.upsert(DOCS, *a), ([1], [[1.0] * DIM], big), "WRONG_KIND"),
        (lambda c, *a: c.upsert(MT, *a), ([1], [[1.0] * DIM], big), "MISSING_TENANT"),
        (lambda c, *a: c.upsert(PLAIN, *a), ([3], np.zeros((0, DIM), np.float32),
                                             [{"b": b"raw"}]), "BAD_VECTORS"),
        (lambda c, *a: c.upsert(PLAIN, *a, tenant="a"), ([1], []), "NOT_MULTI_TENANT"),
        (lambda c, *a: c.set_payload("sm_nope", *a), ([1], {"n": 10**4100}), "NOT_FOUND"),
        (lambda c, *a: c.set_payload(PLAIN, *a, tenant="a"), ([1], {"b": b"x"}),
         "NOT_MULTI_TENANT"),
        (lambda c, *a: c.upsert_documents(MT_DOCS, *a), ([], []), "MISSING_TENANT"),
        (lambda c, *a: c.upsert_documents(DOCS, *a),
         ([1], [np.ones((2, DIM))], [[1.0, float("nan")]], [{"b": b"raw"}]), "BAD_WEIGHTS"),
    ]  # fmt: skip
    for call, args, reason in cases:
        outcomes = {mode: attempt(c, call, args) for mode, c in trio.clients.items()}
        assert outcomes["local"][0] == "err" and outcomes["local"][4] == reason, outcomes
        assert outcomes["remote"] == outcomes["local"] == outcomes["aio"], outcomes


def test_an_unknown_tenant_is_judged_before_uncarried_arguments_in_every_mode(
    trio: Trio,
) -> None:
    """A call the remote SDK cannot send that names a tenant the collection does not have
    (or grants to its owner): that error in every mode (the remote SDK asks for the named
    tenants before raising its own)."""
    q = np.ones(DIM, np.float32)
    odd = [{"b": b"raw"}]
    for c in trio.clients.values():
        c.create_collection(MT_DOCS, DIM, kind="multivector", multi_tenant=True, exist_ok=True)
        c.create_collection(MT, DIM, "l2", multi_tenant=True, exist_ok=True)
    for c in trio.clients.values():
        for t in TENANTS:
            if t not in [i.name for i in c.list_tenants(MT)[0]]:
                c.create_tenant(MT, t)
    cases: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = [
        (lambda c, *a: c.upsert_documents(MT_DOCS, *a, tenant="zz"), ([], []),
         "TENANT_NOT_FOUND"),
        (lambda c, *a: c.search(MT, *a, tenant="zz"), (q, 2.5), "TENANT_NOT_FOUND"),
        (lambda c, *a: c.search(MT, *a, tenants=["a", "zz"]), (q, 2.5), "TENANT_NOT_FOUND"),
        (lambda c, *a: c.upsert(MT, *a, tenant="a", grant_to=["b", "zz"]),
         ([1], [[1.0] * DIM], odd), "TENANT_NOT_FOUND"),
        (lambda c, *a: c.upsert(MT, *a, tenant="a", grant_to=["a"]),
         ([1], [[1.0] * DIM], odd), "GRANT_TO_OWNER"),
        (lambda c, *a: c.set_payload(MT, *a, tenant="zz"), ([1], {"b": b"x"}),
         "TENANT_NOT_FOUND"),
        (lambda c, *a: c.count(MT, *a, tenant="zz"), ({"$or": {1, 2}},), "TENANT_NOT_FOUND"),
    ]  # fmt: skip
    for call, args, reason in cases:
        outcomes = {mode: attempt(c, call, args) for mode, c in trio.clients.items()}
        assert outcomes["local"][0] == "err" and outcomes["local"][4] == reason, outcomes
        assert outcomes["remote"] == outcomes["local"] == outcomes["aio"], outcomes


def test_document_upserts_judge_tenant_arguments_first_in_every_mode(trio: Trio) -> None:
    """An upsert_documents the remote SDK cannot send (no documents) is judged as the engine
    judges it: the tenant arguments against the collection's mode before the ids."""
    for c in trio.clients.values():
        c.create_collection(DOCS, DIM, "cosine", kind="multivector", exist_ok=True)
        c.create_collection(MT_DOCS, DIM, kind="multivector", multi_tenant=True, exist_ok=True)
    cases = [
        (MT_DOCS, {}, "MISSING_TENANT"),
        (MT_DOCS, {"tenant": ""}, "BAD_NAME"),
        (DOCS, {"tenant": "a"}, "NOT_MULTI_TENANT"),
        (DOCS, {"grant_to": ["b"]}, "NOT_MULTI_TENANT"),
        (DOCS, {"grant_to": []}, "EMPTY"),  # an empty grant_to is none: the ids' turn
    ]
    for name, kw, reason in cases:
        outcomes = {
            mode: attempt(
                c, lambda c, n, k, *a: c.upsert_documents(n, *a, **k), (name, kw, [], [])
            )  # fmt: skip
            for mode, c in trio.clients.items()
        }
        assert outcomes["local"][0] == "err" and outcomes["local"][4] == reason, outcomes
        assert outcomes["remote"] == outcomes["local"] == outcomes["aio"], outcomes


def _stream(c: Any, name: str, batches: list[tuple[Any, Any, Any]]) -> list[Any]:
    """The acks of `upsert_stream` (the async one consumed on its own loop); embedded, which
    has no stream (a transport of the remote SDKs), the batches' upserts in order."""
    if not hasattr(c, "upsert_stream"):
        return [c.upsert(name, *b) for b in batches]
    if isinstance(c, AioAdapter):

        async def consume() -> list[Any]:
            return [a async for a in c._client.upsert_stream(name, batches)]

        return c._run(consume())  # type: ignore[no-any-return]
    return list(c.upsert_stream(name, batches))


def test_stream_batches_the_wire_cannot_carry_are_judged_as_upserts_in_every_mode(
    trio: Trio,
) -> None:
    """A streamed batch with a payload the wire cannot carry and an earlier fault (an unknown
    collection, a document collection, a vector count) fails as that upsert does, after the
    batches before it were acknowledged, in every mode."""
    for c in trio.clients.values():
        c.create_collection(PLAIN, DIM, "l2", index="flat", exist_ok=True)
        c.create_collection(DOCS, DIM, "cosine", kind="multivector", exist_ok=True)
    odd = [{"b": b"raw"}]
    cases = [
        ("sm_nope", [([1], [[1.0] * DIM], odd)], "NOT_FOUND"),
        (DOCS, [([1], [[1.0] * DIM], odd)], "WRONG_KIND"),
        (PLAIN, [([7], [[1.0] * DIM], None), ([3], np.zeros((0, DIM), np.float32), odd)],
         "BAD_VECTORS"),
    ]  # fmt: skip
    for name, batches, reason in cases:
        outcomes = {
            mode: attempt(c, lambda c, n, b: _stream(c, n, b), (name, batches))
            for mode, c in trio.clients.items()
        }
        assert outcomes["local"][0] == "err" and outcomes["local"][4] == reason, outcomes
        assert outcomes["remote"] == outcomes["local"] == outcomes["aio"], outcomes
        got = {mode: c.get(PLAIN, [7]) for mode, c in trio.clients.items()}
        assert all(len(r) == (1 if name == PLAIN else 0) for r in got.values()), got
