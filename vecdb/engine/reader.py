"""The dense read path of a collection: search (index and write buffer merged), filtered
search, get.

A search takes a snapshot of the buffer's segments first, then asks the index, then scans
the segments exactly and merges (duplicates dropped): a segment that the worker moves into
the index meanwhile is still covered, so an acknowledged write is always found and a build
switching in never hides anything. Payload filters widen the index's candidate list a few
times and fall back to an exact scan of the matching points, so a filtered search is always
complete. Takes no collection lock.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.writer import prepare
from vecdb.errors import InvalidArgument
from vecdb.index.base import Visible
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk
from vecdb.storage import kv as kvmod
from vecdb.types import IdType, Record, SearchResult

_FILTER_GROWTH = 4  # a filtered search widens k by this factor until it has enough matches
_FILTER_MAX_CANDIDATES = 4096  # beyond this many candidates, scan the matching points instead
_GET_ATTEMPTS = 3  # lookups of an id whose point changes under a get

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


def search_slots(
    coll: CollectionCore,
    q: F32,
    k: int,
    params: dict[str, Any] | None,
    visible: Visible | None = None,
) -> tuple[I64, F32]:
    """Top-k slots of prepared queries over index + buffer, exact-merged."""
    segments = [] if coll.buffer is None else coll.buffer.snapshot()
    res = coll.index.search(q, k, params, visible)
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
) -> SearchResult:
    k = v.check_k(k)
    checked = v.check_filter(flt)
    q = prepare(coll, v.prepare_queries(queries, coll.cfg.dim, coll.metric))
    if params is not None and not isinstance(params, dict):
        raise InvalidArgument("params must be a dict of search parameter -> value")
    if checked is None:
        slots, dist = search_slots(coll, q, k, params)
    else:
        slots, dist = _filtered(coll, q, k, checked, params)
    ids = coll.points.ids_of(slots)
    slots, ids, dist = _drop_vanished(coll, slots, ids, dist)
    pays = None
    if with_payload:  # one entry per result column; None where padded or absent
        pays = [
            [p if s >= 0 else None for s, p in zip(row, coll.points.payloads(row), strict=True)]
            for row in slots.tolist()
        ]
    return SearchResult(ids=ids, distances=dist.astype(np.float32), payloads=pays)


def _drop_vanished(
    coll: CollectionCore, slots: I64, ids: npt.NDArray[Any], dist: F32
) -> tuple[I64, npt.NDArray[Any], F32]:
    """A point deleted while the search ran may come back without an id: drop such hits
    (the row is re-padded), so no result ever carries a finite distance and no id."""
    pad: Any = None if coll.id_type is IdType.STR else -1
    missing = (slots >= 0) & (ids == pad)
    if not missing.any():
        return slots, ids, dist
    keep = ~missing
    order = np.argsort(missing, axis=1, kind="stable")  # kept entries first, in order
    slots = np.take_along_axis(np.where(keep, slots, -1), order, 1)
    ids = np.take_along_axis(np.where(keep, ids, pad), order, 1)
    dist = np.take_along_axis(np.where(keep, dist, np.inf), order, 1).astype(np.float32)
    return slots, ids, dist


def _filtered(
    coll: CollectionCore, q: F32, k: int, flt: dict[str, Any], params: dict[str, Any] | None
) -> tuple[I64, F32]:
    """Payload filter: widen the candidate list a few times; if that does not find k
    matches, scan every matching point exactly. Always complete."""
    out_s = np.full((q.shape[0], k), -1, np.int64)
    out_d = np.full((q.shape[0], k), np.inf, np.float32)
    count = coll.points.count
    cap = min(count, _FILTER_MAX_CANDIDATES)
    exhaustive: list[int] = []
    for row in range(q.shape[0]):
        width = k
        while True:
            width = min(width * _FILTER_GROWTH, max(cap, 1))
            slots, dist = search_slots(coll, q[row : row + 1], width, params)
            cand = [int(s) for s in slots[0] if s >= 0]
            pays = coll.points.payloads(cand)
            keep = [j for j, p in enumerate(pays) if v.matches(p, flt)][:k]
            if len(keep) >= k or len(cand) >= count:
                out_s[row, : len(keep)] = [cand[j] for j in keep]
                out_d[row, : len(keep)] = dist[0, keep]
                break
            if width >= cap:
                exhaustive.append(row)
                break
    if exhaustive:
        rows = np.asarray(exhaustive)
        out_s[rows], out_d[rows] = _filtered_scan(coll, q[rows], k, flt)
    return out_s, out_d


def _filtered_scan(coll: CollectionCore, q: F32, k: int, flt: dict[str, Any]) -> tuple[I64, F32]:
    """Exact top-k among all points whose payload matches (reads every payload)."""
    prefix = coll.prefix
    slots = [
        kvmod.read_u64(key, len(prefix))
        for key, raw in coll.kv.scan_prefix(kvmod.CF_PAYLOAD, prefix)
        if v.matches(json.loads(raw), flt)
    ]
    raw_vecs = coll.points.vectors(slots)
    keep = [(s, r) for s, r in zip(slots, raw_vecs, strict=True) if r is not None]
    nq = q.shape[0]
    if not keep:
        return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
    base = np.frombuffer(b"".join(r for _, r in keep), np.float32)
    base = prepare(coll, base.reshape(len(keep), coll.cfg.dim))
    rows, dist = exact_topk(q, base, coll.cfg.metric, k)
    ids = np.asarray([s for s, _ in keep], np.int64)
    return np.where(rows >= 0, ids[np.maximum(rows, 0)], -1), dist


def get(coll: CollectionCore, ids: object) -> list[Record]:
    """Stored points among `ids`, in request order. Takes no lock: an id whose point is
    replaced between the slot lookup and the read is looked up again."""
    id_list = v.prepare_ids(ids, coll.id_type)
    keys = [v.encode_id(i) for i in id_list]
    found: dict[int, Record] = {}
    todo = list(range(len(id_list)))
    for _ in range(_GET_ATTEMPTS):
        slots = coll.points.lookup([keys[j] for j in todo])
        pairs = [(j, s) for j, s in zip(todo, slots, strict=True) if s is not None]
        records = coll.points.records([(id_list[j], s) for j, s in pairs])
        todo = []
        for (j, _), rec in zip(pairs, records, strict=True):
            if rec is None:
                todo.append(j)  # replaced or deleted since the lookup
            else:
                found[j] = rec
        if not todo:
            break
    return [found[j] for j in sorted(found)]
