"""Public value types of vecdb: metrics, search results, records and collection info.

This module is a leaf: it imports nothing from vecdb. It owns the shapes that cross every
boundary (engine, SDK, wire) and must not hold behaviour beyond small conversions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Id = int | str
Payload = dict[str, Any]


class Metric(enum.StrEnum):
    """Distance metric of a collection. Smaller distance is always better."""

    L2 = "l2"  # squared euclidean distance
    IP = "ip"  # negative inner product
    COSINE = "cosine"  # 1 - cosine similarity


class IdType(enum.StrEnum):
    """Type of the user-facing ids of a collection."""

    INT = "int"
    STR = "str"


class IndexKind(enum.StrEnum):
    """Index kinds a dense collection can use."""

    FLAT = "flat"
    SPANN = "spann"
    MULTIVECTOR = "multivector"  # the index of kind="multivector" collections (documents)


class CollectionKind(enum.StrEnum):
    """What a collection stores: one vector per id, or a matrix per document."""

    DENSE = "dense"
    MULTIVECTOR = "multivector"


@dataclass(frozen=True)
class SearchResult:
    """Top-k of a batch of queries: `ids` (nq, k) padded with -1 (or None for str ids),
    `distances` (nq, k) float32 padded with +inf. Row i answers query i."""

    ids: npt.NDArray[Any]
    distances: npt.NDArray[np.float32]
    payloads: list[list[Payload | None]] | None = None  # with_payload: one per column
    # with_vectors: the stored vector of each result (None where padded), else None
    vectors: list[list[npt.NDArray[np.float32] | None]] | None = None
    # what the call did, summed over its queries: with `with_stats=True` a search's reads
    # (`queries`, `postings_read`, `bytes_read`, ... and the tenant walk's `tenant_*`
    # counters); a search_documents' candidates, docs_scored, docs_refined, tokens_scored,
    # bytes_read (maxsim_work_saved and exact averaged); else None
    stats: dict[str, float] | None = None
    # Why the answer came from an exact scan while a corrupt index is rebuilt ("" normally).
    degraded: str = ""
    # Through a router with allow_partial=True: the shards that did not answer (addresses).
    missing_shards: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class Count(int):
    """What `count` returns: the number (an int in every way) and, through a router with
    `allow_partial=True`, the shards that did not answer (`missing_shards`, their addresses;
    empty when every shard counted)."""

    missing_shards: list[str]

    def __new__(cls, value: int, missing_shards: Iterable[str] = ()) -> Count:
        out = super().__new__(cls, value)
        out.missing_shards = list(missing_shards)
        return out


@dataclass(frozen=True)
class Record:
    """One stored point as returned by `get` and `scroll`; `vector` is None when the call
    asked for no vectors (`with_vectors=False`)."""

    id: Id
    vector: npt.NDArray[np.float32] | None
    payload: Payload | None = None


@dataclass(frozen=True)
class Document:
    """One stored document of a multivector collection, as returned by `get_documents`:
    its token matrix (n, dim) float32 exactly as upserted (None with `with_tokens=False`),
    its per-token weights if it was given some, and its payload."""

    id: Id
    tokens: npt.NDArray[np.float32] | None
    payload: Payload | None = None
    weights: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class CollectionInfo:
    """Description of a collection as returned by `get_collection` / `list_collections`."""

    name: str
    dim: int
    metric: Metric
    kind: CollectionKind = CollectionKind.DENSE
    id_type: IdType = IdType.INT
    index: IndexKind = IndexKind.FLAT
    count: int = 0
    multi_tenant: bool = False
    index_params: dict[str, Any] = field(default_factory=dict)
    indexed: int = 0  # points inside the index
    buffered: int = 0  # points still in the exact write buffer, waiting to be indexed
    # "ready" (all indexed, nothing pending), "idle" (writes wait for a trigger), "building"
    # (first build), "indexing" (buffer being applied), "maintaining", "error"
    index_state: str = "ready"
    index_progress: float = 1.0  # fraction of the running index job done, 0..1
    last_build_seconds: float | None = None  # duration of the last bulk build, if any
    payload_indexes: dict[str, str] = field(default_factory=dict)  # field path -> index type


@dataclass(frozen=True)
class SnapshotInfo:
    """One complete snapshot of a collection, as returned by `create_snapshot` and
    `list_snapshots`: the collection's points and index at sequence number `seq`."""

    name: str  # the snapshot's name, unique within its collection
    collection: str  # the collection it was taken of
    seq: int  # the database sequence number the snapshot holds the state of
    created: float  # unix seconds when it was taken
    bytes: int  # size of its files on disk


@dataclass(frozen=True)
class TenantInfo:
    """One tenant of a multi-tenant collection, as returned by `get_tenant`, `list_tenants`
    and `create_tenant`."""

    name: str
    vectors: int = 0  # live points it may see (owned and granted)
    owned: int = 0  # live points it owns
    bytes: int = 0  # float32 vector bytes of the points it owns
    state: str = "active"  # "active" | "dropping" (its cleanup runs in the background)
    nodes: int = 0  # nodes of its sub-tree in the tenant-aware index (0 when it has none)
    progress: float = 1.0  # fraction of a drop's cleanup done, 0..1 (1.0 when active)
    created: float = 0.0  # unix seconds when it was created
    max_vectors: int = 0  # quota on `vectors`: writes past it are refused (0: unlimited)
    max_bytes: int = 0  # quota on `bytes` (0: unlimited)
