"""The SDK's `Client` contract: the same methods embedded (local) and remote (gRPC).

Owns the method names, signatures and docstrings users see (API.md). Implementations:
`vecdb.client.local.LocalClient` (in-process engine) and `vecdb.client.remote.RemoteClient`.
Must not import the engine or grpc.
"""

from __future__ import annotations

import abc
from typing import Any

from vecdb.types import (
    CollectionInfo,
    Count,
    Document,
    Id,
    Record,
    SearchResult,
    SnapshotInfo,
    TenantInfo,
)

DEFAULT_TENANT_PAGE = 100  # list_tenants page size


class Client(abc.ABC):
    """A connection to a vecdb database. Also a context manager that closes on exit."""

    @abc.abstractmethod
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        id_type: str = "int",
        index: str | None = None,
        index_params: dict[str, Any] | None = None,
        kind: str = "dense",
        multi_tenant: bool = False,
        exist_ok: bool = False,
    ) -> CollectionInfo:
        """Create a collection of `dim`-dimensional vectors compared by `metric`. With
        `exist_ok`, an existing collection of the same settings is returned instead of
        `AlreadyExists` (different settings: `AlreadyExists` naming the setting)."""

    @abc.abstractmethod
    def collection_exists(self, name: str) -> bool:
        """Whether a collection of this name exists."""

    @abc.abstractmethod
    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, sorted by name."""

    @abc.abstractmethod
    def get_collection(self, name: str) -> CollectionInfo:
        """One collection's description; `NotFound` if it does not exist."""

    @abc.abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its points."""

    @abc.abstractmethod
    def upsert(
        self,
        name: str,
        ids: Any,
        vectors: Any,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        """Insert or replace points; returns how many were written. Durable on return. In a
        multi-tenant collection `tenant` (required) owns them and `grant_to` names more
        tenants that may see them; a point owned by another tenant is `PermissionDenied`."""

    @abc.abstractmethod
    def get(
        self, name: str, ids: Any, *, with_vectors: bool = True, tenant: str | None = None
    ) -> list[Record]:
        """The stored points among `ids`, in request order; missing ids are omitted (and,
        with a tenant, ids it may not see). `with_vectors=False` leaves `Record.vector` None."""

    @abc.abstractmethod
    def delete(
        self,
        name: str,
        ids: Any = None,
        *,
        filter: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> int:
        """Delete the points with these ids, or those the filter selects (exactly one of
        `ids` and `filter`); idempotent; returns how many were deleted. With a tenant, only
        points it owns (one it may only see is `PermissionDenied`)."""

    @abc.abstractmethod
    def count(
        self,
        name: str,
        filter: dict[str, Any] | None = None,
        *,
        tenant: str | None = None,
        allow_partial: bool = False,
    ) -> Count:
        """Number of points in the collection (that the filter selects and the tenant may
        see, if given), as a `Count` (an int). `allow_partial` (through a router): count on
        the shards that answered and name the others in `Count.missing_shards` instead of
        raising Unavailable; a single node is never partial."""

    @abc.abstractmethod
    def scroll(
        self,
        name: str,
        *,
        filter: dict[str, Any] | None = None,
        limit: int = 1000,
        offset: Id | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> tuple[list[Record], Id | None]:
        """A page of up to `limit` (1..10000) points in ascending id order (int ids
        numerically, str ids by UTF-8 bytes), from the id `offset` on (inclusive); returns
        the records and the `offset` of the next page (None after the last)."""

    @abc.abstractmethod
    def set_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        """Merge `payload`'s top-level keys into each existing point's payload; missing ids
        are skipped; returns how many points were updated. Durable on return."""

    @abc.abstractmethod
    def overwrite_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        """Replace each existing point's payload with `payload`; missing ids are skipped;
        returns how many points were updated. Durable on return."""

    @abc.abstractmethod
    def create_payload_index(self, name: str, key: str, type: str) -> None:
        """Index the payload field `key` (a dotted path) of type "int" | "float" | "str" |
        "bool", so filters on it select points without reading payloads. Idempotent for
        the same type; another type is `AlreadyExists`."""

    @abc.abstractmethod
    def drop_payload_index(self, name: str, key: str) -> None:
        """Remove the payload index on `key` (`NotFound` if there is none)."""

    @abc.abstractmethod
    def optimize(self, name: str, wait: bool = True) -> None:
        """Ask the background worker for the collection's pending index work now (bulk build,
        buffer drain, maintenance). With `wait` (default) return once it is done; with
        `wait=False` return at once (`get_collection` shows the state and progress)."""

    @abc.abstractmethod
    def search(
        self,
        name: str,
        queries: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        with_vectors: bool = False,
        tenant: str | None = None,
        tenants: list[str] | None = None,
        with_stats: bool = False,
        allow_partial: bool = False,
    ) -> SearchResult:
        """Top-k nearest points of each query ((d,) or (nq, d)); smaller distance is better.
        `filter` restricts the points (docs/FILTERS.md); `with_payload` / `with_vectors` add
        the results' payloads / stored vectors. In a multi-tenant collection `tenant` (or
        `tenants`, their union) restricts it to the points granted to them. `with_stats`
        fills `SearchResult.stats` with what the call read (postings, bytes, the tenant
        walk's `tenant_*` counters). `allow_partial` (through a router): answer from the shards
        that answered and name the others in `SearchResult.missing_shards` instead of
        raising Unavailable; a single node is never partial."""

    @abc.abstractmethod
    def stats(self, name: str | None = None) -> dict[str, Any]:
        """Numbers about one collection or the whole database."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection (and, embedded, the data directory)."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- documents (kind="multivector" collections; vecdb.client.documents) ---------------

    @abc.abstractmethod
    def upsert_documents(
        self,
        name: str,
        ids: Any,
        documents: Any,
        weights: Any = None,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        """Insert or replace documents: `documents[i]` an (n_i, dim) token matrix (at most
        4096 tokens; 65536 a request), `weights[i]` None or n_i per-token salience values
        (used by index-time pruning), `payloads[i]` a JSON object or None. In a multi-tenant
        collection `tenant` (required) owns them and `grant_to` names more tenants that may
        see them, as for `upsert`."""

    @abc.abstractmethod
    def search_documents(
        self,
        name: str,
        query: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        tenant: str | None = None,
        tenants: list[str] | None = None,
        allow_partial: bool = False,
    ) -> SearchResult:
        """Top-k documents by MaxSim (sum over query tokens of the best token similarity) for
        a query (m, dim) or a list of them. `distances` holds the negated MaxSim score, so
        smaller is better as for dense search; `stats` what the search did. `params`:
        nprobe, centroid_threshold, ndocs, hamming_keep, rerank, query_keep, refine
        (PARAMS.md). In a multi-tenant collection `tenant` (or `tenants`, their union)
        restricts it to the documents granted to them. `allow_partial`: as for `search`."""

    @abc.abstractmethod
    def get_documents(
        self,
        name: str,
        ids: Any,
        *,
        with_tokens: bool = True,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> list[Document]:
        """The stored documents among `ids`, in request order (missing ids omitted and, with
        a tenant, ids it may not see): tokens exactly as upserted, weights if given, payload."""

    # -- snapshots ------------------------------------------------------------------------

    @abc.abstractmethod
    def create_snapshot(self, name: str) -> SnapshotInfo:
        """A consistent snapshot of collection `name` at one sequence number, taken while
        writes and searches go on; `ResourceExhausted` if the disk lacks room for it."""

    @abc.abstractmethod
    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """The complete snapshots of collection `name`, oldest first (they outlive a dropped
        collection)."""

    @abc.abstractmethod
    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Replace collection `name` (or recreate it) with its snapshot `snapshot`, after
        checking every file's sha256; the collection is briefly `Unavailable` meanwhile."""

    @abc.abstractmethod
    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete snapshot `snapshot` of collection `name`."""

    # -- tenants (a collection created with multi_tenant=True) ------------------------------

    @abc.abstractmethod
    def create_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        """Register a tenant (1-64 of A-Z a-z 0-9 _ . -); `AlreadyExists` if it exists or
        is still being dropped. `max_vectors` (points it may see) and `max_bytes` (vector
        bytes it owns) are stored quotas: an upsert or grant past one is
        `ResourceExhausted`; 0 is unlimited, None the server's `[quotas]` default
        (embedded: unlimited)."""

    @abc.abstractmethod
    def update_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        """Change a tenant's stored quotas (None: unchanged, 0: unlimited); admin only. A
        limit below what it holds is accepted and only stops its growth."""

    @abc.abstractmethod
    def list_tenants(
        self, name: str, *, limit: int = DEFAULT_TENANT_PAGE, offset: str | None = None
    ) -> tuple[list[TenantInfo], str | None]:
        """A page of tenants in name order from `offset` (inclusive); returns the tenants
        and the `offset` of the next page (None after the last)."""

    @abc.abstractmethod
    def get_tenant(self, name: str, tenant: str) -> TenantInfo:
        """One tenant's numbers (state "dropping" while its cleanup runs)."""

    @abc.abstractmethod
    def drop_tenant(self, name: str, tenant: str) -> None:
        """Drop a tenant: at once no call sees it or the points it owned; the cleanup runs
        in the background (`get_tenant` shows its progress)."""

    @abc.abstractmethod
    def grant(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        """Let `tenant` see these points; idempotent; returns how many changed. `owner` is
        the caller, who must own every point (None: an admin call over any point)."""

    @abc.abstractmethod
    def revoke(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        """Take `tenant`'s access to these points away; idempotent; returns how many
        changed. An owner's access to its own points cannot be revoked."""
