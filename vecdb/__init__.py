"""vecdb: a disk-hybrid, multi-tenant vector database.

import vecdb
with vecdb.connect("./vecdb-data") as client:
    client.create_collection("docs", dim=50, metric="cosine")
"""

from __future__ import annotations

from typing import Any

from vecdb.client import Client, connect
from vecdb.errors import (
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VecdbError,
)
from vecdb.types import (
    CollectionInfo,
    Count,
    Metric,
    Record,
    SearchResult,
    SnapshotInfo,
    TenantInfo,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":  # grpc.aio only when asked for
        from vecdb.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'vecdb' has no attribute {name!r}")


__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "Client",
    "CollectionInfo",
    "Count",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Metric",
    "NotFound",
    "PermissionDenied",
    "Record",
    "ResourceExhausted",
    "SearchResult",
    "SnapshotInfo",
    "TenantInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VecdbError",
    "__version__",
    "connect",
]
