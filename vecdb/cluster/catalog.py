"""The cluster catalog (issue 14): collections, the shard map, tenant placement, an epoch.

The public face of the catalog: the interface and data model (`catalog_base`), the etcd
store (`catalog_etcd`) and the in-process one (`catalog_memory`). Routers and shards import
from here.
"""

from __future__ import annotations

from vecdb.cluster.catalog_base import (
    Catalog,
    CatalogState,
    CatalogUnavailable,
    CollectionEntry,
    TenantPlacement,
)
from vecdb.cluster.catalog_etcd import EtcdCatalog
from vecdb.cluster.catalog_memory import MemoryCatalog

__all__ = [
    "Catalog",
    "CatalogState",
    "CatalogUnavailable",
    "CollectionEntry",
    "EtcdCatalog",
    "MemoryCatalog",
    "TenantPlacement",
]
