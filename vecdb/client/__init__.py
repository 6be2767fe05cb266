"""The Python SDK: `connect` returns a `Client`, embedded or remote, with the same methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecdb.client.base import Client

_REMOTE_SCHEMES = ("grpc://", "grpcs://")


def _is_remote(target: str) -> bool:
    if target.startswith(_REMOTE_SCHEMES):
        return True
    if target == ":memory:" or "/" in target or target.startswith("."):
        return False
    host, sep, port = target.rpartition(":")
    return bool(sep and host and port.isdigit())


def connect(
    target: str | Path = ":memory:",
    *,
    api_key: str | None = None,
    tls: Any = None,
    timeout: float | None = None,
) -> Client:
    """Open a database: a directory path or ":memory:" (embedded), or "host:port" (remote).

    "grpc://host:port" and "grpcs://host:port" (TLS) are accepted for remote servers.
    """
    text = str(target)
    if isinstance(target, str) and _is_remote(text):
        from vecdb.client.remote import RemoteClient  # grpc only when needed

        return RemoteClient(text, api_key=api_key, tls=tls, timeout=timeout)
    from vecdb.client.local import LocalClient

    return LocalClient(text)


__all__ = ["Client", "connect"]
