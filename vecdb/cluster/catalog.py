"""The cluster catalog (issue 14): collections, the shard map, tenant placement, an epoch.

The public face of the catalog: the interface (`catalog_base`) and data model (`catalog_model`), the etcd
store (`catalog_etcd`, keys in `catalog_keys`) and the in-process one (`catalog_memory`);
the rules of each change are `catalog_plans`. Routers and shards import
from here.
"""

from __future__ import annotations

from vecdb.cluster.catalog_base import Catalog
from vecdb.cluster.catalog_etcd import EtcdCatalog
from vecdb.cluster.catalog_memory import MemoryCatalog
from vecdb.cluster.catalog_model import (
    CatalogState,
    CatalogUnavailable,
    CollectionEntry,
    TenantPlacement,
)

__all__ = [
    "Catalog",
    "CatalogState",
    "CatalogUnavailable",
    "CollectionEntry",
    "EtcdCatalog",
    "MemoryCatalog",
    "TenantPlacement",
]
