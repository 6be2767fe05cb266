"""Merging the shards' answers into the one answer a single node would give.

Search: each shard answered its own top-k; the global top-k is the k smallest distances of
their concatenation, ties kept in shard order (a stable sort over the shards' columns taken in
shard order), so the merge is deterministic. Payload texts and vector rows follow their hits
as bytes (nothing is decoded). Scroll: each shard answered its first `limit` points from the
offset in id order; the union's first `limit` is the page, and the next offset is the first
id not on it (the smallest id after the page any shard still has). Get: answers reassembled
in request order. Counts add up; search stats add up, with `shards` (how many shards the call
touched) among the extras. Works on wire messages only; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vecdb.rpc.v1 import vecdb_pb2 as pb

F32 = np.dtype("<f4")


def _id_list(ids: pb.Ids) -> tuple[str, list[Any]]:
    if ids.WhichOneof("kind") == "strs":
        return "strs", list(ids.strs.values)
    return "ints", list(ids.ints.values)


def _ids_msg(kind: str, values: Sequence[Any]) -> pb.Ids:
    if kind == "strs":
        return pb.Ids(strs=pb.StrIds(values=values))
    return pb.Ids(ints=pb.IntIds(values=values))


# -- search -----------------------------------------------------------------------------------


def merge_search(answers: Sequence[pb.SearchResponse], k: int) -> pb.SearchResponse:
    """The global top-k of the shards' answers (given in shard order)."""
    if len(answers) == 1:
        return answers[0]
    nq = answers[0].nq
    kind = "strs" if any(a.ids.WhichOneof("kind") == "strs" for a in answers) else "ints"
    dists, ids, pays, vecs = [], [], [], []
    with_payload = any(a.with_payload for a in answers)
    with_vectors = any(a.with_vectors for a in answers)
    dim = max((a.vectors.dim for a in answers if a.with_vectors), default=0)
    for a in answers:
        ka = a.k
        d = np.frombuffer(a.distances, dtype=F32).reshape(nq, ka).copy()
        for row, n_found in enumerate(a.found):
            d[row, n_found:] = np.inf  # columns past `found` are padding whatever they hold
        dists.append(d)
        ids.append(np.asarray(_id_list(a.ids)[1], dtype=object).reshape(nq, ka))
        if with_payload:
            texts = list(a.payloads) or [""] * (nq * ka)
            pays.append(np.asarray(texts, dtype=object).reshape(nq, ka))
        if with_vectors:
            raw = np.frombuffer(a.vectors.data, dtype=np.uint8)
            vecs.append(raw.reshape(nq, ka, dim * 4) if raw.size else
                        np.zeros((nq, ka, dim * 4), np.uint8))  # fmt: skip
    dist = np.concatenate(dists, axis=1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    cols = order.shape[1]
    rows = np.arange(nq)[:, None]
    top = dist[rows, order]
    found = [int(n) for n in np.isfinite(top).sum(axis=1)]
    all_ids = np.concatenate(ids, axis=1)[rows, order]
    pad: Any = b"" if kind == "strs" else -1
    flat_ids = [v if c < found[r] else pad for r, row in enumerate(all_ids) for c, v in
                enumerate(row)]  # fmt: skip
    out = pb.SearchResponse(nq=nq, k=cols, ids=_ids_msg(kind, flat_ids),
                            distances=np.ascontiguousarray(top, dtype=F32).tobytes(),
                            found=found, with_payload=with_payload, with_vectors=with_vectors,
                            degraded="; ".join(a.degraded for a in answers if a.degraded))  # fmt: skip
    if with_payload:
        picked = np.concatenate(pays, axis=1)[rows, order]
        out.payloads.extend(c if j < found[r] else "" for r, row in enumerate(picked)
                            for j, c in enumerate(row))  # fmt: skip
    if with_vectors:
        grid = np.concatenate(vecs, axis=1)[rows, order]
        for r in range(nq):
            grid[r, found[r] :] = 0
        out.vectors.CopyFrom(pb.Vectors(dim=dim, count=nq * cols, data=grid.tobytes()))
    out.stats.CopyFrom(merge_stats([a.stats for a in answers], len(answers)))
    return out


def merge_stats(stats: Iterable[pb.SearchStats], shards: int) -> pb.SearchStats:
    """Counters and extras summed; `extra["shards"]` = how many shards answered."""
    out = pb.SearchStats()
    for s in stats:
        for name in ("queries", "heads_searched", "postings_read", "blocks_read",
                     "pages_read", "bytes_read"):  # fmt: skip
            setattr(out, name, getattr(out, name) + getattr(s, name))
        for key, value in s.extra.items():
            out.extra[key] = out.extra[key] + value if key in out.extra else value
    if shards > 1:  # every shard answered the same queries: count them once
        out.queries //= shards
    out.extra["shards"] = float(shards)
    return out


# -- points -----------------------------------------------------------------------------------


def _points_rows(p: pb.Points) -> list[tuple[Any, bytes | None, str]]:
    """(id, vector bytes or None, payload text) per point."""
    _, ids = _id_list(p.ids)
    width = p.vectors.dim * 4
    data = p.vectors.data if p.vectors.count else b""
    pays = list(p.payloads) or [""] * len(ids)
    return [(i, data[n * width : (n + 1) * width] if data else None, pays[n])
            for n, i in enumerate(ids)]  # fmt: skip


def points_of(rows: Sequence[tuple[Any, bytes | None, str]], kind: str, dim: int) -> pb.Points:
    """A Points message of rows from `_points_rows` (vectors only if every row has one)."""
    out = pb.Points(ids=_ids_msg(kind, [r[0] for r in rows]))
    if rows and all(r[1] is not None for r in rows):
        out.vectors.CopyFrom(pb.Vectors(dim=dim, count=len(rows),
                                        data=b"".join(r[1] or b"" for r in rows)))  # fmt: skip
    else:
        out.vectors.CopyFrom(pb.Vectors(dim=0, count=0))
    out.payloads.extend(r[2] for r in rows)
    return out


def _dim(answers: Iterable[pb.Points]) -> int:
    return max((p.vectors.dim for p in answers), default=0)


def merge_get(request_ids: pb.Ids, answers: Sequence[pb.GetResponse]) -> pb.GetResponse:
    """The points found by any shard, in request order (each id lives on one shard)."""
    kind, wanted = _id_list(request_ids)
    found: dict[Any, tuple[Any, bytes | None, str]] = {}
    for a in answers:
        for row in _points_rows(a.points):
            found.setdefault(row[0], row)
    rows = [found[i] for i in dict.fromkeys(wanted) if i in found]
    return pb.GetResponse(points=points_of(rows, kind, _dim(a.points for a in answers)))


def merge_scroll(answers: Sequence[pb.ScrollResponse], limit: int) -> pb.ScrollResponse:
    """The first `limit` points of the union in id order, and the next offset."""
    kinds = {a.points.ids.WhichOneof("kind") for a in answers} - {None}
    kind = "strs" if "strs" in kinds else "ints"
    # ints sort numerically and string ids (UTF-8 bytes) bytewise: a node's order
    rows = sorted((row for a in answers for row in _points_rows(a.points)), key=lambda r: r[0])
    page, rest = rows[:limit], rows[limit:]
    out = pb.ScrollResponse(points=points_of(page, kind, _dim(a.points for a in answers)))
    nexts = [_offset_value(a.next_offset) for a in answers if a.HasField("next_offset")]
    candidates = [r[0] for r in rest[:1]] + [n for n in nexts if n is not None]
    if candidates:
        nxt = min(candidates)
        if isinstance(nxt, bytes):
            out.next_offset.CopyFrom(pb.Id(str_id=nxt))
        else:
            out.next_offset.CopyFrom(pb.Id(int_id=nxt))
    return out


def _offset_value(msg: pb.Id) -> Any:
    which = msg.WhichOneof("value")
    if which == "int_id":
        return int(msg.int_id)
    if which == "str_id":
        return bytes(msg.str_id)
    return None


# -- admin ------------------------------------------------------------------------------------


def merge_stats_json(per_shard: Mapping[str, str]) -> str:
    """Stats of every shard by address, plus numeric top-level values summed."""
    shards = {addr: json.loads(text or "{}") for addr, text in per_shard.items()}
    total: dict[str, Any] = {}
    for stats in shards.values():
        for key, value in stats.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return json.dumps({"total": total, "shards": shards}, default=str, sort_keys=True)
