"""What the cluster catalog holds and the rules of changing it, whatever stores it.

Owns the catalog's data model (`CatalogState` and its entries), the `Catalog` interface, the
`CatalogUnavailable` error, argument validation (names by the engine's own rules) and every
change written as a pure plan: `(state) -> (result, Delta)`. A backend (`catalog_memory`,
`catalog_etcd`) only stores: it applies a plan's `Delta` atomically with an epoch bump, and on
a lost race re-reads and plans again. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from vecdb.engine import validate as v
from vecdb.engine.tenant_rules import check_tenant_name
from vecdb.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    echo,
)

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


# -- argument rules ------------------------------------------------------------------------


def check_spec(spec: object) -> dict[str, Any]:
    """A collection spec with the engine's rules, defaults filled in and values normalised
    (metric lower-case, empty index_params as None) so equal settings compare equal."""
    if not isinstance(spec, Mapping):
        raise InvalidArgument("spec must be a JSON object", field="spec")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise InvalidArgument(
            f"spec has unknown key {echo(unknown[0])} (known: {', '.join(SPEC_KEYS)})",
            field=f"spec.{unknown[0]}",
        )
    if "dim" not in spec:
        raise InvalidArgument("spec.dim is missing", field="dim")
    out = {**SPEC_DEFAULTS, **spec}
    index = out["index"]
    if index is not None and not isinstance(index, str):
        raise InvalidArgument(f"index {echo(index)} must be a string", field="index")
    params = v.check_index_params(out["index_params"])
    return {
        "dim": v.check_dim(out["dim"]),
        "metric": v.check_metric(out["metric"]).value,
        "id_type": v.check_id_type(out["id_type"]).value,
        "kind": v.check_kind(out["kind"]).value,
        "index": index,
        "index_params": params or None,
        "multi_tenant": v.check_flag("multi_tenant", out["multi_tenant"]),
    }


def check_addresses(addresses: object) -> tuple[str, ...]:
    """Shard addresses: 1..MAX_SHARDS distinct non-empty strings without spaces or commas."""
    if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Sequence):
        raise InvalidArgument("shards must be a list of addresses", field="shards")
    if not 1 <= len(addresses) <= MAX_SHARDS:
        raise InvalidArgument(
            f"shards names {len(addresses)} addresses (expected 1-{MAX_SHARDS})", field="shards"
        )
    for i, a in enumerate(addresses):
        if not isinstance(a, str) or not a or any(c.isspace() or c == "," for c in a):
            raise InvalidArgument(f"shards[{i}] {echo(a)} is not an address", field=f"shards[{i}]")
    if len(set(addresses)) != len(addresses):
        raise InvalidArgument("shards names an address twice", field="shards")
    return tuple(addresses)


def check_shard_indexes(shards: object, count: int) -> frozenset[int]:
    """Shard indexes, each an int in [0, count)."""
    if isinstance(shards, (str, bytes)) or not isinstance(shards, Iterable):
        raise InvalidArgument("shards must be a list of shard indexes", field="shards")
    out = set()
    for i, s in enumerate(list(shards)):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < count:
            raise InvalidArgument(
                f"shards[{i}] {echo(s)} is not a shard index (0-{count - 1})", field=f"shards[{i}]"
            )
        out.add(s)
    return frozenset(out)


def _collection(state: CatalogState, name: str) -> CollectionEntry:
    entry = state.collections.get(name)
    if entry is None:
        raise NotFound(f"collection {name!r} does not exist", field="collection")
    return entry


def _tenant(state: CatalogState, collection: str, tenant: str) -> TenantPlacement:
    _collection(state, collection)
    placement = state.tenants.get((collection, tenant))
    if placement is None:
        raise NotFound(
            f"tenant {tenant!r} does not exist in collection {collection!r}", field="tenant"
        )
    return placement


# -- plans: one per change -----------------------------------------------------------------


def plan_init_shards(addresses: tuple[str, ...]) -> Plan[CatalogState]:
    def plan(state: CatalogState) -> tuple[CatalogState, Delta | None]:
        if state.shards == addresses:
            return state, None
        if state.shards:
            raise FailedPrecondition(
                f"the catalog's shards are {list(state.shards)}; this process was given "
                f"{list(addresses)} (resharding is not supported: fix the configuration)",
                field="shards",
                reason="SHARDS_DIFFER",
            )
        delta = Delta(shards=addresses)
        return delta.apply(state, state.epoch + 1), delta

    return plan


def plan_create_collection(name: str, spec: dict[str, Any]) -> Plan[CollectionEntry]:
    def plan(state: CatalogState) -> tuple[CollectionEntry, Delta | None]:
        have = state.collections.get(name)
        if have is not None:
            for key in SPEC_KEYS:
                if have.spec.get(key) != spec[key]:
                    raise AlreadyExists(
                        f"collection {name!r} already exists with {key}={have.spec.get(key)!r} "
                        f"(asked {key}={spec[key]!r})",
                        field=key,
                    )
            return have, None
        entry = CollectionEntry(name, spec)
        return entry, Delta(put_collections={name: entry})

    return plan


def plan_drop_collection(name: str) -> Plan[None]:
    def plan(state: CatalogState) -> tuple[None, Delta | None]:
        _collection(state, name)
        gone = {key for key in state.tenants if key[0] == name}
        delta = Delta(del_collections={name}, put_dropped={name: state.epoch + 1})
        delta.del_tenants = gone
        return None, delta

    return plan


def plan_place_tenant(collection: str, tenant: str) -> Plan[TenantPlacement]:
    def plan(state: CatalogState) -> tuple[TenantPlacement, Delta | None]:
        entry = _collection(state, collection)
        have = state.tenants.get((collection, tenant))
        if have is not None:
            return have, None
        if not entry.spec.get("multi_tenant"):
            raise InvalidArgument(
                f"collection {collection!r} is not multi-tenant: tenant must not be given",
                field="tenant",
                reason="NOT_MULTI_TENANT",
            )
        if not state.shards:
            raise FailedPrecondition(
                "the catalog has no shards yet: a router sets them at start (init_shards)",
                field="shards",
            )
        homes = [0] * len(state.shards)
        for (c, _), p in state.tenants.items():
            if c == collection and p.home < len(homes):
                homes[p.home] += 1
        home = homes.index(min(homes))  # fewest tenants; ties: lowest index
        placement = TenantPlacement(home, frozenset({home}))
        return placement, Delta(put_tenants={(collection, tenant): placement})

    return plan


def plan_add_tenant_shards(collection: str, tenant: str, shards: object) -> Plan[TenantPlacement]:
    def plan(state: CatalogState) -> tuple[TenantPlacement, Delta | None]:
        have = _tenant(state, collection, tenant)
        wanted = check_shard_indexes(shards, len(state.shards))
        if wanted <= have.shards:
            return have, None
        placement = TenantPlacement(have.home, have.shards | wanted)
        return placement, Delta(put_tenants={(collection, tenant): placement})

    return plan


def plan_drop_tenant(collection: str, tenant: str) -> Plan[None]:
    def plan(state: CatalogState) -> tuple[None, Delta | None]:
        _tenant(state, collection, tenant)
        return None, Delta(del_tenants={(collection, tenant)})

    return plan


# -- the interface -------------------------------------------------------------------------


class Catalog(ABC):
    """The cluster catalog: collections, shard map, tenant placement and an epoch.

    Every change is one compare-and-swap that bumps `epoch`. `state()` answers from a cache
    and never blocks or raises; `watch` callbacks get each new state (and the current one at
    once), in epoch order, from a backend thread or the changing thread: keep them short.
    """

    def __init__(self) -> None:
        self._state = EMPTY_STATE  # the cache; replaced whole, never mutated
        self._state_lock = threading.Lock()
        self._notify_lock = threading.RLock()  # callbacks run one state at a time, in order
        self._callbacks: dict[int, Callable[[CatalogState], None]] = {}
        self._next_watch = 0
        self._delivered = -1  # epoch of the last state handed to the callbacks

    def state(self) -> CatalogState:
        return self._state

    @abstractmethod
    def refresh(self) -> CatalogState: ...

    @abstractmethod
    def _change(self, plan: Plan[T]) -> T:
        """Run `plan` against the current state and store its Delta atomically with an epoch
        bump (retrying on a lost race); return its result."""

    def init_shards(self, addresses: Sequence[str]) -> CatalogState:
        return self._change(plan_init_shards(check_addresses(addresses)))

    def create_collection(self, name: str, spec: dict[str, Any]) -> CollectionEntry:
        v.check_name("collection", name)
        return self._change(plan_create_collection(name, check_spec(spec)))

    def drop_collection(self, name: str) -> None:
        v.check_name("collection", name)
        self._change(plan_drop_collection(name))

    def place_tenant(self, collection: str, tenant: str) -> TenantPlacement:
        v.check_name("collection", collection)
        check_tenant_name(tenant)
        return self._change(plan_place_tenant(collection, tenant))

    def add_tenant_shards(
        self, collection: str, tenant: str, shards: Iterable[int]
    ) -> TenantPlacement:
        v.check_name("collection", collection)
        check_tenant_name(tenant)
        if isinstance(shards, (str, bytes)) or not isinstance(shards, Iterable):
            raise InvalidArgument("shards must be a list of shard indexes", field="shards")
        return self._change(plan_add_tenant_shards(collection, tenant, list(shards)))

    def drop_tenant(self, collection: str, tenant: str) -> None:
        v.check_name("collection", collection)
        check_tenant_name(tenant)
        self._change(plan_drop_tenant(collection, tenant))

    def watch(self, callback: Callable[[CatalogState], None]) -> Callable[[], None]:
        with self._notify_lock:
            key = self._next_watch
            self._next_watch += 1
            self._callbacks[key] = callback
            _call(callback, self._state)

        def cancel() -> None:
            with self._notify_lock:
                self._callbacks.pop(key, None)

        return cancel

    @abstractmethod
    def close(self) -> None: ...

    # -- for backends --------------------------------------------------------------------

    def _publish(self, state: CatalogState) -> None:
        """Make `state` the cache unless a newer one is there, then notify."""
        with self._state_lock:
            if state.epoch > self._state.epoch:
                self._state = state
        self._notify()

    def _notify(self) -> None:
        """Hand the newest cached state to the callbacks: once per epoch, in epoch order
        (states that came and went meanwhile are coalesced)."""
        with self._notify_lock:
            latest = self._state
            if latest.epoch <= self._delivered:
                return
            self._delivered = latest.epoch
            for callback in list(self._callbacks.values()):
                _call(callback, latest)


def _call(callback: Callable[[CatalogState], None], state: CatalogState) -> None:
    try:
        callback(state)
    except Exception:  # a watcher's bug must not stop the catalog
        log.exception("catalog watch callback failed")
