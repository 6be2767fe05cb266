"""The catalog's etcd key layout: keys and JSON values to and from `CatalogState`.

Key layout under `<prefix>` (values are JSON, UTF-8):

    <prefix>/epoch                           int: bumped by every change
    <prefix>/shards                          ["host:port", ...]: shard i is at index i
    <prefix>/collections/<name>              {"dim", "metric", "id_type", "kind", "index",
                                              "index_params", "multi_tenant"}
    <prefix>/dropped/<name>                  int: the epoch of the collection's last drop
    <prefix>/tenants/<collection>/<tenant>   {"home": int, "shards": [int, ...]}

Owns the layout and its codec (`Parts` builds a state key by key; `delta_ops` turns a change
into transaction operations); a key it cannot read is the caller's to log and skip. No I/O.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import etcd3

from vecdb.cluster.catalog_model import CatalogState, CollectionEntry, Delta, TenantPlacement
from vecdb.errors import InvalidArgument, echo


def check_prefix(prefix: object) -> str:
    """A key prefix: starts with "/", no trailing "/" (it is stripped), printable."""
    if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.isprintable():
        raise InvalidArgument(f"prefix {echo(prefix)} must start with /", field="prefix")
    stripped = prefix.rstrip("/")
    if not stripped:
        raise InvalidArgument("prefix must name a directory below /", field="prefix")
    return stripped


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Parts:
    """Mutable pieces of a CatalogState while keys are applied."""

    def __init__(self, state: CatalogState) -> None:
        self.epoch = state.epoch
        self.shards = state.shards
        self.collections = dict(state.collections)
        self.dropped = dict(state.dropped)
        self.tenants = dict(state.tenants)

    def apply(self, rel: str, value: bytes | None) -> None:
        """Apply one key (relative to the prefix) put with `value`, or deleted (None)."""
        kind, _, rest = rel.partition("/")
        data = None if value is None else json.loads(value)
        if kind == "epoch" and not rest:
            self.epoch = 0 if data is None else int(data)
        elif kind == "shards" and not rest:
            self.shards = () if data is None else tuple(str(a) for a in data)
        elif kind == "collections" and rest:
            if data is None:
                self.collections.pop(rest, None)
            else:
                self.collections[rest] = CollectionEntry(rest, dict(data))
        elif kind == "dropped" and rest:
            if data is None:
                self.dropped.pop(rest, None)
            else:
                self.dropped[rest] = int(data)
        elif kind == "tenants" and "/" in rest:
            coll, _, tenant = rest.partition("/")
            if data is None:
                self.tenants.pop((coll, tenant), None)
            else:
                shards = frozenset(int(s) for s in data["shards"])
                self.tenants[(coll, tenant)] = TenantPlacement(int(data["home"]), shards)
        else:
            raise ValueError("not a catalog key")

    def freeze(self) -> CatalogState:
        return CatalogState(
            self.epoch,
            self.shards,
            MappingProxyType(self.collections),
            MappingProxyType(self.dropped),
            MappingProxyType(self.tenants),
        )


def delta_ops(tx: Any, p: str, delta: Delta) -> list[Any]:
    """The etcd transaction operations writing `delta` under prefix `p` (epoch not included)."""
    ops: list[Any] = []
    if delta.shards is not None:
        ops.append(tx.put(f"{p}/shards", dumps(list(delta.shards))))
    for name in sorted(delta.del_collections):
        ops.append(tx.delete(f"{p}/collections/{name}"))
        # One range delete for all its tenants (etcd caps a transaction at 128 ops).
        start = f"{p}/tenants/{name}/".encode()
        ops.append(etcd3.transactions.Delete(start, etcd3.utils.prefix_range_end(start)))
    for name, entry in sorted(delta.put_collections.items()):
        ops.append(tx.put(f"{p}/collections/{name}", dumps(entry.spec)))
    for name, epoch in sorted(delta.put_dropped.items()):
        ops.append(tx.put(f"{p}/dropped/{name}", dumps(epoch)))
    for coll, tenant in sorted(delta.del_tenants):
        if coll not in delta.del_collections:
            ops.append(tx.delete(f"{p}/tenants/{coll}/{tenant}"))
    for (coll, tenant), placement in sorted(delta.put_tenants.items()):
        value = {"home": placement.home, "shards": sorted(placement.shards)}
        ops.append(tx.put(f"{p}/tenants/{coll}/{tenant}", dumps(value)))
    return ops
