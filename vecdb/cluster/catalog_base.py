"""The catalog interface every store implements (etcd, memory).

Owns `Catalog`: argument checks before any I/O, one plan per change (`catalog_plans`) handed
to the store's `_change`, the cache behind `state()` and the delivery of watch callbacks
(once per epoch, in order, newer states coalescing older ones not yet delivered).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from vecdb.cluster.catalog_model import (
    EMPTY_STATE,
    CatalogState,
    CollectionEntry,
    Plan,
    T,
    TenantPlacement,
    log,
)
from vecdb.cluster.catalog_plans import (
    check_addresses,
    check_spec,
    plan_add_tenant_shards,
    plan_create_collection,
    plan_drop_collection,
    plan_drop_tenant,
    plan_init_shards,
    plan_place_tenant,
)
from vecdb.engine import validate as v
from vecdb.engine.tenant_rules import check_tenant_name
from vecdb.errors import InvalidArgument


class Catalog(ABC):
    """The cluster catalog: collections, shard map, tenant placement and an epoch.

    Every change is one compare-and-swap that bumps `epoch`. `state()` answers from a cache
    and never blocks or raises; `watch` callbacks get the current state at once, then each
    newer one in epoch order (states that come faster than callbacks run are coalesced into
    the newest), from a backend thread or the changing thread: keep them short.
    """

    def __init__(self) -> None:
        self._state = EMPTY_STATE  # the cache; replaced whole, never mutated
        self._state_lock = threading.Lock()
        self._notify_lock = threading.RLock()  # callbacks run one state at a time, in order
        self._callbacks: dict[int, Callable[[CatalogState], None]] = {}
        self._next_watch = 0
        self._delivered = -1  # epoch of the last state handed to the callbacks
        self.connected = True  # the store answers (EtcdCatalog: its watch is up)

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
