"""Wire conversions of the tenant block: `TenantInfo`, the tenant and quota arguments of a
request, and per-call search statistics (`SearchResult.stats` <-> `SearchStats`).

Split from `vecdb.rpc.convert` (which re-exports every name here); imports no sibling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import TenantInfo


def tenant_to_proto(info: TenantInfo) -> pb.TenantInfo:
    return pb.TenantInfo(name=info.name, vectors=info.vectors, owned=info.owned,
                         bytes=info.bytes, state=info.state, nodes=info.nodes,
                         progress=info.progress, created=info.created,
                         max_vectors=info.max_vectors, max_bytes=info.max_bytes)  # fmt: skip


def tenant_from_proto(msg: pb.TenantInfo) -> TenantInfo:
    return TenantInfo(name=msg.name, vectors=int(msg.vectors), owned=int(msg.owned),
                      bytes=int(msg.bytes), state=msg.state or "active", nodes=int(msg.nodes),
                      progress=float(msg.progress), created=float(msg.created),
                      max_vectors=int(msg.max_vectors), max_bytes=int(msg.max_bytes))  # fmt: skip


def quota_args(msg: Any) -> dict[str, Any]:
    """The engine keywords of the quotas a CreateTenant / UpdateTenant sets (absent: none)."""
    return {f: getattr(msg, f) for f in ("max_vectors", "max_bytes") if msg.HasField(f)}


STAT_COUNTERS = ("queries", "heads_searched", "postings_read", "blocks_read", "pages_read",
                 "bytes_read")  # fmt: skip


def stats_to_proto(stats: Mapping[str, float]) -> pb.SearchStats:
    """`SearchResult.stats` (`engine.query_stats.as_dict`) as the wire's SearchStats."""
    msg = pb.SearchStats()
    for key in STAT_COUNTERS:
        setattr(msg, key, int(stats.get(key, 0)))
    for key, value in stats.items():
        if key not in STAT_COUNTERS:
            msg.extra[key] = float(value)
    return msg


def stats_from_proto(msg: pb.SearchStats) -> dict[str, float]:
    """Inverse of `stats_to_proto`: the counters as integers, then the extras by name."""
    out: dict[str, float] = {k: int(getattr(msg, k)) for k in STAT_COUNTERS}
    out.update({k: float(msg.extra[k]) for k in sorted(msg.extra)})
    return out


def tenant_args(
    tenant: str, tenants: Sequence[str] = (), grant_to: Sequence[str] = ()
) -> dict[str, Any]:
    """The engine keywords of a request's tenant block: an empty `tenant` (and no
    `tenants` or `grant_to`) means none was named."""
    out: dict[str, Any] = {}
    if tenant:
        out["tenant"] = tenant
    if tenants:
        out["tenants"] = list(tenants)
    if grant_to:
        out["grant_to"] = list(grant_to)
    return out
