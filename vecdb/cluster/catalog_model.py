"""What the cluster catalog holds: its data model, whatever stores it.

Owns `CatalogState` and its entries (`CollectionEntry`, `TenantPlacement`), `Delta` (the
writes of one change, applied atomically with an epoch bump by a backend), the `Plan` type
and the `CatalogUnavailable` error. Pure data: no I/O, no rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from vecdb.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger("vecdb.cluster.catalog")

MAX_SHARDS = 1_024  # addresses one catalog may name
# Keys of a collection spec and their defaults (dim has none): create_collection's arguments.
SPEC_DEFAULTS: dict[str, Any] = {
    "metric": "cosine",
    "id_type": "int",
    "kind": "dense",
    "index": None,
    "index_params": None,
    "multi_tenant": False,
}
SPEC_KEYS = ("dim", *SPEC_DEFAULTS)


class CatalogUnavailable(Unavailable):
    """The catalog's store (etcd) cannot be reached: changes are refused, the cache serves."""

    def __init__(self, endpoints: str, detail: str) -> None:
        super().__init__(
            f"catalog unavailable: etcd at {endpoints} did not answer ({detail}); "
            "catalog changes are refused; reads and writes go on",
            reason="CATALOG_UNAVAILABLE",
            retry_after=1.0,
        )


@dataclass(frozen=True)
class CollectionEntry:
    """A collection of the cluster: its name and create_collection's arguments (JSON-able)."""

    name: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class TenantPlacement:
    """Where a tenant lives: `home` owns its vectors; `shards` = home + every shard holding
    vectors granted to it (the shards its reads must visit)."""

    home: int
    shards: frozenset[int]


@dataclass(frozen=True)
class CatalogState:
    """One consistent version of the catalog. `dropped` maps a dropped collection's name to
    the epoch of its drop (a tombstone kept for shards that were down)."""

    epoch: int
    shards: tuple[str, ...]
    collections: Mapping[str, CollectionEntry]
    dropped: Mapping[str, int]
    tenants: Mapping[tuple[str, str], TenantPlacement]


EMPTY_STATE = CatalogState(0, (), MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))


@dataclass
class Delta:
    """The writes of one change (applied atomically, with the epoch bump, by a backend)."""

    shards: tuple[str, ...] | None = None
    put_collections: dict[str, CollectionEntry] = field(default_factory=dict)
    del_collections: set[str] = field(default_factory=set)
    put_dropped: dict[str, int] = field(default_factory=dict)
    put_tenants: dict[tuple[str, str], TenantPlacement] = field(default_factory=dict)
    del_tenants: set[tuple[str, str]] = field(default_factory=set)

    def apply(self, state: CatalogState, epoch: int) -> CatalogState:
        """`state` with these writes, at `epoch`."""
        collections = dict(state.collections)
        for name in self.del_collections:
            collections.pop(name, None)
        collections.update(self.put_collections)
        tenants = dict(state.tenants)
        for key in self.del_tenants:
            tenants.pop(key, None)
        tenants.update(self.put_tenants)
        return CatalogState(
            epoch=epoch,
            shards=state.shards if self.shards is None else self.shards,
            collections=MappingProxyType(collections),
            dropped=MappingProxyType({**state.dropped, **self.put_dropped}),
            tenants=MappingProxyType(tenants),
        )


Plan = Callable[[CatalogState], tuple[T, Delta | None]]  # None: nothing to write
