"""API keys: who the caller is (a `Principal`: role, tenants, collections) and which RPCs a
role may call.

Keys come from the config (`auth.admin_key`, `auth.read_only_keys`, `[[auth.keys]]` entries
with a role and optional tenant and collection sets) and from the runtime key file an admin
manages over the wire (`vecdb.server.auth_keys`). Only SHA-256 digests are kept: a presented
key is hashed and looked up by digest, then compared with `hmac.compare_digest`, so neither
timing nor a heap dump reveals a key (the digest of a high-entropy key is not invertible, so a
lookup that takes longer for some digests tells an attacker nothing usable). A caller sends
`authorization: Bearer <key>` (or `api-key: <key>`). With no key configured or stored, every
caller is an unscoped admin (the server then should listen on loopback only). This module
decides on the metadata alone; what a scoped key may name inside a request is
`vecdb.server.auth_scope`. Must not import the engine.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vecdb.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    echo,
)
from vecdb.server.auth_keys import KeyFile

MAX_API_KEYS = 10_000  # keys an admin may create at runtime (config keys not counted)
MAX_SCOPE_NAMES = 1_000  # tenants or collections one key may be bound to
MAX_NAME_CHARS = 256  # a tenant or collection name in a key's scope
MAX_DESCRIPTION_CHARS = 256  # the free text of a runtime key


class Role(enum.Enum):
    """What a key may do; each role includes the ones below it."""

    READ = "read"  # the methods in READ_METHODS
    WRITE = "write"  # read + the methods in WRITE_METHODS
    ADMIN = "admin"  # everything

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}

# RPCs of vecdb.v1.VectorDB by the least role that may call them; any other method (including
# ones added later and not listed here) needs an admin key: the table fails closed.
READ_METHODS = frozenset({
    "CollectionExists", "ListCollections", "GetCollection", "Get", "Scroll", "Count", "Search",
    "SearchBatch", "SearchStream", "ListSnapshots", "Stats", "GetTenant", "ListTenants",
    "SearchDocuments", "GetDocuments", "GetRoute",
})  # fmt: skip
WRITE_METHODS = frozenset({
    "Upsert", "UpsertStream", "Delete", "SetPayload", "OverwritePayload", "Grant", "Revoke",
    "UpsertDocuments",
})  # fmt: skip
KEY_METHODS = frozenset({"CreateApiKey", "ListApiKeys", "RevokeApiKey"})  # unscoped admins only


def required_role(method: str) -> Role:
    """The least role that may call `method` (the bare RPC name)."""
    if method in READ_METHODS:
        return Role.READ
    if method in WRITE_METHODS:
        return Role.WRITE
    return Role.ADMIN


@dataclass(frozen=True)
class Principal:
    """The caller as its key describes it."""

    role: Role
    key_id: str = ""  # public id of the key ("" on an open server)
    tenants: frozenset[str] | None = None  # tenants it may name; None: any
    collections: frozenset[str] | None = None  # collections it may touch; None: any

    @property
    def scoped(self) -> bool:
        """Whether the key is bound to tenants or collections."""
        return self.tenants is not None or self.collections is not None


OPEN = Principal(Role.ADMIN)  # the caller of a server without keys


@dataclass(frozen=True)
class KeySpec:
    """One key as the server keeps it: never the key itself, only its digest."""

    id: str  # public handle: "key_<hex>" (runtime) or "cfg_<hex>" (config)
    digest: bytes  # SHA-256 of the key
    role: Role
    tenants: tuple[str, ...] = ()  # sorted; empty: every tenant
    collections: tuple[str, ...] = ()  # sorted; empty: every collection
    description: str = ""
    created: float = 0.0  # unix seconds (0 for config keys)
    source: str = "config"  # "config" | "runtime"

    def principal(self) -> Principal:
        return Principal(
            self.role, self.id, frozenset(self.tenants) if self.tenants else None,
            frozenset(self.collections) if self.collections else None,
        )  # fmt: skip


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _config_id(d: bytes) -> str:
    return "cfg_" + d[:6].hex()


def parse_role(value: object, where: str) -> Role:
    """The role named by `value` ("read" | "write" | "admin")."""
    try:
        return Role(str(value).lower()) if isinstance(value, str) else Role(value)
    except ValueError:
        raise InvalidArgument(f"{where}: role={echo(value)} is not one of read, write, admin",
                              field="role", reason="BAD_ROLE") from None  # fmt: skip


def scope_names(values: object, where: str, kind: str) -> tuple[str, ...]:
    """A key's tenant or collection set, checked and sorted (empty: no restriction)."""
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{where}: {kind} must be a list of names", field=kind)
    names = list(values)
    if len(names) > MAX_SCOPE_NAMES:
        raise InvalidArgument(f"{where}: {len(names)} {kind} is more than {MAX_SCOPE_NAMES}",
                              field=kind, reason="TOO_MANY")  # fmt: skip
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(
                f"{where}: {kind}[{i}]={echo(name)} is not a name of 1-{MAX_NAME_CHARS} chars",
                field=f"{kind}[{i}]", reason="BAD_NAME",
            )  # fmt: skip
    return tuple(sorted(set(names)))


def parse_key_entry(entry: Mapping[str, Any], where: str) -> KeySpec:
    """One `[[auth.keys]]` table: key, role, optional tenants, collections, description."""
    unknown = set(entry) - {"key", "role", "tenants", "collections", "description"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown field(s) {sorted(unknown)} (key, role, "
                              "tenants, collections, description)", field=where,
                              reason="UNKNOWN_FIELD")  # fmt: skip
    key = entry.get("key")
    if not isinstance(key, str) or not key.strip() or key != key.strip():
        raise InvalidArgument(
            f"{where}: key must be a non-empty string without spaces around",
            field=f"{where}.key",
            reason="BAD_KEY",
        )
    if "role" not in entry:
        raise InvalidArgument(
            f"{where}: role is required (read, write or admin)",
            field=f"{where}.role",
            reason="BAD_ROLE",
        )
    d = digest(key)
    return KeySpec(
        _config_id(d), d, parse_role(entry["role"], where),
        scope_names(entry.get("tenants"), where, "tenants"),
        scope_names(entry.get("collections"), where, "collections"),
        str(entry.get("description", "")),
    )  # fmt: skip


class KeyRing:
    """Every known key, hashed, and the checks made on every call. Thread-safe: a runtime
    change builds a new table and swaps it in, so a call reads one consistent table."""

    def __init__(
        self,
        admin_key: str = "",
        read_only_keys: Iterable[str] = (),
        keys: Iterable[Mapping[str, Any]] = (),
        store: KeyFile | None = None,
    ) -> None:
        fixed: list[KeySpec] = []
        where: dict[bytes, str] = {}  # digest -> the config entry that set it
        if admin_key:
            d = _config_digest(admin_key, "auth.admin_key", where)
            fixed.append(KeySpec(_config_id(d), d, Role.ADMIN, description="auth.admin_key"))
        for i, key in enumerate(read_only_keys):
            if key:
                d = _config_digest(key, f"auth.read_only_keys[{i}]", where)
                fixed.append(KeySpec(_config_id(d), d, Role.READ,
                                     description="auth.read_only_keys"))  # fmt: skip
        for i, entry in enumerate(keys):
            spec = parse_key_entry(entry, f"auth.keys[{i}]")
            _config_digest(entry["key"], f"auth.keys[{i}].key", where)
            fixed.append(spec)
        self._fixed = fixed  # from the config: cannot be revoked at runtime
        self._store = store  # where runtime keys persist (None: memory only)
        self._lock = threading.Lock()  # serialises runtime changes
        stored = [] if store is None else [_spec_from_record(r) for r in store.load()]
        self._runtime: list[KeySpec] = stored  # created over the wire
        self._table = self._build()  # digest -> (spec, principal), swapped whole on change
        self._live = self._ids()  # ids of the keys in the table (revoked ones leave it)

    def _build(self) -> dict[bytes, tuple[KeySpec, Principal]]:
        table: dict[bytes, tuple[KeySpec, Principal]] = {}
        for spec in (*self._runtime, *self._fixed):  # a config key wins over a stored twin
            table[spec.digest] = (spec, spec.principal())
        return table

    def _ids(self) -> frozenset[str]:
        return frozenset(spec.id for spec, _ in self._table.values())

    @property
    def enabled(self) -> bool:
        """Whether any key is configured or stored (otherwise the server is open)."""
        return bool(self._table)

    @property
    def configured(self) -> bool:
        """Whether the config itself holds keys (runtime key management needs that)."""
        return bool(self._fixed)

    def principal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The caller presenting `metadata`, or `Unauthenticated`."""
        table = self._table
        if not table:
            return OPEN
        presented = presented_key(metadata)
        if presented is None:
            raise Unauthenticated(
                "missing API key: send 'authorization: Bearer <key>'", reason="MISSING_KEY"
            )
        d = digest(presented)
        found = table.get(d)
        if found is None or not hmac.compare_digest(found[0].digest, d):
            raise Unauthenticated("invalid API key", reason="INVALID_KEY")
        return found[1]

    def still_valid(self, who: Principal) -> None:
        """Raise `Unauthenticated` if `who`'s key was revoked since it was checked: a stream
        authenticated when it opened is held to this before each of its messages, so a
        revoked key stops at its stream's next message, not when the stream ends."""
        if who.key_id and who.key_id not in self._live:
            raise Unauthenticated("invalid API key (revoked while this stream was open)",
                                  reason="INVALID_KEY")  # fmt: skip

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Role:
        """The role of the key presented in `metadata`, or `Unauthenticated`."""
        return self.principal(metadata).role

    @staticmethod
    def authorize(who: Principal | Role, method: str) -> None:
        """Raise `PermissionDenied` unless `who` may call `method` (the bare RPC name)."""
        p = who if isinstance(who, Principal) else Principal(who)
        need = required_role(method)
        if p.role.rank < need.rank:
            if p.role is Role.READ:
                raise PermissionDenied(f"this API key is read-only and may not call {method}",
                                       reason="READ_ONLY_KEY")  # fmt: skip
            raise PermissionDenied(f"{method} needs an admin API key; this key's role is "
                                   f"{p.role.value}", reason="ROLE_TOO_LOW")  # fmt: skip
        if method in KEY_METHODS and p.scoped:
            raise PermissionDenied(f"a key bound to tenants or collections may not call "
                                   f"{method}", reason="SCOPED_KEY")  # fmt: skip

    # -- runtime key management (admin RPCs) -----------------------------------------------

    def _check_manageable(self) -> None:
        if not self._fixed:
            raise FailedPrecondition(
                "API keys can be managed only on a server whose config sets keys "
                "(auth.admin_key or an admin [[auth.keys]] entry)", reason="AUTH_DISABLED",
            )  # fmt: skip

    def create(
        self, role: Role, tenants: Iterable[str] = (), collections: Iterable[str] = (),
        description: str = "",
    ) -> tuple[KeySpec, str]:  # fmt: skip
        """A new key: its spec and the secret, which is shown this once and never stored."""
        self._check_manageable()
        t = scope_names(list(tenants), "CreateApiKey", "tenants")
        c = scope_names(list(collections), "CreateApiKey", "collections")
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION_CHARS} chars",
                                  field="description", reason="TOO_LARGE")  # fmt: skip
        secret = "vdb_" + secrets.token_urlsafe(32)  # 256 random bits
        spec = KeySpec("key_" + secrets.token_hex(8), digest(secret), role, t, c, description,
                       round(time.time(), 3), "runtime")  # fmt: skip
        with self._lock:
            if len(self._runtime) >= MAX_API_KEYS:
                raise ResourceExhausted(f"the server holds {MAX_API_KEYS} API keys, its "
                                        "maximum; revoke some first", reason="TOO_MANY_KEYS")  # fmt: skip
            self._commit([*self._runtime, spec])
        return spec, secret

    def list_keys(self) -> list[KeySpec]:
        """Every key, config keys first, runtime keys by creation time."""
        return [*self._fixed, *sorted(self._runtime, key=lambda s: (s.created, s.id))]

    def revoke(self, key_id: str) -> None:
        """Forget a runtime key; calls presenting it fail from now on."""
        self._check_manageable()
        with self._lock:
            kept = [s for s in self._runtime if s.id != key_id]
            if len(kept) == len(self._runtime):
                if any(s.id == key_id for s in self._fixed):
                    raise FailedPrecondition(f"key {echo(key_id)} comes from the config; "
                                             "remove it there", reason="CONFIG_KEY")  # fmt: skip
                raise NotFound(f"API key {echo(key_id)} does not exist", field="id")
            self._commit(kept)

    def _commit(self, runtime: list[KeySpec]) -> None:
        """Persist `runtime` (under the lock), then make it the live table."""
        if self._store is not None:
            self._store.save([_record_of(s) for s in runtime])
        self._runtime = runtime
        self._table = self._build()
        self._live = self._ids()


def _config_digest(key: str, field: str, seen: dict[bytes, str]) -> bytes:
    """The digest of the config key at `field`, refused (naming the fields, never the key)
    when it has spaces around it (a presented key is stripped, so it could never match) or
    repeats an earlier entry's key (one of the two roles or scopes would be silently lost)."""
    if key != key.strip():
        raise InvalidArgument(f"{field} has spaces around it: a key is sent without them, so "
                              "this one could never match", field=field, reason="BAD_KEY")  # fmt: skip
    d = digest(key)
    if d in seen:
        raise InvalidArgument(f"{field} is the same key as {seen[d]}: give each entry its own "
                              "key (one key has one role and scope)", field=field,
                              reason="DUPLICATE_KEY")  # fmt: skip
    seen[d] = field
    return d


def _record_of(spec: KeySpec) -> dict[str, Any]:
    return {"id": spec.id, "sha256": spec.digest.hex(), "role": spec.role.value,
            "tenants": list(spec.tenants), "collections": list(spec.collections),
            "description": spec.description, "created": spec.created}  # fmt: skip


def _spec_from_record(rec: Mapping[str, Any]) -> KeySpec:
    spec = KeySpec(str(rec["id"]), bytes.fromhex(str(rec["sha256"])), Role(rec["role"]),
                   tuple(rec.get("tenants", ())), tuple(rec.get("collections", ())),
                   str(rec.get("description", "")), float(rec.get("created", 0.0)))  # fmt: skip
    return replace(spec, source="runtime")


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
