"""API-key authentication and the read/write authorisation rule of the server.

Keys come from the config (`auth.admin_key`, `auth.read_only_keys`); only their SHA-256
digests are kept in memory and presented keys are compared with `hmac.compare_digest`, so
neither timing nor a heap dump reveals them. A caller sends `authorization: Bearer <key>` (or
`api-key: <key>`, the alias Qdrant users know). With no key configured, every caller is admin
(the server then should listen on loopback only). This module decides; the interceptor in
`vecdb.server.interceptors` asks it on the call's metadata, before the body is read. Tenant-scoped keys come later.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Sequence

from vecdb.errors import PermissionDenied, Unauthenticated


class Role(enum.Enum):
    """What a key may do."""

    ADMIN = "admin"  # everything
    READ = "read"  # only the methods in READ_METHODS


# RPCs of vecdb.v1.VectorDB that change nothing; every other method needs an admin key.
READ_METHODS = frozenset({
    "CollectionExists", "ListCollections", "GetCollection", "Get", "Scroll", "Count", "Search",
    "SearchBatch", "ListSnapshots", "Stats",
    "SearchDocuments", "GetDocuments",  # documents (issue 11)
})  # fmt: skip


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The configured keys, hashed, and the checks made on every call."""

    def __init__(self, admin_key: str = "", read_only_keys: Iterable[str] = ()) -> None:
        self._keys: list[tuple[bytes, Role]] = []  # (sha256 of key, role)
        if admin_key:
            self._keys.append((_digest(admin_key), Role.ADMIN))
        for key in read_only_keys:
            if key:
                self._keys.append((_digest(key), Role.READ))

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (otherwise the server is open)."""
        return bool(self._keys)

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Role:
        """The role of the key presented in `metadata`, or `Unauthenticated`."""
        if not self._keys:
            return Role.ADMIN
        presented = presented_key(metadata)
        if presented is None:
            raise Unauthenticated(
                "missing API key: send 'authorization: Bearer <key>'", reason="MISSING_KEY"
            )
        digest = _digest(presented)
        role: Role | None = None
        for known, known_role in self._keys:  # no early exit: constant work per key
            if hmac.compare_digest(known, digest):
                role = known_role
        if role is None:
            raise Unauthenticated("invalid API key", reason="INVALID_KEY")
        return role

    @staticmethod
    def authorize(role: Role, method: str) -> None:
        """Raise `PermissionDenied` unless `role` may call `method` (the bare RPC name)."""
        if role is Role.READ and method not in READ_METHODS:
            raise PermissionDenied(
                f"this API key is read-only and may not call {method}", reason="READ_ONLY_KEY"
            )


def presented_key(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The key in `authorization: Bearer <key>` or `api-key: <key>`, if any."""
    for name, value in metadata or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        lname = name.lower()
        if lname == "authorization":
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif lname == "api-key" and text.strip():
            return text.strip()
    return None
