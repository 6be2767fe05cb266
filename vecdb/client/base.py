"""The SDK's `Client` contract: the same methods embedded (local) and remote (gRPC).

Owns the method names, signatures and docstrings users see (API.md). Implementations:
`vecdb.client.local.LocalClient` (in-process engine) and `vecdb.client.remote.RemoteClient`.
Must not import the engine or grpc.
"""

from __future__ import annotations

import abc
from typing import Any

from vecdb.errors import Unimplemented
from vecdb.types import CollectionInfo, Record, SearchResult, SnapshotInfo


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
    ) -> CollectionInfo:
        """Create a collection of `dim`-dimensional vectors compared by `metric`."""

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
    def upsert(self, name: str, ids: Any, vectors: Any, payloads: Any = None) -> int:
        """Insert or replace points; returns how many were written. Durable on return."""

    @abc.abstractmethod
    def get(self, name: str, ids: Any) -> list[Record]:
        """The stored points among `ids`, in request order; missing ids are omitted."""

    @abc.abstractmethod
    def delete(self, name: str, ids: Any) -> int:
        """Delete points; idempotent; returns how many existed."""

    @abc.abstractmethod
    def count(self, name: str) -> int:
        """Number of points in the collection."""

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
    ) -> SearchResult:
        """Top-k nearest points of each query ((d,) or (nq, d)); smaller distance is better."""

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

    # -- snapshots ------------------------------------------------------------------------
    # Not abstract while the remote client gains them (issue 9); a client without them says
    # so with `Unimplemented` instead of failing to construct.

    def create_snapshot(self, name: str) -> SnapshotInfo:
        """A consistent snapshot of collection `name` at one sequence number, taken while
        writes and searches go on; `ResourceExhausted` if the disk lacks room for it."""
        raise Unimplemented(f"{type(self).__name__} does not support create_snapshot")

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """The complete snapshots of collection `name`, oldest first (they outlive a dropped
        collection)."""
        raise Unimplemented(f"{type(self).__name__} does not support list_snapshots")

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Replace collection `name` (or recreate it) with its snapshot `snapshot`, after
        checking every file's sha256; the collection is briefly `Unavailable` meanwhile."""
        raise Unimplemented(f"{type(self).__name__} does not support restore_snapshot")

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete snapshot `snapshot` of collection `name`."""
        raise Unimplemented(f"{type(self).__name__} does not support delete_snapshot")
