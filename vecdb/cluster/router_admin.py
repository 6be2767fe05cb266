"""The router's whole-collection and admin RPCs: snapshots, optimize, payload indexes, API
keys and stats.

Snapshots are taken on every shard at once; each shard names its own snapshot, so the
router's snapshot name joins the shards' names in shard order with "+" ("s12-...+s9-...+...")
and Restore / Delete split it back. ListSnapshots answers the sets the router can pair up:
each snapshot of shard 0 with, on every other shard, the one taken closest in time (within
PAIR_SECONDS); a set missing on a shard is not listed. Create / Restore / Delete snapshot,
Optimize (unless no_wait) and Create / Drop payload index can run long: when the client set
no deadline, their shard calls get none either (not `default_deadline_s`). Optimize, payload indexes and API key
management go to every shard (keys are then valid on every shard; creating a key on a
sharded cluster gives each shard the same secret only if the shards share a key file, so
`CreateApiKey` through the router is refused: configure keys in each shard's config).
"""

from __future__ import annotations

from typing import Any

import grpc

from vecdb.cluster import merge
from vecdb.cluster.router_base import RouterBase
from vecdb.errors import FailedPrecondition, NotFound
from vecdb.rpc.v1 import vecdb_pb2 as pb

PAIR_SECONDS = 30.0  # a router-made snapshot set: the shards' snapshots taken this close
SEPARATOR = "+"  # joins the shards' snapshot names into the router's


class AdminRpcs(RouterBase):
    """Snapshots, Optimize, payload indexes, API keys and Stats."""

    # -- snapshots -------------------------------------------------------------------------

    def CreateSnapshot(
        self, req: pb.CreateSnapshotRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateSnapshotResponse:
        out = self._each("CreateSnapshot", req, ctx, long=True)
        infos = [out.answers[s].snapshot for s in self._all()]
        return pb.CreateSnapshotResponse(snapshot=_joined(infos))

    def ListSnapshots(
        self, req: pb.ListSnapshotsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        out = self._each("ListSnapshots", req, ctx)
        lists = [list(out.answers[s].snapshots) for s in self._all()]
        resp = pb.ListSnapshotsResponse()
        for first in lists[0]:
            group = [first]
            for other in lists[1:]:
                near = [o for o in other if abs(o.created - first.created) <= PAIR_SECONDS]
                if not near:
                    break
                group.append(min(near, key=lambda o: abs(o.created - first.created)))
            if len(group) == len(lists):
                resp.snapshots.append(_joined(group))
        return resp

    def _split_name(self, collection: str, name: str) -> list[str] | None:
        """The shards' snapshot names in a router's snapshot name. A name of another form
        is no snapshot of this cluster: NotFound, as a node answers an unknown name (None
        for a collection the catalog does not know, which shard 0 names)."""
        parts = name.split(SEPARATOR)
        if len(parts) == len(self._all()):
            return parts
        if self._entry(collection) is None:
            return None
        raise NotFound(
            f"snapshot {name!r} of collection {collection!r} does not exist (a snapshot "
            f"through this router names its {len(self._all())} shards' snapshots joined by "
            f"{SEPARATOR!r})", field="snapshot",
        )  # fmt: skip

    def _per_shard_snapshot(self, method: str, req: Any, ctx: grpc.ServicerContext) -> None:
        names = self._split_name(req.collection, req.snapshot)
        if names is None:
            self._one(method, req, ctx)
            return
        parts = {}
        for shard, name in enumerate(names):
            part = type(req)()
            part.CopyFrom(req)
            part.snapshot = name
            parts[shard] = part
        out = self._shards.fan_out(method, parts, ctx, check=False, long=True)
        if out.errors or out.missing:
            raise self._partial_write(method, out.answers, out.errors, out.missing)

    def RestoreSnapshot(
        self, req: pb.RestoreSnapshotRequest, ctx: grpc.ServicerContext
    ) -> pb.RestoreSnapshotResponse:
        self._per_shard_snapshot("RestoreSnapshot", req, ctx)
        return pb.RestoreSnapshotResponse()

    def DeleteSnapshot(
        self, req: pb.DeleteSnapshotRequest, ctx: grpc.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        self._per_shard_snapshot("DeleteSnapshot", req, ctx)
        return pb.DeleteSnapshotResponse()

    # -- every shard -----------------------------------------------------------------------

    def Optimize(self, req: pb.OptimizeRequest, ctx: grpc.ServicerContext) -> pb.OptimizeResponse:
        self._each("Optimize", req, ctx, long=not req.no_wait)
        return pb.OptimizeResponse()

    def CreatePayloadIndex(
        self, req: pb.CreatePayloadIndexRequest, ctx: grpc.ServicerContext
    ) -> pb.CreatePayloadIndexResponse:
        self._each("CreatePayloadIndex", req, ctx, long=True)
        return pb.CreatePayloadIndexResponse()

    def DropPayloadIndex(
        self, req: pb.DropPayloadIndexRequest, ctx: grpc.ServicerContext
    ) -> pb.DropPayloadIndexResponse:
        self._each("DropPayloadIndex", req, ctx, long=True)
        return pb.DropPayloadIndexResponse()

    def Stats(self, req: pb.StatsRequest, ctx: grpc.ServicerContext) -> pb.StatsResponse:
        out = self._each("Stats", req, ctx)
        per = {self._shards.addresses[s]: out.answers[s].stats for s in sorted(out.answers)}
        return pb.StatsResponse(stats=merge.merge_stats_json(per))

    # -- API keys --------------------------------------------------------------------------

    def CreateApiKey(
        self, req: pb.CreateApiKeyRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        if len(self._all()) == 1:
            return self._one("CreateApiKey", req, ctx)  # type: ignore[no-any-return]
        raise FailedPrecondition(
            "CreateApiKey through a router is not supported: each shard would mint its own "
            "secret; configure keys ([[auth.keys]]) in the shards' and routers' config",
            reason="ROUTER_KEYS",
        )  # fmt: skip

    def ListApiKeys(
        self, req: pb.ListApiKeysRequest, ctx: grpc.ServicerContext
    ) -> pb.ListApiKeysResponse:
        return self._one("ListApiKeys", req, ctx)  # type: ignore[no-any-return]

    def RevokeApiKey(
        self, req: pb.RevokeApiKeyRequest, ctx: grpc.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        self._each("RevokeApiKey", req, ctx)
        return pb.RevokeApiKeyResponse()


def _joined(infos: list[pb.SnapshotInfo]) -> pb.SnapshotInfo:
    """The router's snapshot: names joined, seq and bytes added up, the earliest time."""
    return pb.SnapshotInfo(
        name=SEPARATOR.join(i.name for i in infos), collection=infos[0].collection,
        seq=sum(i.seq for i in infos), created=min(i.created for i in infos),
        bytes=sum(i.bytes for i in infos),
    )  # fmt: skip
