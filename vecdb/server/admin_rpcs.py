"""The API-key RPCs of `vecdb.v1.VectorDB` (CreateApiKey, ListApiKeys, RevokeApiKey), as a
mixin of the servicer.

The interceptor has already checked that the caller holds an admin key bound to no tenant or
collection; these methods only translate between the wire and the `KeyRing` the app attaches
with `attach_keys` (the same object the interceptor authenticates with, so a created or revoked
key takes effect on the next call). Must not import the engine.
"""

from __future__ import annotations

import grpc

from vecdb.errors import FailedPrecondition, InvalidArgument
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.auth import KeyRing, KeySpec, Role

_WIRE_ROLE = {Role.READ: pb.KEY_ROLE_READ, Role.WRITE: pb.KEY_ROLE_WRITE,
              Role.ADMIN: pb.KEY_ROLE_ADMIN}  # fmt: skip


def key_info(spec: KeySpec) -> pb.ApiKeyInfo:
    """The wire description of a key (never its digest or secret)."""
    return pb.ApiKeyInfo(id=spec.id, role=_WIRE_ROLE[spec.role], tenants=spec.tenants,
                         collections=spec.collections, description=spec.description,
                         created=spec.created, source=spec.source)  # fmt: skip


class ApiKeyRpcs:
    """CreateApiKey / ListApiKeys / RevokeApiKey over an attached `KeyRing`."""

    _keyring: KeyRing | None = None  # set by attach_keys

    def attach_keys(self, keyring: KeyRing) -> None:
        """Serve key management from `keyring` (the interceptor's)."""
        self._keyring = keyring

    def _ring(self) -> KeyRing:
        if self._keyring is None:
            raise FailedPrecondition("this server does not manage API keys",
                                     reason="AUTH_DISABLED")  # fmt: skip
        return self._keyring

    def CreateApiKey(
        self, req: pb.CreateApiKeyRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        role = next((r for r, w in _WIRE_ROLE.items() if w == req.role), None)
        if role is None:
            raise InvalidArgument(f"role {req.role} is not one of KEY_ROLE_READ, "
                                  "KEY_ROLE_WRITE, KEY_ROLE_ADMIN", field="role",
                                  reason="BAD_ROLE")  # fmt: skip
        spec, secret = self._ring().create(role, req.tenants, req.collections, req.description)
        return pb.CreateApiKeyResponse(info=key_info(spec), key=secret)

    def ListApiKeys(
        self, req: pb.ListApiKeysRequest, ctx: grpc.ServicerContext
    ) -> pb.ListApiKeysResponse:
        return pb.ListApiKeysResponse(keys=[key_info(s) for s in self._ring().list_keys()])

    def RevokeApiKey(
        self, req: pb.RevokeApiKeyRequest, ctx: grpc.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        self._ring().revoke(req.id)
        return pb.RevokeApiKeyResponse()
