"""Exact oracles shared by the test packages: distances, top-k, tie-aware checks, a dict model.

Owns vecdb's distance conventions as the tests hold the code to them (API.md: smaller is
better; "l2" is the squared L2 distance, "ip" the negative inner product, "cosine" 1 - cosine
similarity), computed in float64 from the vectors as the user gave them, and the dict model of
a collection (id -> (vector, payload)) with its own filter matching. Nothing here calls vecdb
code to compute an expected answer, so a bug in a kernel or in the engine's filter cannot hide
in the oracle. No tests here; importable from every test package (`pythonpath` in pytest's
configuration).

Tolerances (`Tol`): a reported distance may differ from the oracle's by `atol + rtol * scale`,
scale being max(1, the largest |distance| of that query's oracle row), and two points whose
true distances are that close count as tied (either may be returned). Which one applies:
- `FLOAT32`: vectors are float32 end to end: the flat index, the engine's exact write buffer
  and SPANN with `vector_dtype="float32"` (float32 accumulation, cosine normalisation).
- `INTEGER`: small-integer coordinates under "l2" or "ip": every distance is an integer that
  float32 arithmetic computes exactly, whatever the summation order, in float32 or float16
  postings alike (integers up to 2048 are exact in float16).
- `FLOAT16`: SPANN's default float16 postings with real-valued data: each stored component is
  rounded to 11 significant bits (relative error <= 2**-11), so a distance moves by up to about
  2**-10 * |q - x| * |x|; the bound assumes norms of the order of the row's distances, as with
  standard-normal test data. Not a tolerance for int8 postings, which only recall can judge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

METRICS = ("l2", "ip", "cosine")


@dataclass(frozen=True)
class Tol:
    """How close a reported distance must be to the oracle's; also the width of a tie."""

    rtol: float  # relative to the query row's scale, max(1, max |true distance|)
    atol: float = 0.0  # absolute

    def of_row(self, row: np.ndarray) -> float:
        scale = max(1.0, float(np.abs(row[np.isfinite(row)]).max(initial=0.0)))
        return self.atol + self.rtol * scale


FLOAT32 = Tol(rtol=1e-4)
INTEGER = Tol(rtol=0.0, atol=1e-5)
FLOAT16 = Tol(rtol=4e-3)

# SPANN made exact: float32 postings (no rounding: `FLOAT32` applies) and search params that
# read every posting (max_postings and prune_ratio at their bounds in vecdb/index/params.py;
# "every" while a collection has at most 4096 heads, which test collections never reach; a
# query sitting exactly on a head measures the prune ratio from the next head, so it too).
SPANN_EXACT: dict[str, Any] = {"vector_dtype": "float32"}
ALL_POSTINGS: dict[str, Any] = {"max_postings": 4096, "prune_ratio": 1e9}


# -- exact search -------------------------------------------------------------------------


def distances(base: Any, queries: Any, metric: str) -> np.ndarray:
    """(nq, n) distances in float64, as API.md defines them; a (d,) query is one row."""
    xb = np.asarray(base, np.float64)
    q = np.atleast_2d(np.asarray(queries, np.float64))
    if xb.shape[0] == 0:
        return np.zeros((q.shape[0], 0))
    if metric == "l2":
        return ((q[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    if metric == "ip":
        return -(q @ xb.T)
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        xn = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        return 1.0 - qn @ xn.T
    raise ValueError(f"unknown metric {metric!r}")


def exact_topk(base: Any, queries: Any, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `base` nearest to each query, (nq, k) int64 padded with -1, and their float64
    distances padded with +inf; ties keep the lower row first."""
    d = distances(base, queries, metric)
    nq, n = d.shape
    rows = np.full((nq, k), -1, np.int64)
    dist = np.full((nq, k), np.inf)
    real = min(k, n)
    if real:
        order = np.argsort(d, axis=1, kind="stable")[:, :real]
        rows[:, :real] = order
        dist[:, :real] = np.take_along_axis(d, order, axis=1)
    return rows, dist


# -- tie-aware comparison -----------------------------------------------------------------


def assert_topk(
    got_ids: Sequence[Any],
    got_dists: np.ndarray,
    ids: Sequence[Any],
    dists: np.ndarray,
    k: int,
    tol: Tol = FLOAT32,
) -> None:
    """One query's answer (`got_ids`, `got_dists`, length k) is the exact top-k of `dists`
    (oracle distances, one per live point, named by `ids`), tie-aware.

    Distances match the oracle's sorted top-k within the tolerance and ascend; no id twice;
    every id is a live point reported at its own true distance; every point strictly better
    than the k-th is present; when fewer than k points exist, the rest is padding (id -1 or
    None, distance +inf). Ids may differ from the oracle's only among tied points.
    """
    n = len(ids)
    assert len(got_ids) == k and len(got_dists) == k, f"expected {k} columns"
    col = {pid: j for j, pid in enumerate(ids)}
    assert len(col) == n, "the oracle's ids are not unique"
    order = np.argsort(dists, kind="stable")
    real = min(k, n)
    want = dists[order[:real]]
    t = tol.of_row(dists)
    got_ids = list(got_ids)
    got_d = np.asarray(got_dists, np.float64)
    np.testing.assert_allclose(got_d[:real], want, rtol=tol.rtol, atol=t)
    assert np.all(np.diff(got_d[:real]) >= -t), "distances not ascending"
    assert len(set(got_ids[:real])) == real, "an id is returned twice"
    for pid, d in zip(got_ids[:real], got_d[:real], strict=True):
        assert pid in col, f"returned id {pid!r} is not a live point"
        assert abs(dists[col[pid]] - d) <= t, f"id {pid!r}: wrong distance"
    if real:
        kth = want[-1]
        must = {ids[j] for j in order[:real] if dists[j] < kth - t}
        assert must <= set(got_ids[:real]), f"missing better points {must - set(got_ids)}"
    if k > n:
        assert all(p in (-1, None) for p in got_ids[n:]), "padding ids must be -1 or None"
        assert np.all(np.isposinf(got_d[n:])), "padding distances must be +inf"


def assert_search_matches(
    res: Any, ids: Sequence[Any], dists: np.ndarray, k: int, tol: Tol = FLOAT32
) -> None:
    """A `SearchResult` equals the exact top-k of `dists` ((nq, n) oracle distances whose
    columns are the live points `ids`), row by row, tie-aware; shapes and dtypes as API.md."""
    dists = np.atleast_2d(dists)
    nq = dists.shape[0]
    assert res.ids.shape == (nq, k)
    assert res.distances.shape == (nq, k)
    assert res.distances.dtype == np.float32
    for i in range(nq):
        assert_topk(res.ids[i].tolist(), res.distances[i], ids, dists[i], k, tol)


def recall_at_k(
    found: Any, ids: Sequence[Any], dists: np.ndarray, k: int, tol: Tol = INTEGER
) -> float:
    """Tie-aware recall@k: mean over queries of |distinct found ids at a true distance <= the
    k-th true one (+ tol)| / min(k, n). `found` is (nq, >=k) ids; padding never counts."""
    dists = np.atleast_2d(dists)
    n = len(ids)
    if n == 0:
        return 1.0
    col = {pid: j for j, pid in enumerate(ids)}
    real = min(k, n)
    total = 0.0
    for i, row in enumerate(np.asarray(found, dtype=object)):
        kth = np.sort(dists[i])[real - 1]
        t = tol.of_row(dists[i])
        hits = {p for p in list(row)[:k] if p in col and dists[i, col[p]] <= kth + t}
        total += len(hits) / real
    return total / dists.shape[0]


# -- payloads and filters -----------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values as filters compare them: true is not 1, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[x], b[x]) for x in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


def same_json(a: Any, b: Any) -> bool:
    """A payload came back unchanged: equal values of the same JSON types (a stored 1 must
    not come back as 1.0 or true), -0.0 included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[x], b[x]) for x in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


_ABSENT = object()  # what a path that a payload lacks evaluates to


def _lookup(payload: dict[str, Any], field: str) -> Any:
    cur: Any = payload
    for part in field.split("."):
        if type(cur) is not dict or part not in cur:
            return _ABSENT
        cur = cur[part]
    return cur


def _num(x: Any) -> bool:
    return type(x) in (int, float)


def _same_scalar(stored: Any, want: Any) -> bool:
    """docs/FILTERS.md equality: scalars of one JSON type and equal value (1 == 1.0)."""
    if want is None or type(want) is bool or type(want) is str:
        return type(stored) is type(want) and stored == want
    return _num(stored) and stored == want


def _holds(stored: Any, op: str, operand: Any) -> bool:
    if op == "$exists":
        return (stored is not _ABSENT) == operand
    if op == "$ne":
        return not _holds(stored, "$eq", operand)
    if op == "$nin":
        return not _holds(stored, "$in", operand)
    if stored is _ABSENT:
        return False
    if op == "$eq":
        return _same_scalar(stored, operand)
    if op == "$in":
        return any(_same_scalar(stored, x) for x in operand)
    comparable = (_num(stored) and _num(operand)) or (type(stored) is str is type(operand))
    if not comparable:
        return False
    return {
        "$gt": stored > operand,
        "$gte": stored >= operand,
        "$lt": stored < operand,
        "$lte": stored <= operand,
    }[op]


def matches(payload: dict[str, Any] | None, flt: dict[str, Any] | None) -> bool:
    """docs/FILTERS.md, by brute force: a point without payload is an empty object; every key
    of a filter object must hold; `$and` / `$or` / `$not` combine; a field's value is a scalar
    (equality) or an object of operators. Assumes a valid filter."""
    if flt is None:
        return True
    doc = {} if payload is None else payload
    for key, cond in flt.items():
        if key == "$and":
            ok = all(matches(doc, f) for f in cond)
        elif key == "$or":
            ok = any(matches(doc, f) for f in cond)
        elif key == "$not":
            ok = not matches(doc, cond)
        elif type(cond) is dict:
            stored = _lookup(doc, key)
            ok = all(_holds(stored, op, operand) for op, operand in cond.items())
        else:
            ok = _holds(_lookup(doc, key), "$eq", cond)
        if not ok:
            return False
    return True


# -- the dict model of a collection -------------------------------------------------------


class Model:
    """What a collection must hold after its acknowledged writes: id -> (vector, payload)."""

    def __init__(self, metric: str = "l2") -> None:
        self.metric = metric  # how `search_oracle` compares
        self.points: dict[Any, tuple[np.ndarray, dict[str, Any] | None]] = {}  # live points

    def __len__(self) -> int:
        return len(self.points)

    def __contains__(self, pid: object) -> bool:
        return pid in self.points

    def upsert(self, ids: Iterable[Any], vectors: Any, payloads: Any = None) -> int:
        ids = list(ids)
        vecs = np.asarray(vectors, np.float32).reshape(len(ids), -1)
        pays = [None] * len(ids) if payloads is None else list(payloads)
        for pid, vec, pay in zip(ids, vecs, pays, strict=True):
            self.points[pid] = (vec.copy(), pay)
        return len(ids)

    def delete(self, ids: Iterable[Any]) -> int:
        """Removes the ids; returns how many existed (what `delete` must answer)."""
        return sum(self.points.pop(pid, None) is not None for pid in ids)

    def live(self, flt: dict[str, Any] | None = None) -> tuple[list[Any], np.ndarray]:
        """The live ids matching `flt` and their vectors (n, d), in insertion order."""
        keep = [pid for pid, (_, pay) in self.points.items() if matches(pay, flt)]
        dim = next(iter(self.points.values()))[0].shape[0] if self.points else 0
        vecs = np.stack([self.points[p][0] for p in keep]) if keep else np.zeros((0, dim))
        return keep, vecs

    def search_oracle(
        self, queries: Any, flt: dict[str, Any] | None = None
    ) -> tuple[list[Any], np.ndarray]:
        """The live ids matching `flt` and their (nq, n) exact distances to `queries`."""
        ids, vecs = self.live(flt)
        return ids, distances(vecs, queries, self.metric)

    def assert_search(
        self, res: Any, queries: Any, k: int, flt: dict[str, Any] | None = None,
        tol: Tol = FLOAT32,
    ) -> None:  # fmt: skip
        """`res` is the exact, tie-aware top-k of `queries` among the matching live points."""
        ids, dists = self.search_oracle(queries, flt)
        assert_search_matches(res, ids, dists, k, tol)

    def assert_records(self, records: Sequence[Any], asked: Sequence[Any]) -> None:
        """`get(asked)` answered the stored points among `asked`, in request order, with
        bit-identical float32 vectors and unchanged payloads."""
        assert [r.id for r in records] == [p for p in asked if p in self.points]
        for rec in records:
            vec, pay = self.points[rec.id]
            assert rec.vector is not None, f"id {rec.id!r}: no vector"
            assert rec.vector.dtype == np.float32 and rec.vector.shape == vec.shape
            assert rec.vector.tobytes() == vec.tobytes(), f"id {rec.id!r}: vector changed"
            assert same_json(rec.payload, pay), f"id {rec.id!r}: {rec.payload!r} != {pay!r}"

    def assert_stored(self, db: Any, name: str, absent: Iterable[Any] = ()) -> None:
        """A client or Database holds exactly the model: count, and get of every live id
        (plus `absent` ids, which must not be found)."""
        assert db.count(name) == len(self.points)
        asked = list(self.points) + [p for p in absent if p not in self.points]
        for lo in range(0, len(asked), 1000):
            chunk = asked[lo : lo + 1000]
            self.assert_records(db.get(name, chunk), chunk)


# --- Multi-vector documents (issue 11): exact MaxSim and clustered token data ---------------


def maxsim_scores(query: Any, docs: Sequence[Any]) -> np.ndarray:
    """MaxSim of one (m, d) query against each (n_i, d) document, in float64: the sum over
    query tokens of the best dot product with the document's tokens (-inf for no tokens)."""
    q = np.asarray(query, dtype=np.float64)
    out = np.full(len(docs), -np.inf)
    for i, doc in enumerate(docs):
        t = np.asarray(doc, dtype=np.float64)
        if len(t):
            out[i] = (q @ t.T).max(axis=1).sum()
    return out


def maxsim_topk(query: Any, docs: Sequence[Any], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the k best documents by exact MaxSim (higher is better)."""
    s = maxsim_scores(query, docs)
    order = np.argsort(-s, kind="stable")[:k]
    return order, s[order]


def maxsim_recall(found: Any, query: Any, docs: Sequence[Any], k: int, tol: float = 1e-4) -> float:
    """Tie-aware recall@k of `found` (document positions) for one query: a found document
    counts when its exact score reaches the k-th best exact score minus `tol`."""
    s = maxsim_scores(query, docs)
    kth = np.sort(s)[::-1][min(k, len(s)) - 1]
    got = [int(f) for f in found if f >= 0][:k]
    return sum(1 for f in got if s[f] >= kth - tol) / min(k, len(s))


def clustered_documents(
    n_docs: int, dim: int, *, topics: int = 24, tokens: tuple[int, int] = (8, 40), seed: int = 0
) -> list[np.ndarray]:
    """Seeded unit-norm token matrices with topic structure, like late-interaction embeddings:
    each document draws its tokens around a few of `topics` random directions plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics * 8, dim))
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(tokens[0], tokens[1] + 1))
        pick = rng.choice(len(centres), size=int(rng.integers(2, 6)), replace=False)
        x = centres[rng.choice(pick, size=n)] + 0.6 * rng.standard_normal((n, dim))
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return docs


def clustered_queries(
    docs: Sequence[np.ndarray], n: int, *, m: int = 8, noise: float = 0.5, seed: int = 1
) -> list[np.ndarray]:
    """Queries made of noisy tokens of random documents (so every query has true matches);
    `noise` is the norm of the noise added to each unit token, on average."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        src = docs[int(rng.integers(len(docs)))]
        d = src.shape[1]
        rows = src[rng.integers(len(src), size=m)] + noise / np.sqrt(d) * rng.standard_normal(
            (m, d)
        )
        out.append((rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32))
    return out
