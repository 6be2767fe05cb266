"""The dense read path of a collection: search (index and write buffer merged), filtered
search, get, scroll and count.

A search takes a snapshot of the buffer's segments first, then asks the index, then scans
the segments exactly and merges (duplicates dropped): a segment that the worker moves into
the index meanwhile is still covered, so an acknowledged write is always found and a build
switching in never hides anything. A filter is parsed once (`filters.parse`); when payload
indexes answer it, the matching slots are known up front: few of them (at most
`few_matches(k, dim)`) are scanned exactly, more become the `visible` set
that index and buffer test inside their scans (pre-filter). Without indexes for every
condition, the index's candidate list is widened a few times and checked against payloads,
falling back to the matching points read from the payloads, which are then kept until the
next write, also once the widened lists have read as many payloads as that (`_widened`): a
filtered search is always complete.
A scroll page is read from one `kv.View` (ids, filter, vectors and payloads at one instant).
Every read may be restricted to a `Scope` (the slots a tenant or several tenants may see, see
`tenant_reads`): a filter's matches are intersected with it, and the index walk is the
scope's own (`tenant_search.search_tenants`). Takes no collection lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import filters, recovery
from vecdb.engine import scope as scopes
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.filters import Filter
from vecdb.engine.scope import Scope
from vecdb.engine.writer import prepare
from vecdb.errors import InvalidArgument
from vecdb.index.base import Visible
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk
from vecdb.kernels.unitrow import unit_row
from vecdb.storage.kv import View
from vecdb.types import Id, IdType, Metric, Record, SearchResult

_FILTER_GROWTH = 4  # an unindexed filter's search widens k by this factor until k match
_FILTER_MAX_CANDIDATES = 4096  # beyond this many candidates, the matching points are read
# An indexed filter matching at most `few_matches(k, dim)` points is
# answered by an exact scan of just those (cheaper than an index walk that skips most of what
# it reads, and exact); more matches become the index's `visible` set.
FEW_MATCHES = 2000
FEW_MATCHES_PER_K = 20
FEW_MATCHES_FLOATS = 1 << 19  # ... or whose vectors hold at most this many floats (2 MiB)
_SCROLL_CHUNK = 512  # ids read per step of a scroll
_GET_ATTEMPTS = 3  # lookups of an id whose point changes under a get

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


def search_slots(
    coll: CollectionCore,
    q: F32,
    k: int,
    params: dict[str, Any] | None,
    visible: Visible | None = None,
    search: recovery.IndexSearch | None = None,
) -> tuple[I64, F32]:
    """Top-k slots of prepared queries over index (`search`, default the index's own) +
    buffer, exact-merged. A search that overlapped a rebuild emptying the index
    (`index_epoch` moved) runs again: its buffer snapshot may predate the segment that took
    the index's points over."""
    while True:
        epoch = coll.index_epoch
        segments = [] if coll.buffer is None else coll.buffer.snapshot()
        res = recovery.index_search(coll, q, k, params, visible, search)  # exact if corrupt
        if coll.index_epoch == epoch:
            break
    with coll.io_lock:
        coll.io.add(res.stats)
    slots, dist = res.slots, res.distances
    for seg in segments:
        if len(seg):
            part = seg.scan(q, k, visible)
            slots, dist = merge_topk(slots, dist, part.slots, part.distances, k)
    return slots, dist


def search(
    coll: CollectionCore,
    queries: object,
    k: int,
    flt: object,
    params: object,
    with_payload: bool,
    with_vectors: bool = False,
    scope: Scope | None = None,
) -> SearchResult:
    k = v.check_k(k)
    compiled = filters.parse(flt)
    v.check_flag("with_payload", with_payload)
    v.check_flag("with_vectors", with_vectors)
    q = _one_query(queries, coll.cfg.dim, coll.metric)
    if q is None:
        q = v.queries_as_stored(queries, coll.cfg.dim, coll.metric)
    if params is not None and not isinstance(params, dict):
        raise InvalidArgument("params must be a JSON object of search parameter -> value")
    if scope is not None:
        slots, dist = _scoped(coll, q, k, compiled, params, scope)
    elif compiled is None:
        slots, dist = search_slots(coll, q, k, params)
    else:
        slots, dist = _filtered(coll, q, k, compiled, params)
    ids, vanished = coll.points.ids_found(slots)
    if vanished:
        slots, ids, dist = _drop_vanished(coll, slots, ids, dist)
    pays = None
    if with_payload:  # one entry per result column; None where padded or absent
        pays = [
            [p if s >= 0 else None for s, p in zip(row, coll.points.payloads(row), strict=True)]
            for row in slots.tolist()
        ]
    vecs = None
    if with_vectors:  # the stored vectors, as upserted; None where padded (or just deleted)
        vecs = []
        for row in slots.tolist():
            raw = coll.points.vectors([s for s in row if s >= 0])
            it = iter(raw)
            vecs.append([_vector(next(it)) if s >= 0 else None for s in row])
    degraded = coll.status.degraded  # exact answers while a quarantined index is rebuilt
    dist = dist.astype(np.float32, copy=False)  # a fresh array of this call's
    return SearchResult(ids, dist, pays, vecs, degraded=degraded)


def _one_query(queries: object, dim: int, metric: Metric) -> F32 | None:
    """`validate.queries_as_stored` of the usual single query, a float32 ndarray (dim,) or
    (1, dim), in one kernel call (`unitrow.unit_row`: the same values bit for bit); None
    for anything else or a row failing a check, which `queries_as_stored` then judges."""
    if type(queries) is not np.ndarray or queries.dtype != np.float32:
        return None
    if queries.shape == (dim,):
        row = queries
    elif queries.shape == (1, dim):
        row = queries[0]
    else:
        return None
    out = np.empty((1, dim), np.float32)
    return out if unit_row(row, metric is Metric.COSINE, v.FAST_SQ_NORM, out) else None


def _vector(raw: bytes | None) -> F32 | None:
    return None if raw is None else np.frombuffer(raw, np.float32).copy()


def _drop_vanished(
    coll: CollectionCore, slots: I64, ids: npt.NDArray[Any], dist: F32
) -> tuple[I64, npt.NDArray[Any], F32]:
    """A point deleted while the search ran may come back without an id: drop such hits
    (the row is re-padded), so no result ever carries a finite distance and no id."""
    pad: Any = None if coll.id_type is IdType.STR else -1
    missing = (slots >= 0) & (ids == pad)
    if not np.count_nonzero(missing):
        return slots, ids, dist
    keep = ~missing
    order = np.argsort(missing, axis=1, kind="stable")  # kept entries first, in order
    slots = np.take_along_axis(np.where(keep, slots, -1), order, 1)
    ids = np.take_along_axis(np.where(keep, ids, pad), order, 1)
    dist = np.take_along_axis(np.where(keep, dist, np.inf), order, 1).astype(np.float32)
    return slots, ids, dist


def _filtered(
    coll: CollectionCore, q: F32, k: int, flt: Filter, params: dict[str, Any] | None
) -> tuple[I64, F32]:
    """Top-k among the points the filter selects (see the module docstring)."""
    if coll.selector.planned(flt) is not None:
        return _by_mask(coll, q, k, flt, params)
    return _widened(coll, q, k, flt, params)


def _scoped(
    coll: CollectionCore, q: F32, k: int, flt: Filter | None, params: Any, scope: Scope
) -> tuple[I64, F32]:
    """Top-k within the scope (and the filter): the filter's indexed matches are intersected
    with the scope (few: exact scan; more: the scope's walk over the intersection); an
    unindexed filter is tried on the scope's walk first, like `_widened`."""
    if flt is None:
        return scope.walk(q, k, params, scope.visible, scope.slots)
    if coll.selector.planned(flt) is None and not scopes.is_small(coll, scope):
        return _widened(coll, q, k, flt, params, scope)
    return _by_mask(coll, q, k, flt, params, scope)


def _by_mask(
    coll: CollectionCore, q: F32, k: int, flt: Filter, params: Any, scope: Scope | None = None
) -> tuple[I64, F32]:
    """Top-k among the matching points (of the scope, if any): an exact scan of few, the
    index's walk over the rest (the matches its `visible` set); from the payload indexes
    when they answer, else from the payloads read once (cached with the filter until the
    next write)."""
    if scope is None:
        mask = coll.selector.matching(flt)
        if int(mask.sum()) <= few_matches(k, coll.cfg.dim):
            return _exact_over(coll, q, k, flt, mask)
        visible = coll.selector.cached("visible", flt, lambda: Visible.from_mask(mask))
        return search_slots(coll, q, k, params, visible)
    sub_mask = scopes.matching(coll, flt, scope)
    sub = np.flatnonzero(sub_mask).astype(np.int64)
    if len(sub) <= few_matches(k, coll.cfg.dim):
        return _exact_over(coll, q, k, flt, sub_mask, f"vectors@{scope.key}")
    return scope.walk(q, k, params, Visible.from_mask(sub_mask), sub)


def few_matches(k: int, dim: int) -> int:
    """Most matching points an indexed filter answers by an exact scan of just those: an
    exact scan of 2 MiB of vectors costs about what an index walk over a few hundred
    postings does, and is exact (GloVe-50: 10,485 points, 1% of 390,000 selected: recall
    0.95 was out of reach of the visible-set walk at 256 postings)."""
    return max(FEW_MATCHES, FEW_MATCHES_PER_K * k, FEW_MATCHES_FLOATS // max(1, dim))


def _widened(
    coll: CollectionCore,
    q: F32,
    k: int,
    flt: Filter,
    params: dict[str, Any] | None,
    scope: Scope | None = None,
) -> tuple[I64, F32]:
    """Unindexed filter. Once its matching points are known (read since the last write),
    a search is answered from them as an indexed filter's is (`_by_mask`: exact over few,
    the index's walk over the rest). Until then a query widens the index's candidate list 4x
    at a time (up to 4,096), checking payloads, and its first k matches answer; a query
    without k matches there is answered from the matching points. The payloads the widened
    lists read are counted: once they add up to a scan's (the live points), the filter's
    matches are read (`Selector.charge`). The widened answer is approximate where few points
    match: 200,000 GloVe-50, 1% selected, recall@10 0.76 at p50 49-74 ms, where the matches
    give 1.0 at 1.1 ms once read (1.4-1.9 s for the scan; scratch selbench.py)."""
    if coll.selector.scanned(flt) is not None:
        return _by_mask(coll, q, k, flt, params, scope)
    out_s = np.full((q.shape[0], k), -1, np.int64)
    out_d = np.full((q.shape[0], k), np.inf, np.float32)
    count = coll.points.count if scope is None else len(scope.slots)
    cap = min(count, _FILTER_MAX_CANDIDATES)
    rest: list[int] = []
    scan = False  # the widened lists have read as many payloads as a scan would
    for row in range(q.shape[0]):
        width = k
        while not scan:
            width = min(width * _FILTER_GROWTH, max(cap, 1))
            if scope is None:
                slots, dist = search_slots(coll, q[row : row + 1], width, params)
            else:
                one = q[row : row + 1]
                slots, dist = scope.walk(one, width, params, scope.visible, scope.slots)
            cand = [int(s) for s in slots[0] if s >= 0]
            pays = coll.points.payloads(cand)
            scan = coll.selector.charge(flt, len(cand))
            keep = [j for j, p in enumerate(pays) if flt.matches(p)][:k]
            if len(keep) >= k or len(cand) >= count:
                out_s[row, : len(keep)] = [cand[j] for j in keep]
                out_d[row, : len(keep)] = dist[0, keep]
                break
            if width >= cap:
                rest.append(row)
                break
        else:
            rest.append(row)
    if rest:
        rows = np.asarray(rest)
        out_s[rows], out_d[rows] = _by_mask(coll, q[rows], k, flt, params, scope)
    return out_s, out_d


def _exact_over(
    coll: CollectionCore,
    q: F32,
    k: int,
    flt: Filter,
    mask: npt.NDArray[np.bool_] | None,
    tag: str = "vectors",
) -> tuple[I64, F32]:
    """Exact top-k among the matching points (`mask`, else found by `selector.matching`);
    their prepared vectors are cached with the filter until the next write."""

    def load() -> tuple[I64, F32]:
        m = coll.selector.matching(flt) if mask is None else mask
        slots = np.flatnonzero(m).astype(np.int64)
        raw = coll.points.vectors(slots.tolist())
        keep = [(int(s), r) for s, r in zip(slots.tolist(), raw, strict=True) if r is not None]
        if not keep:
            return np.zeros(0, np.int64), np.zeros((0, coll.cfg.dim), np.float32)
        base = np.frombuffer(b"".join(r for _, r in keep), np.float32)
        base = prepare(coll, base.reshape(len(keep), coll.cfg.dim))
        return np.asarray([s for s, _ in keep], np.int64), np.ascontiguousarray(base)

    slots, base = coll.selector.cached(tag, flt, load)
    nq = q.shape[0]
    if len(slots) == 0:
        return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
    rows, dist = exact_topk(q, base, coll.cfg.metric, k)
    return np.where(rows >= 0, slots[np.maximum(rows, 0)], -1), dist


def count(coll: CollectionCore, flt: object, scope: Scope | None = None) -> int:
    """Live points, or those the filter selects (within the scope, if any)."""
    compiled = filters.parse(flt)
    if compiled is None:
        return coll.points.count if scope is None else len(scope.slots)
    if scope is not None:
        return int(scopes.matching(coll, compiled, scope).sum())
    return int(coll.selector.matching(compiled).sum())


def scroll(
    coll: CollectionCore,
    flt: object,
    limit: object,
    offset: object,
    with_vectors: bool,
    with_payload: bool,
    scope: Scope | None = None,
) -> tuple[list[Record], Id | None]:
    """Up to `limit` points selected by the filter in ascending id order, from the id
    `offset` on (inclusive), and the id to pass as `offset` for the next page (None: done).

    A page is read from one `View` of the store: ids, filter, vectors and payloads as they
    were at one instant, so a point replaced or deleted while the page is read is neither
    skipped nor returned twice. Across pages: every point that exists and matches for the
    whole scroll is returned exactly once (pages cover consecutive id ranges); a point
    written, deleted or changed to match or not during the scroll may or may not be."""
    compiled = filters.parse(flt)
    n_limit = v.check_scroll_limit(limit)
    v.check_flag("with_vectors", with_vectors)
    v.check_flag("with_payload", with_payload)
    start = None
    if offset is not None:
        try:
            start = v.encode_id(v.prepare_ids([offset], coll.id_type, field="offset")[0])
        except InvalidArgument as exc:
            raise InvalidArgument(
                exc.message.replace("offset[0]", "offset", 1), field="offset", reason=exc.reason
            ) from None
    want = n_limit + 1  # one more than the page tells whether a next page exists
    picked: list[tuple[Id, int]] = []
    with coll.kv.view() as view:  # the whole page, filter included, at one instant
        keep = _scroll_test(coll, compiled, view, want)
        if scope is not None:
            keep = _within(scope, keep)
        chunk: list[tuple[bytes, int]] = []
        if scope is not None and scopes.is_small(coll, scope):  # its own points, not all
            source = scopes.pairs_from(coll, scope, start)
        else:
            source = coll.points.id_range(start, view)
        for pair in source:
            chunk.append(pair)
            if len(chunk) == _SCROLL_CHUNK:
                picked.extend((v.decode_id(k, coll.id_type), s) for k, s in keep(chunk))
                chunk = []
                if len(picked) >= want:
                    break
        if chunk and len(picked) < want:
            picked.extend((v.decode_id(k, coll.id_type), s) for k, s in keep(chunk))
        page, rest = picked[:n_limit], picked[n_limit:]
        records = coll.points.records(page, with_vectors, with_payload, view)
    out = [r for r in records if r is not None]  # every slot of the view is in the view
    return out, (rest[0][0] if rest else None)


Pairs = list[tuple[bytes, int]]


def _within(scope: Scope, keep: Callable[[Pairs], Pairs]) -> Callable[[Pairs], Pairs]:
    """A scroll test that also drops slots outside the scope (tested first: it is cheap)."""

    def test(part: Pairs) -> Pairs:
        inside = scope.has([s for _, s in part])
        return keep([p for p, ok in zip(part, inside.tolist(), strict=True) if ok])

    return test


def _scroll_test(
    coll: CollectionCore, flt: Filter | None, view: View, want: int
) -> Callable[[Pairs], Pairs]:
    """Which (encoded id, slot) pairs of the view a page keeps. An indexed filter is
    answered from the index entries in the view when its matches are few (one range scan
    per condition, shared by pages while nothing is written), else, like an unindexed one,
    by reading each candidate's payload from the view: a page costs about
    min(matches, want x points / matches) reads either way."""
    if flt is None:
        return lambda part: part
    estimate = coll.selector.planned(flt)  # now, from memory: only to choose the way
    if estimate is not None:
        m = int(estimate.sum())
        if m * m <= want * max(coll.points.count, 1):
            mask = coll.selector.planned_at(flt, view)
            assert mask is not None
            return lambda part: [(k, s) for k, s in part if s < len(mask) and mask[s]]

    def by_payload(part: Pairs) -> Pairs:
        pays = coll.points.payloads([s for _, s in part], view)
        return [p for p, pay in zip(part, pays, strict=True) if flt.matches(pay)]

    return by_payload


def get(
    coll: CollectionCore, ids: object, with_vectors: bool = True, scope: Scope | None = None
) -> list[Record]:
    """Stored points among `ids`, in request order (within the scope: others look absent).
    Takes no lock: an id whose point is replaced between the slot lookup and the read is
    looked up again."""
    id_list = v.prepare_ids(ids, coll.id_type)
    v.check_flag("with_vectors", with_vectors)
    keys = [v.encode_id(i) for i in id_list]
    found: dict[int, Record] = {}
    todo = list(range(len(id_list)))
    for _ in range(_GET_ATTEMPTS):
        slots = coll.points.lookup([keys[j] for j in todo])
        pairs = [(j, s) for j, s in zip(todo, slots, strict=True) if s is not None]
        if scope is not None:
            pairs = scope.within(pairs)
        records = coll.points.records([(id_list[j], s) for j, s in pairs], with_vectors)
        todo = []
        for (j, _), rec in zip(pairs, records, strict=True):
            if rec is None:
                todo.append(j)  # replaced or deleted since the lookup
            else:
                found[j] = rec
        if not todo:
            break
    return [found[j] for j in sorted(found)]
