"""Snapshots from the remote clients: `create_snapshot`, `list_snapshots`, `restore_snapshot`,
`delete_snapshot` (mixins of `RemoteClient` and `AsyncClient`).

A snapshot is the server's (README, "Snapshots"): these only build the requests and read the
answers, with the long-call deadline for create and restore, which copy or swap files. An
`AsyncClient` over a local target hands the call to its embedded client. Imports only
`vecdb.rpc` for the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from vecdb.client import requests as rq
from vecdb.client.channel import long_call_timeout
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb


def snapshot_info(msg: pb.SnapshotInfo) -> Any:
    """A `vecdb.types.SnapshotInfo` from its message."""
    import vecdb.types as types

    return types.SnapshotInfo(**convert.snapshot_fields(msg))  # type: ignore[attr-defined,unused-ignore]


class RemoteSnapshotMethods:
    """Snapshots for `RemoteClient` (uses its `_call` and `_timeout`)."""

    _call: Callable[..., Any]  # RemoteClient's
    _timeout: float | None  # RemoteClient's deadline (None: the default)

    def create_snapshot(self, name: str) -> Any:
        req = pb.CreateSnapshotRequest(collection=rq.name_arg(name))
        resp = self._call("CreateSnapshot", req, idempotent=False,
                          timeout=long_call_timeout(self._timeout))  # fmt: skip
        return snapshot_info(resp.snapshot)

    def list_snapshots(self, name: str) -> list[Any]:
        req = pb.ListSnapshotsRequest(collection=rq.name_arg(name))
        return [
            snapshot_info(s) for s in self._call("ListSnapshots", req, idempotent=True).snapshots
        ]

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        req = rq.snapshot_request(pb.RestoreSnapshotRequest, name, snapshot)
        self._call("RestoreSnapshot", req, idempotent=True,
                   timeout=long_call_timeout(self._timeout))  # fmt: skip

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        req = rq.snapshot_request(pb.DeleteSnapshotRequest, name, snapshot)
        self._call("DeleteSnapshot", req, idempotent=False)


class AsyncSnapshotMethods:
    """Snapshots for `AsyncClient` (uses its `_call` and `_timeout`, or `_local_call` when
    its target is embedded)."""

    _local: Any  # AsyncClient's embedded client, None when remote
    _local_call: Callable[..., Awaitable[Any]]  # AsyncClient's
    _call: Callable[..., Awaitable[Any]]  # AsyncClient's
    _timeout: float | None  # AsyncClient's deadline (None: the default)

    async def create_snapshot(self, name: str) -> Any:
        """See `vecdb.Client.create_snapshot`."""
        if self._local is not None:
            return await self._local_call("create_snapshot", name)
        req = pb.CreateSnapshotRequest(collection=rq.name_arg(name))
        resp = await self._call("CreateSnapshot", req, idempotent=False,
                                timeout=long_call_timeout(self._timeout))  # fmt: skip
        return snapshot_info(resp.snapshot)

    async def list_snapshots(self, name: str) -> list[Any]:
        """See `vecdb.Client.list_snapshots`."""
        if self._local is not None:
            return await self._local_call("list_snapshots", name)  # type: ignore[no-any-return]
        req = pb.ListSnapshotsRequest(collection=rq.name_arg(name))
        resp = await self._call("ListSnapshots", req, idempotent=True)
        return [snapshot_info(s) for s in resp.snapshots]

    async def restore_snapshot(self, name: str, snapshot: str) -> None:
        """See `vecdb.Client.restore_snapshot`."""
        if self._local is not None:
            await self._local_call("restore_snapshot", name, snapshot)
            return
        req = rq.snapshot_request(pb.RestoreSnapshotRequest, name, snapshot)
        await self._call("RestoreSnapshot", req, idempotent=True,
                         timeout=long_call_timeout(self._timeout))  # fmt: skip

    async def delete_snapshot(self, name: str, snapshot: str) -> None:
        """See `vecdb.Client.delete_snapshot`."""
        if self._local is not None:
            await self._local_call("delete_snapshot", name, snapshot)
            return
        req = rq.snapshot_request(pb.DeleteSnapshotRequest, name, snapshot)
        await self._call("DeleteSnapshot", req, idempotent=False)
