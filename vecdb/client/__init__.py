"""The Python SDK: `connect` returns a `Client`, embedded or remote, with the same methods.

Owns the rule that turns a target into a mode (see `connect`); the clients themselves live
in `local` and `remote`, and only the chosen one is imported (grpc only for remote targets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdb.client.base import Client
from vecdb.errors import InvalidArgument

DEFAULT_PORT = 7700  # when a URL ("grpc://host") names no port
MIN_PORT, MAX_PORT = 1, 65_535  # a TCP port (gRPC would dial another port for 99999)
MEMORY = ":memory:"
# URL scheme -> the scheme the remote client takes ("grpcs" means TLS)
SCHEMES = {
    "grpc": "grpc",
    "http": "grpc",  # gRPC over plain HTTP/2, not a REST API
    "grpcs": "grpcs",
    "https": "grpcs",  # gRPC over TLS
}
ACCEPTED = (
    'a directory path (containing a path separator or starting with "." or "~", e.g. '
    '"./vecdb-data", or a pathlib.Path), ":memory:", "host:port", "grpc://host[:port]", '
    '"grpcs://host[:port]", "http://host[:port]" (gRPC, plaintext) or "https://host[:port]" '
    "(gRPC over TLS)"
)
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


@dataclass(frozen=True)
class Target:
    """What `connect` was asked for: a local directory, a temporary database, or a server."""

    kind: str  # "local", "memory" or "remote"
    where: str  # the directory, ":memory:", or "grpc[s]://host:port" for the remote client


def _port_checked(text: str, host_port: re.Match[str]) -> None:
    """Refuse a port outside MIN_PORT..MAX_PORT (the pattern allows any five digits)."""
    port = int(host_port.group(2))
    if not MIN_PORT <= port <= MAX_PORT:
        raise InvalidArgument(
            f"target {text!r}: port {port} is out of range [{MIN_PORT}, {MAX_PORT}]",
            field="target",
        )


def _remote(text: str) -> Target | None:
    url = _URL.match(text)
    if url is not None:
        scheme, rest = url.group(1).lower(), url.group(2).rstrip("/")
        if scheme not in SCHEMES:
            raise InvalidArgument(f"target {text!r}: unknown scheme {scheme!r}; use {ACCEPTED}")
        wire = SCHEMES[scheme]
        host_port = _HOST_PORT.match(rest)
        if host_port is None:
            if not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+", rest):
                raise InvalidArgument(f"target {text!r} is not a server address; use {ACCEPTED}")
            rest = f"{rest}:{DEFAULT_PORT}"
        else:
            _port_checked(text, host_port)
        return Target("remote", f"{wire}://{rest}")
    host_port = _HOST_PORT.match(text)
    if host_port is not None:
        _port_checked(text, host_port)
        return Target("remote", text)
    return None


def resolve(target: str | os.PathLike[str]) -> Target:
    """The mode `target` names. The rule: a `pathlib.Path` (or other path object) is a local
    directory; a string is ":memory:", a URL with one of the schemes above, "host:port", or
    a local path when it contains a path separator or starts with "." or "~". Anything else
    (e.g. "localhost", "mydb": a host without a port or a directory without "./") is
    ambiguous and raises `InvalidArgument` naming the accepted forms."""
    if isinstance(target, os.PathLike):
        return Target("local", os.fspath(target))
    if not isinstance(target, str) or not target:
        raise InvalidArgument(f"target must be a non-empty string or a path; use {ACCEPTED}")
    if target == MEMORY:
        return Target("memory", MEMORY)
    remote = _remote(target)
    if remote is not None:
        return remote
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if target.startswith((".", "~")) or any(s in target for s in seps):
        return Target("local", os.path.expanduser(target))
    raise InvalidArgument(
        f"target {target!r} is ambiguous (a host needs a port, a directory a path such as "
        f"'./{target}'); use {ACCEPTED}"
    )


def _is_remote(target: str) -> bool:
    """Whether `target` names a server (`InvalidArgument` if it is ambiguous)."""
    return resolve(target).kind == "remote"


def connect(
    target: str | os.PathLike[str] = MEMORY,
    *,
    api_key: str | None = None,
    tls: Any = None,
    timeout: float | None = None,
    engine: Mapping[str, Any] | None = None,
    direct_routing: bool = False,
    search_stream: bool = True,
    max_message_bytes: int | None = None,
) -> Client:
    """Open a database: embedded over a directory or ":memory:", or remote over gRPC.

    Accepted targets (see `resolve` for the exact rule): a directory path ("./vecdb-data",
    "/var/lib/vecdb", a `pathlib.Path`; created if missing), ":memory:" (a temporary
    database, deleted when the client is closed or garbage-collected), "host:port",
    "grpc://host:port" and "http://host:port" (gRPC, plaintext), "grpcs://host:port" and
    "https://host:port" (gRPC over TLS; `tls` may add a CA file or client certificate).
    A URL without a port means port 7700. `api_key` and `tls` apply to servers only: given
    with a local target they are `InvalidArgument`. `engine` applies to local targets only:
    the engine settings of the embedded database (`bulk_build_bytes`, `buffer_max_bytes`, ...;
    names and bounds in PARAMS.md, the same as a server's `[engine]` section).
    `direct_routing` (servers only): a router's tenant reads go straight to the tenant's
    shard when it lives on one (`vecdb.client.routes`; README, scale-out).
    `search_stream` (servers only): True sends single searches on one long-lived
    `SearchStream` when it is free (`vecdb.client.search_lane`); False sends every search as
    a `Search` call, e.g. behind a proxy that balances calls, not streams, over servers.
    `max_message_bytes` (servers only): the server's `limits.max_message_bytes` when it is
    not the default 64 MiB; the SDK sends an upsert, document upsert or search larger than
    half of it as several requests (`vecdb.client.splits`).
    """
    t = resolve(target)
    if t.kind == "remote":
        from vecdb.client.remote import RemoteClient  # grpc only when needed

        if engine is not None:
            raise InvalidArgument(
                f"engine settings apply to embedded databases only; {str(target)!r} is a "
                "server, whose engine settings come from its config ([engine] section)",
                field="engine",
            )
        sizes = {} if max_message_bytes is None else {"max_message_bytes": max_message_bytes}
        return RemoteClient(t.where, api_key=api_key, tls=tls, timeout=timeout,
                            direct_routing=direct_routing, search_stream=search_stream,
                            **sizes)  # fmt: skip
    remote_only = (("api_key", api_key, None), ("tls", tls, None),
                   ("direct_routing", direct_routing, False), ("search_stream", search_stream, True),
                   ("max_message_bytes", max_message_bytes, None))  # fmt: skip
    for label, value, default in remote_only:  # None or the default: not given
        if value is not None and value is not default:
            raise InvalidArgument(
                f"{label} applies to remote targets only, but {str(target)!r} is a local "
                f"database; use {ACCEPTED}",
                field=label,
            )
    from vecdb.client.local import LocalClient

    return LocalClient(Path(t.where) if t.kind == "local" else MEMORY, engine=engine)


__all__ = ["Client", "Target", "connect", "resolve"]
