"""API-key management from the remote clients: `create_api_key`, `list_api_keys`,
`revoke_api_key` (mixins of `RemoteClient` and `AsyncClient`).

These call the admin RPCs of a server (docs/SECURITY.md); the caller needs an admin key bound
to no tenant or collection. An embedded database has no keys, so an `AsyncClient` over a
local target answers FailedPrecondition and `LocalClient` has no such methods. The secret of a
new key is in `ApiKey.key`, returned once: the server keeps only its digest. Imports only
`vecdb.rpc` for the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vecdb.errors import FailedPrecondition, InvalidArgument, echo
from vecdb.rpc.v1 import vecdb_pb2 as pb

ROLES = ("read", "write", "admin")
_WIRE = {"read": pb.KEY_ROLE_READ, "write": pb.KEY_ROLE_WRITE, "admin": pb.KEY_ROLE_ADMIN}


@dataclass(frozen=True)
class ApiKeyInfo:
    """One key as the server describes it (never its secret)."""

    id: str  # "key_<hex>" (created over the wire) or "cfg_<hex>" (from the config)
    role: str  # "read" | "write" | "admin"
    tenants: tuple[str, ...]  # empty: every tenant
    collections: tuple[str, ...]  # empty: every collection
    description: str
    created: float  # unix seconds (0 for config keys)
    source: str  # "config" | "runtime"


@dataclass(frozen=True)
class ApiKey:
    """A key just created: its description and its secret (shown only this once)."""

    info: ApiKeyInfo
    key: str  # send as `api_key=` / `authorization: Bearer <key>`


def create_request(
    role: str, tenants: Iterable[str] | None, collections: Iterable[str] | None,
    description: str,
) -> pb.CreateApiKeyRequest:  # fmt: skip
    if role not in _WIRE:
        raise InvalidArgument(f"role={echo(role)} is not one of {', '.join(ROLES)}",
                              field="role", reason="BAD_ROLE")  # fmt: skip
    return pb.CreateApiKeyRequest(role=_WIRE[role], tenants=_names(tenants, "tenants"),
                                  collections=_names(collections, "collections"),
                                  description=description)  # fmt: skip


def _names(values: Iterable[str] | None, field: str) -> list[str]:
    """A key's scope as a list of names. A single string is refused: iterated, "acme"
    would bind the key to the tenants "a", "c", "e" and "m"."""
    if isinstance(values, (str, bytes)):
        raise InvalidArgument(f"{field} must be a list of names, not one string "
                              f"({field}=[{echo(values)}])", field=field)  # fmt: skip
    return list(values or ())


def key_info(msg: pb.ApiKeyInfo) -> ApiKeyInfo:
    role = next((name for name, wire in _WIRE.items() if wire == msg.role), "unknown")
    return ApiKeyInfo(msg.id, role, tuple(msg.tenants), tuple(msg.collections),
                      msg.description, msg.created, msg.source)  # fmt: skip


class ApiKeyMethods:
    """Key management for `RemoteClient` (uses its `_call`)."""

    _call: Callable[..., Any]  # RemoteClient's

    def create_api_key(
        self, role: str, *, tenants: Iterable[str] | None = None,
        collections: Iterable[str] | None = None, description: str = "",
    ) -> ApiKey:  # fmt: skip
        """A new key with `role` ("read" | "write" | "admin"), bound to `tenants` and
        `collections` if given (else all). Effective at once, kept across restarts."""
        req = create_request(role, tenants, collections, description)
        resp = self._call("CreateApiKey", req, idempotent=False)
        return ApiKey(key_info(resp.info), resp.key)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        """Every key the server knows, without secrets."""
        resp = self._call("ListApiKeys", pb.ListApiKeysRequest(), idempotent=True)
        return [key_info(k) for k in resp.keys]

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke a key created over the wire; calls presenting it fail from now on."""
        self._call("RevokeApiKey", pb.RevokeApiKeyRequest(id=key_id), idempotent=False)


class AsyncApiKeyMethods:
    """Key management for `AsyncClient` (uses its `_call`; local targets have no keys)."""

    _local: Any  # AsyncClient's embedded client, None when remote
    _call: Callable[..., Awaitable[Any]]  # AsyncClient's

    def _remote_only(self) -> None:
        if self._local is not None:
            raise FailedPrecondition("API keys exist only on a server; this client is embedded",
                                     reason="AUTH_DISABLED")  # fmt: skip

    async def create_api_key(
        self, role: str, *, tenants: Iterable[str] | None = None,
        collections: Iterable[str] | None = None, description: str = "",
    ) -> ApiKey:  # fmt: skip
        """See `ApiKeyMethods.create_api_key`."""
        self._remote_only()
        req = create_request(role, tenants, collections, description)
        resp = await self._call("CreateApiKey", req, idempotent=False)
        return ApiKey(key_info(resp.info), resp.key)

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        """See `ApiKeyMethods.list_api_keys`."""
        self._remote_only()
        resp = await self._call("ListApiKeys", pb.ListApiKeysRequest(), idempotent=True)
        return [key_info(k) for k in resp.keys]

    async def revoke_api_key(self, key_id: str) -> None:
        """See `ApiKeyMethods.revoke_api_key`."""
        self._remote_only()
        await self._call("RevokeApiKey", pb.RevokeApiKeyRequest(id=key_id), idempotent=False)
