"""The catalog in this process's memory: tests and `vecdb bench --shards`.

Owns nothing but a lock and the current `CatalogState`; the rules of every change are the
shared plans of `catalog_plans`, so it behaves like the etcd catalog minus the network.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from vecdb.cluster.catalog_base import Catalog
from vecdb.cluster.catalog_model import EMPTY_STATE, CatalogState, Plan, T
from vecdb.cluster.catalog_plans import check_addresses


class MemoryCatalog(Catalog):
    """A catalog for one process. `shards`, when given, are set at epoch 0."""

    def __init__(self, shards: Sequence[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()  # changes one at a time
        if shards:
            self._state = CatalogState(
                0,
                check_addresses(list(shards)),
                EMPTY_STATE.collections,
                EMPTY_STATE.dropped,
                EMPTY_STATE.tenants,
            )

    def refresh(self) -> CatalogState:
        return self._state

    def _change(self, plan: Plan[T]) -> T:
        with self._lock:
            state = self._state
            result, delta = plan(state)
            if delta is None:
                return result
            new = delta.apply(state, state.epoch + 1)
            self._state = new
        self._publish(new)
        return result

    def close(self) -> None:
        with self._notify_lock:
            self._callbacks.clear()
